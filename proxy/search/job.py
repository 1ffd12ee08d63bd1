"""One request, whatever endpoint it came in on: its plan (``plan_request``: the model checked,
then ``resolve_plan`` once), and for a searched one a ``SearchJob`` that starts a shadow
comparison if asked, runs the search and builds the ``chat.completion`` that the chat, Responses
and legacy-completions adapters each map to their own wire shape.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from proxy.observability.metrics import record_search
from proxy.observability.traces import trace_of
from proxy.search.plan import Plan, resolve_plan, split_alias
from proxy.search.report import build_completion, tts_extension
from proxy.search.request import SearchRequest
from proxy.search.run import SearchDeps, check_model, run_search
from proxy.shadow.comparisons import Searched, ShadowTicket
from proxy.wire.chat import ChatCompletion
from proxy.wire.tts import TtsCompare

__all__ = ["SearchJob", "plan_request", "prepare_search"]


async def plan_request(
    deps: SearchDeps, request: SearchRequest, headers: Mapping[str, str], request_id: str
) -> Plan:
    """The request's final plan: a large-API route, or the policy's model checked by name."""
    model = split_alias(request.model)[0]
    is_routed = model in deps.settings.litellm_routes
    served = None if is_routed else await check_model(deps, model)
    return resolve_plan(
        request, headers, deps.settings, deps.rules, served=served, request_id=request_id
    )


@dataclass(frozen=True, slots=True)
class SearchJob:
    """A planned search, ready to run once (``run``)."""

    state: SearchDeps
    request: SearchRequest
    plan: Plan
    request_id: str
    started: float
    target: str | None
    ticket: ShadowTicket | None

    async def run(self) -> ChatCompletion:
        state, plan, ticket, model = self.state, self.plan, self.ticket, self.plan.model
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                      "tts.strategy": plan.strategy, "tts.budget": plan.config.budget}  # fmt: skip
        with state.telemetry.internal_span(f"chat {model}", **attributes) as span:
            observer = state.telemetry.search_observer()
            try:
                outcome = await run_search(state, plan, self.request, observer=observer)
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
        compare = None
        if self.target is not None:
            compare = TtsCompare(model=self.target, status="recording" if ticket else "skipped")
        tts = tts_extension(plan, outcome, total_s=total_s, compare=compare)
        completion = build_completion(
            result=outcome.result, n=self.request.n, request_id=self.request_id,
            created=int(time.time()), model=model, tts=tts, stop=self.request.stop,
            cached_tokens=outcome.stats.cached_prompt_tokens,
        )  # fmt: skip
        _record(state, plan, completion, total_s, outcome.upstream_s)
        record_search(state.metrics, outcome.result)
        trace = trace_of(
            outcome.result, request_id=self.request_id, model=model,
            requested=plan.requested, budget=plan.config.budget,
            question=self.request.question, latency_s=total_s,
            has_text=state.settings.store_text, max_nodes=state.settings.trace_max_nodes,
        )  # fmt: skip
        state.traces.put(trace)
        if state.archive is not None:
            state.archive.save(trace)
        state.metrics.trace_store.set(len(state.traces))
        state.metrics.trace_store_bytes.set(state.traces.bytes)
        if ticket is not None:
            prompt = json.dumps([dict(m) for m in self.request.messages], ensure_ascii=False)
            state.shadow.finish(
                ticket, request_id=self.request_id, completion=completion,
                searched=Searched(plan.strategy, plan.config.budget, plan.reference),
                latency_s=total_s, prompt=prompt,
            )  # fmt: skip
        return completion


def prepare_search(
    state: SearchDeps, request: SearchRequest, plan: Plan, *, request_id: str, started: float
) -> SearchJob:
    """A searched request ready to run, its shadow comparison started if asked."""
    target = state.shadow.target(plan.compare)
    ticket = state.shadow.start(target, request.chat_params()) if target else None
    return SearchJob(state, request, plan, request_id, started, target, ticket)


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
