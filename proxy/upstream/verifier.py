"""A step scorer that runs anywhere: a served chat model judges each new step ("is this step
correct?") and the step's score is P(yes) read from the top log-probs of the one token it
generates. The policy itself by default, or any OpenAI-compatible completions server by URL.

All pending steps of one search depth go in one ``/v1/completions`` call (a prompt per step,
``max_tokens`` 1, greedy). The chat template is rendered once per model (through the server's
``/tokenize`` + ``/detokenize``, cached) around a placeholder, so each prompt is a string splice.
The ``genprm`` format (``proxy.upstream.genprm``) asks in GenPRM's conversation shape instead and
lets the judge write an analysis before its verdict: two batched calls per depth.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Literal

from proxy.errors import UpstreamError
from proxy.upstream.client import Upstream
from proxy.upstream.genprm import (
    GENPRM_SYSTEM,
    SLOTS,
    AnalysisMemory,
    GenPrmTemplate,
    new_steps,
    verdict_suffix,
)
from proxy.upstream.policy import CallStats, PromptRenderer
from proxy.wire.json_types import JSONObject
from strategies import ScoreBatch, ScoreRequest, Step

__all__ = ["VERIFIER_QUESTION", "VerifierFormat", "VerifierScorer", "p_yes"]

VerifierFormat = Literal["judge", "genprm"]

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
    """``strategies.StepScorer`` over a chat model's ``/v1/completions``; one instance per
    request (the genprm format remembers the analyses it wrote for this request's steps)."""

    def __init__(
        self,
        upstream: Upstream,
        model: str,
        renderer: PromptRenderer,
        stats: CallStats,
        top_logprobs: int = 20,
        fmt: VerifierFormat = "judge",
        analysis_tokens: int = 256,
        *,
        has_own_server: bool = False,
    ) -> None:
        self._has_own_server = has_own_server
        self._upstream = upstream
        self._model = model
        self._renderer = renderer
        self._stats = stats
        self._top = top_logprobs
        self._format = fmt
        self._analysis_tokens = analysis_tokens
        self._memory = AnalysisMemory()

    @property
    def name(self) -> str:
        kind = "verifier" if self._format == "judge" else "verifier-genprm"
        return f"{kind}:{self._model}"

    @property
    def needs_logprobs(self) -> bool:
        return False

    @property
    def is_remote(self) -> bool:
        """Only on a server of its own (``PROXY_VERIFIER_URL``): on the policy's server its
        calls would take the batch slots of the samples still generating there."""
        return self._has_own_server

    async def score(self, problem: str, requests: Sequence[ScoreRequest]) -> ScoreBatch:
        if self._format == "genprm":
            return await self._score_genprm(problem, requests)
        head, tail = await self._template()
        prompts = [head + question(problem, r.steps, i) + tail for r, i in new_steps(requests)]
        data = await self._complete(self._verdict_payload(prompts))
        scores, prompt_tokens, completion_tokens = _verdicts(data, len(prompts))
        return _batch(requests, scores, prompt_tokens, completion_tokens)

    async def _score_genprm(self, problem: str, requests: Sequence[ScoreRequest]) -> ScoreBatch:
        template = await self._genprm_template()
        todo = new_steps(requests)
        prompts = [
            template.prompt(problem, r.steps, i, self._memory.earlier(r.steps, i)) for r, i in todo
        ]
        analyses, prompt_tokens, completion_tokens = [""] * len(prompts), 0, 0
        if self._analysis_tokens > 0:
            data = await self._complete(
                {
                    "model": self._model,
                    "prompt": prompts,
                    "max_tokens": self._analysis_tokens,
                    "temperature": 0.0,
                    "stop": ["</analyze>"],
                    "add_special_tokens": False,
                }
            )
            analyses = _texts(data, len(prompts))
            prompt_tokens, completion_tokens = _usage(data)
        verdict = verdict_suffix()
        data = await self._complete(
            self._verdict_payload([p + a + verdict for p, a in zip(prompts, analyses, strict=True)])
        )
        scores, more_prompt, more_completion = _verdicts(data, len(prompts))
        for (request, index), analysis, score in zip(todo, analyses, scores, strict=True):
            self._memory.keep(request.steps, index, analysis, score)
        return _batch(
            requests, scores, prompt_tokens + more_prompt, completion_tokens + more_completion
        )

    def _verdict_payload(self, prompts: list[str]) -> JSONObject:
        return {
            "model": self._model,
            "prompt": prompts,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": self._top,
            "add_special_tokens": False,
        }

    async def _complete(self, payload: JSONObject) -> JSONObject:
        started = time.perf_counter()
        try:
            return await self._upstream.post_json("/completions", payload)
        finally:
            self._stats.prm_s += time.perf_counter() - started

    async def _render(self, messages: list[JSONObject], key: str) -> str:
        started = time.perf_counter()
        try:
            return await self._renderer.render(self._upstream, self._model, messages, key)
        finally:
            self._stats.render_s += time.perf_counter() - started

    async def _template(self) -> tuple[str, str]:
        messages = [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _SLOT}]
        parts = (await self._render(messages, "verifier-template")).split(_SLOT)
        if len(parts) != 2:
            raise UpstreamError("the verifier's chat template did not keep the user turn's text")
        return parts[0], parts[1]

    async def _genprm_template(self) -> GenPrmTemplate:
        messages = [
            {"role": "system", "content": GENPRM_SYSTEM},
            {"role": "user", "content": SLOTS[0]},
            {"role": "assistant", "content": SLOTS[1]},
            {"role": "user", "content": SLOTS[2]},
        ]
        rendered = await self._render(messages, "verifier-genprm-template")
        try:
            return GenPrmTemplate.from_rendered(rendered)
        except ValueError as exc:
            raise UpstreamError(
                f"the verifier's chat template does not suit genprm: {exc}"
            ) from exc


def _malformed(exc: Exception) -> UpstreamError:
    return UpstreamError(
        f"the verifier's /v1/completions answer is malformed ({type(exc).__name__})"
    )


def _choices(data: JSONObject, count: int) -> list[JSONObject]:
    choices = data["choices"]
    if not isinstance(choices, list) or len(choices) != count:
        raise UpstreamError(f"the verifier returned {len(choices)} choices for {count} prompts")
    return sorted(choices, key=lambda c: int(c.get("index", 0)))


def _usage(data: JSONObject) -> tuple[int, int]:
    usage = data.get("usage") or {}
    return int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))


def _texts(data: JSONObject, count: int) -> list[str]:
    """The generated texts, one per prompt (the analyses)."""
    try:
        texts = [c["text"] for c in _choices(data, count)]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise _malformed(exc) from exc
    if not all(isinstance(t, str) for t in texts):
        raise UpstreamError("the verifier's /v1/completions answer has a non-text choice")
    return texts


def _verdicts(data: JSONObject, count: int) -> tuple[list[float], int, int]:
    """P(yes) per prompt, and the call's prompt and completion tokens."""
    try:
        scores = [
            p_yes(((c.get("logprobs") or {}).get("top_logprobs") or [None])[0])
            for c in _choices(data, count)
        ]
        prompt_tokens, completion_tokens = _usage(data)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise _malformed(exc) from exc
    return scores, prompt_tokens, completion_tokens


def _batch(
    requests: Sequence[ScoreRequest],
    scores: list[float],
    prompt_tokens: int,
    completion_tokens: int,
) -> ScoreBatch:
    rows, at = [], 0
    for r in requests:
        width = len(r.steps) - r.first_new
        rows.append(tuple(scores[at : at + width]))
        at += width
    return ScoreBatch(
        scores=tuple(rows),
        scored_tokens=prompt_tokens,
        chat_prompt_tokens=prompt_tokens,
        chat_completion_tokens=completion_tokens,
    )
