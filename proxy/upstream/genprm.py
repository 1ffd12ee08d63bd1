"""The GenPRM conversation format for the verifier scorer (``PROXY_VERIFIER_FORMAT=genprm``).

GenPRM (Zhao et al. 2025, arXiv 2504.00891) is a generative PRM trained on one conversation
shape: a "math teacher" system turn, the question with the first paragraph (step) as the first
user turn, each later paragraph as its own user turn, and for every paragraph an assistant turn
that analyses it (``<analyze>Let's analyze the Paragraph k step by step: ...</analyze>``) and
ends in a judgement, ``<output>**Judgement**: $\\boxed{Yes}$</output>``. The step's score is
P(Yes) at the boxed verdict.

Here each new step costs two batched ``/v1/completions`` calls per search depth: the analyses
(greedy, up to ``analysis_tokens``, stopped at ``</analyze>``), then the one verdict token with
its top log-probs. Earlier steps' assistant turns are their own analyses when this request
scored them already, else a bare judgement of Yes (the search kept them). GenPRM's code-execution
stage (``<verify>`` with a Python block run between generations) is not run: executing model
output inside the proxy is not something a server should do on a request's behalf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from strategies import ScoreRequest, Step

__all__ = ["GENPRM_SYSTEM", "GenPrmTemplate", "analysis_start", "verdict_suffix"]

GENPRM_SYSTEM = (
    "You are a math teacher. Your task is to review and critique the paragraphs in solution "
    "step by step."
)
SLOTS = ("<<tts-genprm-u1>>", "<<tts-genprm-a1>>", "<<tts-genprm-u2>>")
_VERDICT = "</analyze>\n<output>\n**Judgement**: $\\boxed{"


def analysis_start(paragraph: int) -> str:
    """How the assistant's turn about paragraph ``paragraph`` (1-based) begins."""
    return f"<analyze>\nLet's analyze the Paragraph {paragraph} step by step: "


def verdict_suffix() -> str:
    """What follows an analysis so that the next token is the boxed verdict."""
    return _VERDICT


def judged(paragraph: int, analysis: str | None, is_yes: bool) -> str:
    """The whole assistant turn about an earlier paragraph."""
    verdict = "Yes" if is_yes else "No"
    body = analysis_start(paragraph) + analysis if analysis is not None else ""
    opening = body + "</analyze>\n" if analysis is not None else ""
    return f"{opening}<output>\n**Judgement**: $\\boxed{{{verdict}}}$\n</output>"


@dataclass(frozen=True, slots=True)
class GenPrmTemplate:
    """The judge's chat template cut at the turn boundaries, so prompts are string splices:
    ``head`` + user 1 + ``to_assistant`` + assistant 1 + ``to_user`` + user 2 + ... + ``tail``."""

    head: str
    to_assistant: str
    to_user: str
    tail: str

    @classmethod
    def from_rendered(cls, rendered: str) -> GenPrmTemplate:
        """From the rendering of [system, user SLOTS[0], assistant SLOTS[1], user SLOTS[2]]
        with the generation prompt; ValueError if a turn's text was not kept verbatim."""
        head, rest = _cut(rendered, SLOTS[0])
        to_assistant, rest = _cut(rest, SLOTS[1])
        to_user, tail = _cut(rest, SLOTS[2])
        return cls(head, to_assistant, to_user, tail)

    def prompt(
        self, problem: str, steps: Sequence[Step], index: int, earlier: Sequence[str]
    ) -> str:
        """The prompt asking about ``steps[index]``; ``earlier[i]`` is the assistant turn about
        ``steps[i]`` for every ``i < index``."""
        users = [step.text.strip() for step in steps[: index + 1]]
        users[0] = f"Question: {problem}\n\n{users[0]}"
        parts = [self.head]
        for i, user in enumerate(users):
            parts.append(user)
            if i < index:
                parts += [self.to_assistant, earlier[i], self.to_user]
        return "".join([*parts, self.tail, analysis_start(index + 1)])


def _cut(text: str, slot: str) -> tuple[str, str]:
    if text.count(slot) != 1:
        raise ValueError(f"the chat template did not keep {slot!r} verbatim")
    before, after = text.split(slot)
    return before, after


class AnalysisMemory:
    """The analyses and verdicts this request's judge already wrote, keyed by the steps up to
    and including the judged one, so a later depth's prompt carries them."""

    def __init__(self) -> None:
        self._turns: dict[tuple[str, ...], str] = {}

    def earlier(self, steps: Sequence[Step], index: int) -> list[str]:
        """The assistant turns about ``steps[:index]`` (a bare Yes where none was written)."""
        key = tuple(step.text for step in steps)
        return [self._turns.get(key[: i + 1]) or judged(i + 1, None, True) for i in range(index)]

    def keep(self, steps: Sequence[Step], index: int, analysis: str, score: float) -> None:
        key = tuple(step.text for step in steps[: index + 1])
        self._turns[key] = judged(index + 1, analysis, score >= 0.5)


def new_steps(requests: Sequence[ScoreRequest]) -> list[tuple[ScoreRequest, int]]:
    """Every (request, step index) to score, in the order the scores are returned."""
    return [(r, i) for r in requests for i in range(r.first_new, len(r.steps))]
