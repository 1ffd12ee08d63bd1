"""A step scorer that runs anywhere: a served chat model judges each new step ("is this step
correct?") and the step's score is P(yes) read from the top log-probs of the one token it
generates. The policy itself by default, or any OpenAI-compatible completions server by URL.

All pending steps of one search depth go in one ``/v1/completions`` call (a prompt per step,
``max_tokens`` 1, greedy). The chat template is rendered once per model (through the server's
``/tokenize`` + ``/detokenize``, cached) around a placeholder, so each prompt is a string splice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from proxy.clients import CallStats, PromptRenderer
from proxy.errors import UpstreamError
from proxy.upstream import Upstream
from strategies import ScoreBatch, ScoreRequest, Step

__all__ = ["VERIFIER_QUESTION", "VerifierScorer", "p_yes"]

VERIFIER_QUESTION = "Is the new step correct? Answer Yes or No."
_SYSTEM = (
    "You check one step of a solution to a math problem. Reply with one word: Yes if the new "
    "step is correct and follows from the problem and the steps before it, No otherwise."
)
_SLOT = "<<tts-verifier-slot>>"  # where the question goes in the rendered template
_YES, _NO = frozenset({"yes", "y"}), frozenset({"no", "n"})


def p_yes(top_logprobs: dict[str, float] | None) -> float:
    """P(yes) / (P(yes) + P(no)) over the top tokens (case and spaces ignored); 0.5 when the
    model put neither among its top tokens."""
    yes = no = 0.0
    for token, logprob in (top_logprobs or {}).items():
        word = token.strip().lower()
        if word in _YES:
            yes += math.exp(logprob)
        elif word in _NO:
            no += math.exp(logprob)
    return yes / (yes + no) if yes + no > 0 else 0.5


def question(problem: str, steps: Sequence[Step], index: int) -> str:
    """The user turn that asks about ``steps[index]`` given the steps before it."""
    before = "".join(step.text for step in steps[:index]).strip() or "(none yet)"
    return (
        f"Problem:\n{problem}\n\nSolution so far:\n{before}\n\n"
        f"New step:\n{steps[index].text.strip()}\n\n{VERIFIER_QUESTION}"
    )


class VerifierScorer:
    """``strategies.StepScorer`` over a chat model's ``/v1/completions``."""

    def __init__(
        self,
        upstream: Upstream,
        model: str,
        renderer: PromptRenderer,
        stats: CallStats,
        top_logprobs: int = 20,
    ) -> None:
        self._upstream = upstream
        self._model = model
        self._renderer = renderer
        self._stats = stats
        self._top = top_logprobs

    @property
    def name(self) -> str:
        return f"verifier:{self._model}"

    @property
    def needs_logprobs(self) -> bool:
        return False

    async def score(self, problem: str, requests: Sequence[ScoreRequest]) -> ScoreBatch:
        head, tail = await self._template()
        prompts = [
            head + question(problem, r.steps, i) + tail
            for r in requests
            for i in range(r.first_new, len(r.steps))
        ]
        payload: dict[str, Any] = {
            "model": self._model, "prompt": prompts, "max_tokens": 1, "temperature": 0.0,
            "logprobs": self._top, "add_special_tokens": False,
        }  # fmt: skip
        started = time.perf_counter()
        try:
            data = await self._upstream.post_json("/completions", payload)
        finally:
            self._stats.prm_s += time.perf_counter() - started
        try:
            return _parse(data, requests, len(prompts))
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            raise UpstreamError(
                f"the verifier's /v1/completions answer is malformed ({type(exc).__name__})"
            ) from exc

    async def _template(self) -> tuple[str, str]:
        messages = [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _SLOT}]
        started = time.perf_counter()
        try:
            rendered = await self._renderer.render(
                self._upstream, self._model, messages, "verifier-template"
            )
        finally:
            self._stats.render_s += time.perf_counter() - started
        parts = rendered.split(_SLOT)
        if len(parts) != 2:
            raise UpstreamError("the verifier's chat template did not keep the user turn's text")
        return parts[0], parts[1]


def _parse(data: dict[str, Any], requests: Sequence[ScoreRequest], count: int) -> ScoreBatch:
    choices = data["choices"]
    if not isinstance(choices, list) or len(choices) != count:
        raise UpstreamError(f"the verifier returned {len(choices)} choices for {count} prompts")
    by_index = sorted(choices, key=lambda c: int(c.get("index", 0)))
    scores = [p_yes(((c.get("logprobs") or {}).get("top_logprobs") or [None])[0]) for c in by_index]
    rows, at = [], 0
    for r in requests:
        width = len(r.steps) - r.first_new
        rows.append(tuple(scores[at : at + width]))
        at += width
    usage = data.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens", 0))
    return ScoreBatch(
        scores=tuple(rows), scored_tokens=prompt_tokens, chat_prompt_tokens=prompt_tokens,
        chat_completion_tokens=int(usage.get("completion_tokens", 0)),
    )  # fmt: skip
