"""Adapters that implement the search library's Protocols over HTTP: ``VllmPolicy`` (a vLLM
OpenAI-compatible server) and ``PrmScorer`` (our PRM server's ``/v1/score``).

Partial answers are continued with the model's own chat template: the conversation is rendered once
per request through vLLM's ``/tokenize`` + ``/detokenize``, then every depth sends one
``/v1/completions`` call whose prompt list holds one entry per live beam (``n`` samples each).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

from proxy.errors import UpstreamError
from proxy.upstream.client import Upstream
from proxy.upstream.replicas import PolicyPool
from proxy.wire.json_types import JSONObject, JSONValue
from proxy.wire.text import upstream_json
from strategies import (
    Finish,
    Generation,
    PolicyBatch,
    Sampling,
    ScoreBatch,
    ScoreRequest,
    Streamed,
    token_confidence,
)
from strategies.answers import THINK_CLOSE

__all__ = ["CallStats", "PrmScorer", "PromptRenderer", "VllmPolicy"]


@dataclass(slots=True)
class CallStats:
    """Per-request accounting of upstream time (for the latency split)."""

    policy_s: float = 0.0
    prm_s: float = 0.0
    render_s: float = 0.0
    cached_prompt_tokens: int | None = None  # None: the policy server reports no cache hits
    upstream_models: set[str] = field(default_factory=set)
    thinking_cut: int = 0  # samples whose thinking the cap closed
    thinking_cap_unused: bool = False  # a call the cap could not apply to (steps, streams)


class PromptRenderer:
    """Renders a conversation to the policy's prompt text with its own chat template, keeping
    the most recent renderings within a byte budget (key and prompt text counted)."""

    def __init__(self, max_bytes: int = 64 * 2**20) -> None:
        self._cache: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._max_bytes = max_bytes
        self.size_bytes = 0

    async def render(
        self, upstream: Upstream, model: str, messages: list[JSONObject], key: str
    ) -> str:
        cache_key = (upstream.config.base_url, model, key)
        if cache_key in self._cache:
            self._cache.move_to_end(cache_key)
            return self._cache[cache_key]
        continues = messages[-1].get("role") == "assistant"
        tokenized = await upstream.post_json(
            "//tokenize",
            {
                "model": model,
                "messages": messages,
                "add_generation_prompt": not continues,
                "continue_final_message": continues,
            },
        )
        tokens = tokenized.get("tokens")
        if not isinstance(tokens, list):
            raise UpstreamError("the policy server's /tokenize answer has no 'tokens' list")
        detok = await upstream.post_json("//detokenize", {"model": model, "tokens": tokens})
        prompt = detok.get("prompt")
        if not isinstance(prompt, str):
            raise UpstreamError("the policy server's /detokenize answer has no 'prompt' text")
        cost = _cost(cache_key, prompt)
        if cost <= self._max_bytes:
            self._cache[cache_key] = prompt
            self.size_bytes += cost
        while self.size_bytes > self._max_bytes:
            old_key, old_prompt = self._cache.popitem(last=False)
            self.size_bytes -= _cost(old_key, old_prompt)
        return prompt


def _cost(key: tuple[str, str, str], prompt: str) -> int:
    """Bytes an entry holds (UTF-8 lengths; Python's own overhead aside)."""
    return sum(len(part.encode()) for part in (*key, prompt))


class VllmPolicy:
    """``strategies.Policy`` over vLLM's ``/v1/completions``, bound to one rendered prompt."""

    def __init__(
        self,
        upstream: Upstream,
        model: str,
        prompt: str,
        stats: CallStats,
        extra: JSONObject | None = None,
        *,
        is_templated: bool = True,
        pool: PolicyPool | None = None,
        thinking_cap: int | None = None,
    ) -> None:
        self._thinking_cap = thinking_cap
        self._is_templated = is_templated
        self._pool = pool
        self._upstream = upstream
        self._model = model
        self._prompt = prompt
        self._stats = stats
        self._extra = extra or {}
        self._asked: dict[int, int] = {}  # calls made per prompt (by its hash), for seeds

    @property
    def upstream(self) -> Upstream:
        """The replica serving this request now."""
        return self._upstream

    def _payload(self, prompt: str | list[str], n: int, sampling: Sampling) -> JSONObject:
        """The ``/v1/completions`` body for ``sampling`` (one call, streamed or not)."""
        payload: JSONObject = {
            **self._extra,
            "model": self._model,
            "prompt": prompt,
            "n": n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            # The sampled token's log-prob (per-sample token counts and confidence), or the top k
            # for DeepConf's token confidence.
            "logprobs": sampling.top_logprobs,
            # A rendered chat template already holds BOS etc.; a client's raw prompt does not.
            "add_special_tokens": not self._is_templated,
        }
        if sampling.stop:
            payload["stop"] = list(sampling.stop)
            payload["include_stop_str_in_output"] = True
        seed = self._extra.get("seed")
        if isinstance(seed, int):
            # vLLM seeds each request's sampler, so calls with the same prompt and seed draw the
            # same samples (a vote's streams, best-of-N's parts, DVTS's first steps): the k-th
            # call with one prompt gets seed + k, and a seeded search still replays.
            key = hash(prompt if isinstance(prompt, str) else tuple(prompt))
            repeat = self._asked.get(key, 0)
            self._asked[key] = repeat + 1
            if repeat:
                payload["seed"] = (seed + repeat + 2**63) % 2**64 - 2**63
        return payload

    async def generate(self, prefixes: Sequence[str], n: int, sampling: Sampling) -> PolicyBatch:
        cap = self._thinking_cap
        if cap is not None and sampling.stop:  # a step: its thinking so far is not counted
            self._stats.thinking_cap_unused = True
        if cap is None or sampling.stop or cap >= sampling.max_tokens:
            return await self._generate([self._prompt + p for p in prefixes], n, sampling)
        return await self._generate_capped(prefixes, n, sampling, cap)

    async def _generate_capped(
        self, prefixes: Sequence[str], n: int, sampling: Sampling, cap: int
    ) -> PolicyBatch:
        """Budget forcing (s1): think for at most ``cap`` tokens (the call stops at
        ``</think>``); a sample still thinking then has its section closed; every sample that
        thought goes on to its answer in one more call, within ``max_tokens`` in all, which stops
        at a second ``</think>``."""
        thinking = dataclasses.replace(sampling, max_tokens=cap, stop=(THINK_CLOSE,))
        first = await self._generate([self._prompt + p for p in prefixes], n, thinking)
        texts: list[str] = []
        pending: list[tuple[int, int, Generation]] = []
        for i, group in enumerate(first.generations):
            for j, g in enumerate(group):
                if g.finish == Finish.LENGTH:  # still thinking at the cap: close it
                    self._stats.thinking_cut += 1
                    g = dataclasses.replace(g, text=g.text + _CLOSER)
                elif not g.text.endswith(THINK_CLOSE):
                    continue  # answered without thinking, or ended
                pending.append((i, j, g))
                texts.append(self._prompt + prefixes[i] + g.text)
        if not pending:
            return first
        # The section is closed: an answer that "closes" it again stops there (a model that does
        # not think, e.g., imitates the tag and would carry it into the content).
        rest = dataclasses.replace(
            sampling, max_tokens=sampling.max_tokens - cap, stop=(THINK_CLOSE,)
        )
        second = await self._generate(texts, 1, rest)
        groups = [list(group) for group in first.generations]
        for (i, j, g), (answer,) in zip(pending, second.generations, strict=True):
            groups[i][j] = _joined(g, answer)
        return PolicyBatch(
            generations=tuple(tuple(group) for group in groups),
            prompt_tokens=first.prompt_tokens + second.prompt_tokens,
            completion_tokens=first.completion_tokens + second.completion_tokens,
        )

    async def _generate(self, prompts: list[str], n: int, sampling: Sampling) -> PolicyBatch:
        payload = self._payload(prompts, n, sampling)
        started = time.perf_counter()
        try:
            if self._pool is None:
                data = await self._upstream.post_json("/completions", payload)
            else:  # a failed replica: the same call on another, which serves the rest
                data, self._upstream = await self._pool.post_json(
                    self._upstream, "/completions", payload
                )
        finally:
            self._stats.policy_s += time.perf_counter() - started
        with _malformed("/v1/completions answer"):
            batch = _parse_completions(data, len(prompts), n, sampling)
            details = (data.get("usage") or {}).get("prompt_tokens_details") or {}
            cached = details.get("cached_tokens")
        if isinstance(cached, int):
            self._stats.cached_prompt_tokens = (self._stats.cached_prompt_tokens or 0) + cached
        return batch

    async def stream(
        self, prefix: str, sampling: Sampling, keep_going: Callable[[Sequence[float]], bool]
    ) -> Streamed:
        """One sample streamed from ``/v1/completions``; closed (vLLM aborts it) as soon as
        ``keep_going`` says so. Usage comes with every chunk (``continuous_usage_stats``). A
        thinking cap does not apply here (DeepConf online)."""
        if self._thinking_cap is not None:
            self._stats.thinking_cap_unused = True
        payload = self._payload(self._prompt + prefix, 1, sampling) | {
            "logprobs": max(sampling.top_logprobs, 1),
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
        started = time.perf_counter()
        try:
            return await self._stream(payload, sampling, keep_going)
        finally:
            self._stats.policy_s += time.perf_counter() - started

    async def _stream(
        self,
        payload: JSONObject,
        sampling: Sampling,
        keep_going: Callable[[Sequence[float]], bool],
    ) -> Streamed:
        text: list[str] = []
        confidences: list[float] = []
        logprobs: list[float] = []
        ends: list[int] = []
        length = 0
        usage: JSONObject = {}
        finish_reason: str | None = None
        async with self._upstream.stream("/completions", payload) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                with _malformed("completions stream"):
                    event = cast("JSONObject", upstream_json(line[6:]))
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or []:
                        piece = str(choice.get("text") or "")
                        text.append(piece)
                        raw = choice.get("logprobs")
                        confidences += _confidences(raw, sampling.top_logprobs)
                        chunk = _token_logprobs(raw, len(piece))
                        logprobs += chunk[0]
                        ends += [length + end for end in chunk[1]]
                        length += len(piece)
                        finish_reason = choice.get("finish_reason") or finish_reason
                if finish_reason is None and not keep_going(confidences):
                    break  # leaving the block closes the stream: vLLM aborts the request
        with _malformed("completions stream"):
            sent = int(usage.get("completion_tokens", len(confidences)))
            prompt_tokens = int(usage.get("prompt_tokens", 0))
        if finish_reason is None:
            finish = Finish.STOPPED
        else:
            finish = _generation({"text": "", "finish_reason": finish_reason}, sampling).finish
        keep_ends = len(ends) == len(logprobs) and (sampling.want_logprobs or sampling.top_logprobs)
        generation = Generation(
            text="".join(text),
            finish=finish,
            completion_tokens=sent,
            token_logprobs=tuple(logprobs) if sampling.want_logprobs else (),
            token_ends=tuple(ends) if keep_ends else (),
            token_confidences=tuple(confidences),
        )
        return Streamed(generation, prompt_tokens)


_CLOSER = "\n" + THINK_CLOSE + "\n\n"  # what closes a thinking section cut at the cap


def _joined(thought: Generation, answer: Generation) -> Generation:
    """A sample's thinking and its answer, generated in two calls, as one generation."""
    shift = len(thought.text)
    return Generation(
        text=thought.text + answer.text,
        finish=answer.finish,
        completion_tokens=thought.completion_tokens + answer.completion_tokens,
        token_logprobs=thought.token_logprobs + answer.token_logprobs,
        token_ends=thought.token_ends + tuple(end + shift for end in answer.token_ends),
        token_confidences=thought.token_confidences + answer.token_confidences,
    )


@contextlib.contextmanager
def _malformed(what: str, server: str = "policy") -> Iterator[None]:
    """An upstream answer that breaks its contract (a field of the wrong type anywhere) is the
    upstream's fault: a 502, never the proxy's 500."""
    try:
        yield
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise UpstreamError(
            f"the {server} server's {what} is malformed ({type(exc).__name__})"
        ) from exc


def _parse_completions(data: JSONObject, prompts: int, n: int, sampling: Sampling) -> PolicyBatch:
    choices = data.get("choices")
    usage = data.get("usage") or {}
    if not isinstance(choices, list) or len(choices) != prompts * n:
        got = len(choices) if isinstance(choices, list) else 0
        raise UpstreamError(
            f"the policy server returned {got} choices where {prompts * n} were due"
        )
    groups: list[list[Generation]] = [[] for _ in range(prompts)]
    for position, choice in enumerate(sorted(choices, key=lambda c: int(c.get("index", 0)))):
        groups[position // n].append(_generation(choice, sampling))
    completion_tokens = int(usage.get("completion_tokens", 0))
    flat = [g for group in groups for g in group]
    if completion_tokens and not any(g.completion_tokens for g in flat):
        groups = _spread_usage(groups, completion_tokens)  # a server without logprobs
    return PolicyBatch(
        generations=tuple(tuple(group) for group in groups),
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=completion_tokens,
    )


def _spread_usage(groups: list[list[Generation]], total: int) -> list[list[Generation]]:
    count = sum(len(group) for group in groups)
    share, extra = divmod(total, count)
    out: list[list[Generation]] = []
    position = 0
    for group in groups:
        row = []
        for g in group:
            tokens = share + (1 if position < extra else 0)
            row.append(Generation(g.text, g.finish, tokens, g.token_logprobs, g.token_ends))
            position += 1
        out.append(row)
    return out


def _generation(choice: JSONObject, sampling: Sampling) -> Generation:
    text = str(choice.get("text") or "")
    finish_reason = choice.get("finish_reason")
    stop_reason = choice.get("stop_reason")
    if finish_reason == "length":
        finish = Finish.LENGTH
    elif sampling.stop and (stop_reason in sampling.stop or _ends_with_stop(text, sampling)):
        finish = Finish.STEP
    else:
        finish = Finish.EOS
    logprobs, ends = _token_logprobs(choice.get("logprobs"), len(text))
    confidences = _confidences(choice.get("logprobs"), sampling.top_logprobs)
    keep_ends = sampling.want_logprobs or bool(sampling.top_logprobs)
    return Generation(
        text=text,
        finish=finish,
        completion_tokens=len(logprobs),
        token_logprobs=logprobs if sampling.want_logprobs else (),
        token_ends=ends if keep_ends else (),
        token_confidences=confidences,
    )


def _confidences(raw: JSONValue, k: int) -> tuple[float, ...]:
    """DeepConf's token confidence per token from vLLM's ``top_logprobs`` (a dict per token;
    vLLM may add the sampled token as a k+1-th entry: the k highest count)."""
    if k <= 0 or not isinstance(raw, dict):
        return ()
    rows = raw.get("top_logprobs") or []
    return tuple(
        token_confidence(sorted((float(v) for v in row.values()), reverse=True)[:k])
        if isinstance(row, dict) and row
        else 0.0
        for row in rows
    )


def _ends_with_stop(text: str, sampling: Sampling) -> bool:
    # Servers without ``stop_reason`` (llama.cpp) still include the stop string when asked to.
    return any(text.endswith(stop) for stop in sampling.stop)


def _token_logprobs(raw: JSONValue, text_len: int) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Legacy completions logprobs -> (per-token log-probs, per-token end offsets)."""
    if not isinstance(raw, dict):
        return (), ()
    values = raw.get("token_logprobs") or []
    offsets = raw.get("text_offset") or []
    logprobs = tuple(float(v) if v is not None else 0.0 for v in values)
    if len(offsets) != len(logprobs) or not offsets:
        return logprobs, ()
    base = int(offsets[0])
    ends = [min(max(int(o) - base, 0), text_len) for o in offsets[1:]] + [text_len]
    for i in range(1, len(ends)):  # keep offsets monotone whatever the server's token strings
        ends[i] = max(ends[i], ends[i - 1])
    return logprobs, tuple(ends)


class PrmScorer:
    """``strategies.StepScorer`` over ``POST {prm_url}/v1/score``."""

    def __init__(self, upstream: Upstream, model: str | None, stats: CallStats) -> None:
        self._upstream = upstream
        self._model = model
        self._stats = stats

    @property
    def name(self) -> str:
        return f"prm:{self._model}" if self._model else "prm"

    @property
    def needs_logprobs(self) -> bool:
        return False

    @property
    def is_remote(self) -> bool:
        return True

    async def score(self, problem: str, requests: Sequence[ScoreRequest]) -> ScoreBatch:
        payload = {
            "model": self._model,
            "problem": problem,
            "candidates": [[step.text.strip() for step in r.steps] for r in requests],
        }
        started = time.perf_counter()
        try:
            data = await self._upstream.post_json("/score", payload)
        finally:
            self._stats.prm_s += time.perf_counter() - started
        with _malformed("/v1/score answer", server="PRM"):
            return self._parse(data, requests)

    def _parse(self, data: JSONObject, requests: Sequence[ScoreRequest]) -> ScoreBatch:
        scores = data.get("scores")
        if not isinstance(scores, list) or len(scores) != len(requests):
            raise UpstreamError("the PRM server returned a malformed 'scores' list")
        if isinstance(data.get("model"), str) and self._model is None:
            self._model = data["model"]
        rows = []
        for request, row in zip(requests, scores, strict=True):
            if not isinstance(row, list) or len(row) != len(request.steps):
                raise UpstreamError("the PRM server returned a score list of the wrong length")
            rows.append(tuple(float(v) for v in row[request.first_new :]))
        tokens = int((data.get("usage") or {}).get("prompt_tokens", 0))
        return ScoreBatch(scores=tuple(rows), scored_tokens=tokens)
