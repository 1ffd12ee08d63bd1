"""One searched request, whatever endpoint it came in on: profile the model, apply ``auto``'s
rules, start a shadow comparison if asked, run the search and build the ``chat.completion`` that
the chat, Responses and legacy-completions handlers each map to their own wire shape.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from proxy.observability.metrics import record_search
from proxy.observability.traces import trace_of
from proxy.search.plan import Plan
from proxy.search.profiles import Profile, apply_profile, profile_of
from proxy.search.report import build_completion, tts_extension
from proxy.search.run import SearchDeps, problem_text, run_search
from proxy.shadow.comparisons import Searched, ShadowTicket
from proxy.wire.chat import ChatCompletion, ChatCompletionRequest
from proxy.wire.tts import TtsCompare, TtsProfile

__all__ = ["SearchJob", "prepare_search"]


@dataclass(frozen=True, slots=True)
class SearchJob:
    """A planned search, ready to run once (``run``)."""

    state: SearchDeps
    chat: ChatCompletionRequest
    plan: Plan
    model: str
    profile: Profile
    request_id: str
    started: float
    target: str | None
    ticket: ShadowTicket | None
    raw_prompt: str | None = None  # legacy completions: the client's prompt text, not a chat

    async def run(self) -> ChatCompletion:
        state, plan, ticket = self.state, self.plan, self.ticket
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": self.model,
                      "tts.strategy": plan.strategy, "tts.budget": plan.config.budget}  # fmt: skip
        with state.telemetry.internal_span(f"chat {self.model}", **attributes) as span:
            observer = state.telemetry.search_observer()
            try:
                outcome = await run_search(
                    state, plan, self.chat, self.model, self.profile, raw_prompt=self.raw_prompt,
                    observer=observer,
                )  # fmt: skip
            except BaseException:
                if ticket is not None:
                    state.shadow.abandon(ticket)
                raise
            finally:
                if observer is not None:
                    observer.close()
            if span is not None:
                usage = outcome.result.usage
                span.set_attributes({
                    "gen_ai.usage.input_tokens": usage.prompt_tokens,
                    "gen_ai.usage.output_tokens": usage.completion_tokens,
                    "tts.method": outcome.result.strategy, "tts.request_id": self.request_id,
                })  # fmt: skip
        total_s = time.perf_counter() - self.started
        tts = tts_extension(plan, outcome, total_s=total_s, ignored=plan.ignored_params)
        profile = self.profile
        tts.profile = TtsProfile(
            size=profile.size, params_b=profile.params_b,
            family=profile.family.name if profile.family else None, scorer=profile.scorer,
        )  # fmt: skip
        if self.target is not None:
            status: Any = "recording" if ticket else "skipped"
            tts.compare = TtsCompare(model=self.target, status=status)
        completion = build_completion(
            result=outcome.result, n=self.chat.n, request_id=self.request_id,
            created=int(time.time()), model=self.model, tts=tts, stop=self.chat.stop,
            cached_tokens=outcome.stats.cached_prompt_tokens,
        )  # fmt: skip
        _record(state, plan, completion, total_s, outcome.upstream_s)
        record_search(state.metrics, outcome.result)
        trace = trace_of(
            outcome.result, request_id=self.request_id, model=self.model,
            requested=plan.requested, budget=plan.config.budget,
            question=problem_text(self.chat), latency_s=total_s,
            has_text=state.settings.store_text, max_nodes=state.settings.trace_max_nodes,
        )  # fmt: skip
        state.traces.put(trace)
        if state.archive is not None:
            state.archive.save(trace)
        state.metrics.trace_store.set(len(state.traces))
        state.metrics.trace_store_bytes.set(state.traces.bytes)
        if ticket is not None:
            prompt = json.dumps(
                [m.model_dump(exclude_none=True) for m in self.chat.messages], ensure_ascii=False
            )
            state.shadow.finish(
                ticket, request_id=self.request_id, completion=completion,
                searched=Searched(plan.strategy, plan.config.budget, plan.reference),
                latency_s=total_s, prompt=prompt,
            )  # fmt: skip
        return completion


def prepare_search(
    state: SearchDeps,
    chat: ChatCompletionRequest,
    plan: Plan,
    model: str,
    *,
    request_id: str,
    started: float,
    raw_prompt: str | None = None,
) -> SearchJob:
    """Fix the method (``auto``'s rules read the model's profile) and start a comparison."""
    profile = profile_of(model, plan.scorer, state.settings, state.rules)
    plan = apply_profile(plan, profile, state.rules, request_has_sampling=plan.has_request_sampling)
    seed = chat.seed if chat.seed is not None else search_seed(request_id)
    plan = dataclasses.replace(plan, config=dataclasses.replace(plan.config, seed=seed))
    target = state.shadow.target(plan.compare)
    ticket = state.shadow.start(target, chat) if target else None
    return SearchJob(state, chat, plan, model, profile, request_id, started, target, ticket,
                     raw_prompt)  # fmt: skip


def search_seed(request_id: str) -> int:
    """The seed of a search's own randomness when the request sets none: from its id, so the
    reported ``tts.seed`` replays it."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:4], "big")


def _record(
    state: SearchDeps, plan: Plan, completion: ChatCompletion, total_s: float, upstream_s: float
) -> None:
    m = state.metrics  # the request itself is counted once, by the request skeleton
    m.latency.labels(plan.strategy).observe(total_s)
    m.overhead.observe(max(total_s - upstream_s, 0.0))
    usage = completion.usage
    m.tokens.labels("prompt").inc(usage.prompt_tokens)
    m.tokens.labels("completion").inc(usage.completion_tokens)
    m.tokens.labels("reasoning").inc(usage.completion_tokens_details.reasoning_tokens)
    if completion.tts:
        m.tokens.labels("prm").inc(completion.tts.prm_tokens or 0)
