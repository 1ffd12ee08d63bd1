"""How each PRM family wants its input: token ids built in our code, plus the positions to read.

Formats follow the paper's released code and the model cards (see ``../shared/PRM-NOTES.md`` §1):

- ``qwen_prm`` (Qwen2.5-Math-PRM): chat template [system, user, assistant], steps joined and
  ended by ``<extra_0>``; read at every ``<extra_0>``.
- ``skywork`` (Skywork-o1-Open-PRM): ``bos + problem + "\\n"``, then each step (inner newlines as
  spaces) encoded alone plus one ``"\\n"`` token; read at those newline tokens.
- ``math_shepherd``: ``"{problem} {step1} ки\\n{step2} ки\\n..."``; read at every ``ки``.
- ``rlhflow`` (Llama-3.1 PRMs): multi-turn chat, user = problem + step 1, then each step, assistant
  ``"+"`` after each; read at the token before each assistant ``"+"``.

Steps are encoded segment by segment wherever the format allows, so a candidate's ids extend its
parent's ids exactly (what makes the step-score cache hit). Must not import ``proxy``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = ["FAMILIES", "Encoded", "Family", "FamilyName", "encode"]

FamilyName = Literal["qwen_prm", "skywork", "math_shepherd", "rlhflow"]
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_TAG = "<extra_0>"
SHEPHERD_TAG = "ки"
RLHFLOW_PLACEHOLDER = "<|reserved_special_token_0|>"
RLHFLOW_DATE = "26 Jul 2024"  # pinned: Llama-3.x templates otherwise embed today's date


class Tokenizer(Protocol):
    """The slice of a Hugging Face tokenizer that the families use."""

    bos_token: str | None

    def __call__(self, text: str, add_special_tokens: bool = ...) -> Any: ...

    def convert_tokens_to_ids(self, token: str) -> Any: ...

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Encoded:
    """A candidate as the model sees it: ids, one read position per step, and how many leading
    ids are the prompt (problem and template, the same for every candidate; 0: not known)."""

    ids: tuple[int, ...]
    read_positions: tuple[int, ...]
    prompt_len: int = 0


@dataclass(frozen=True, slots=True)
class Family:
    name: FamilyName
    head: Literal["two_label", "value", "plus_minus"]
    tags: tuple[str, ...]  # strings removed from step text before encoding


FAMILIES: dict[FamilyName, Family] = {
    "qwen_prm": Family("qwen_prm", "two_label", (QWEN_TAG,)),
    "skywork": Family("skywork", "value", ()),
    "math_shepherd": Family("math_shepherd", "plus_minus", (SHEPHERD_TAG,)),
    "rlhflow": Family("rlhflow", "plus_minus", (RLHFLOW_PLACEHOLDER,)),
}


def _ids(tok: Tokenizer, text: str, special: bool = False) -> list[int]:
    return list(tok(text, add_special_tokens=special)["input_ids"])


def _token_id(tok: Tokenizer, token: str) -> int:
    ids = _ids(tok, token)
    if len(ids) != 1:
        raise ValueError(f"the tokenizer does not have {token!r} as a single token")
    return ids[0]


def clean_step(family: Family, step: str) -> str:
    for tag in family.tags:
        step = step.replace(tag, " ")
    if family.name == "skywork":
        step = step.replace("\n", " ")
    return step.strip()


def encode(family: Family, tok: Tokenizer, problem: str, steps: list[str]) -> Encoded:
    """Token ids and read positions for ``problem`` followed by ``steps`` (already stripped)."""
    cleaned = [clean_step(family, s) for s in steps]
    if any(not s for s in cleaned):
        raise ValueError("a step is empty once the family's tags are removed")
    builders = {
        "qwen_prm": _qwen,
        "skywork": _skywork,
        "math_shepherd": _shepherd,
        "rlhflow": _rlhflow,
    }
    return builders[family.name](tok, problem, cleaned)


def _segments(prefix: list[int], segments: list[tuple[list[int], int]]) -> Encoded:
    """``prefix`` then each segment; a segment's read position is its index ``offset``."""
    ids = list(prefix)
    reads = []
    for segment, offset in segments:
        reads.append(len(ids) + offset)
        ids.extend(segment)
    return Encoded(tuple(ids), tuple(reads), len(prefix))


def _qwen(tok: Tokenizer, problem: str, steps: list[str]) -> Encoded:
    messages = [{"role": "system", "content": QWEN_SYSTEM}, {"role": "user", "content": problem}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    tag = _token_id(tok, QWEN_TAG)
    segments = []
    for step in steps:
        ids = [*_ids(tok, step), tag]
        segments.append((ids, len(ids) - 1))
    return _segments(_ids(tok, prompt), segments)


def _skywork(tok: Tokenizer, problem: str, steps: list[str]) -> Encoded:
    newline = _ids(tok, "\n")[-1]
    prefix = _ids(tok, (tok.bos_token or "") + problem + "\n")
    segments = []
    for step in steps:
        ids = [*_ids(tok, step), newline]
        segments.append((ids, len(ids) - 1))
    return _segments(prefix, segments)


def _shepherd(tok: Tokenizer, problem: str, steps: list[str]) -> Encoded:
    tag = _token_id(tok, SHEPHERD_TAG)
    segments = []
    for index, step in enumerate(steps):
        text = (" " if index == 0 else "") + step + " " + SHEPHERD_TAG + "\n"
        ids = _ids(tok, text)
        segments.append((ids, max(i for i, t in enumerate(ids) if t == tag)))
    return _segments(_ids(tok, problem, special=True), segments)


def _rlhflow(tok: Tokenizer, problem: str, steps: list[str]) -> Encoded:
    placeholder = _token_id(tok, RLHFLOW_PLACEHOLDER)
    plus = plus_minus_ids(tok)[0]
    conversation = []
    for index, step in enumerate(steps):
        content = f"{problem} {step}" if index == 0 else step
        conversation.append({"role": "user", "content": content})
        conversation.append({"role": "assistant", "content": RLHFLOW_PLACEHOLDER})
    rendered = tok.apply_chat_template(conversation, tokenize=False, date_string=RLHFLOW_DATE)
    ids = _ids(tok, rendered)
    reads = tuple(i - 1 for i, t in enumerate(ids) if t == placeholder)
    ids = [plus if t == placeholder else t for t in ids]
    return Encoded(tuple(ids), reads)


def plus_minus_ids(tok: Tokenizer) -> tuple[int, int]:
    """The ``+`` / ``-`` label tokens, as the reference code finds them (``encode("+ -")``)."""
    ids = _ids(tok, "+ -")
    if len(ids) == 2:
        return ids[0], ids[1]
    return _ids(tok, "+")[-1], _ids(tok, "-")[-1]
