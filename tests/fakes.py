"""Scripted, call-recording fakes of the search library's collaborators.

``FakePolicy`` answers from a script ``{prefix: [continuation, ...]}``: the i-th time a prefix is
asked for within one call it takes the next unused continuations, so two subtrees with the same
prefix see different samples. A continuation ending in the delimiter stopped on it; one containing
``<len>`` was truncated; anything else ended on EOS. Asked for top log-probs, a word holding
``~`` has token confidence 1.0 (an unsure token), any other 5.0. ``stream`` serves one sample
word by word (the next continuation not yet served for that prefix; with or without
confidences, as vLLM streams) and stops where the caller says. ``FakeScorer`` reads a step's
score from a ``<0.73>`` tag in the step text.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from strategies import (
    Finish,
    Generation,
    PolicyBatch,
    Sampling,
    ScoreBatch,
    ScoreRequest,
    Streamed,
)

_SCORE = re.compile(r"<(\d(?:\.\d+)?)>")


@dataclass
class PolicyCall:
    prefixes: tuple[str, ...]
    n: int
    sampling: Sampling


@dataclass
class FakePolicy:
    script: dict[str, list[str]]
    delimiter: str = "\n\n"
    prompt_tokens_per_prefix: int = 10
    delay_s: float = 0.0
    logprob: float = math.log(0.5)
    persist_offsets: bool = False  # later calls continue down the script instead of restarting
    calls: list[PolicyCall] = field(default_factory=list)
    streams: list[tuple[int, bool]] = field(default_factory=list)  # (words sent, stopped early)
    _offsets: dict[str, int] = field(default_factory=dict)
    _served: dict[str, int] = field(default_factory=dict)  # samples of a prefix, all calls

    async def generate(self, prefixes: Sequence[str], n: int, sampling: Sampling) -> PolicyBatch:
        self.calls.append(PolicyCall(tuple(prefixes), n, sampling))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        taken: dict[str, int] = self._offsets if self.persist_offsets else {}
        groups = []
        completion = 0
        for prefix in prefixes:
            options = self.script[prefix]
            start = taken.get(prefix, 0)
            taken[prefix] = start + n
            self._served[prefix] = self._served.get(prefix, 0) + n
            texts = [options[(start + i) % len(options)] for i in range(n)]
            group = tuple(self._generation(text, sampling) for text in texts)
            completion += sum(g.completion_tokens for g in group)
            groups.append(group)
        return PolicyBatch(
            generations=tuple(groups),
            prompt_tokens=self.prompt_tokens_per_prefix * len(prefixes),
            completion_tokens=completion,
        )

    async def stream(
        self, prefix: str, sampling: Sampling, keep_going: Callable[[Sequence[float]], bool]
    ) -> Streamed:
        self.calls.append(PolicyCall((prefix,), 1, sampling))
        options = self.script[prefix]
        index = self._served.get(prefix, 0)
        self._served[prefix] = index + 1
        whole = self._generation(options[index % len(options)], sampling)
        words = re.findall(r"\S+\s*|\s+", whole.text)
        confidences: list[float] = []
        for sent in range(1, whole.completion_tokens + 1):
            confidences += whole.token_confidences[sent - 1 : sent]
            await asyncio.sleep(0)  # a chunk arrives
            if not keep_going(confidences):
                self.streams.append((sent, True))
                cut = Generation(
                    text="".join(words[:sent]),
                    finish=Finish.STOPPED,
                    completion_tokens=sent,
                    token_logprobs=whole.token_logprobs[:sent],
                    token_ends=whole.token_ends[:sent],
                    token_confidences=tuple(confidences),
                )
                return Streamed(cut, self.prompt_tokens_per_prefix)
        self.streams.append((whole.completion_tokens, False))
        return Streamed(whole, self.prompt_tokens_per_prefix)

    def _generation(self, text: str, sampling: Sampling) -> Generation:
        words = re.findall(r"\S+\s*|\s+", text)
        is_cut = len(words) > sampling.max_tokens  # as vLLM: cut at max_tokens (word = token)
        if is_cut:
            words = words[: sampling.max_tokens]
            text = "".join(words)
        if is_cut or "<len>" in text:
            finish = Finish.LENGTH
        elif sampling.stop and text.endswith(self.delimiter):
            finish = Finish.STEP
        else:
            finish = Finish.EOS
        ends = tuple(_running(len(w) for w in words))
        logprobs = tuple(self.logprob for _ in words) if sampling.want_logprobs else ()
        confidences = (
            tuple(1.0 if "~" in w else 5.0 for w in words) if sampling.top_logprobs else ()
        )
        return Generation(
            text=text,
            finish=finish,
            completion_tokens=len(words),
            token_logprobs=logprobs,
            token_ends=ends if sampling.want_logprobs or sampling.top_logprobs else (),
            token_confidences=confidences,
        )


def _running(lengths: Iterable[int]) -> list[int]:
    total = 0
    out = []
    for length in lengths:
        total += length
        out.append(total)
    return out


@dataclass
class FakeScorer:
    """Reads ``<score>`` tags; records every request; never re-scores what it is not asked to."""

    default: float = 0.5
    delay_s: float = 0.0
    by_text: dict[str, float] = field(default_factory=dict)  # exact step text -> score
    calls: list[list[ScoreRequest]] = field(default_factory=list)
    is_remote: bool = True  # as a PRM server

    @property
    def name(self) -> str:
        return "fake-prm"

    @property
    def needs_logprobs(self) -> bool:
        return False

    async def score(self, problem: str, requests: Sequence[ScoreRequest]) -> ScoreBatch:
        self.calls.append(list(requests))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        scores = tuple(tuple(self._one(s.text) for s in r.steps[r.first_new :]) for r in requests)
        return ScoreBatch(scores=scores, scored_tokens=sum(len(r.steps) for r in requests))

    def _one(self, text: str) -> float:
        if text.strip() in self.by_text:
            return self.by_text[text.strip()]
        found = _SCORE.findall(text)
        return float(found[-1]) if found else self.default

    @property
    def scored_step_texts(self) -> list[str]:
        return [s.text for call in self.calls for r in call for s in r.steps[r.first_new :]]
