"""One planned search, whatever endpoint it came in on: a ``SearchJob`` that starts a shadow
comparison if asked, runs the search against the upstreams (replica choice, prompt rendering,
scorer choice, deadlines, search-library errors mapped to proxy errors) and builds the
``chat.completion`` that the chat, Responses and legacy-completions adapters each map to their
own wire shape.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

from opentelemetry.util.types import AttributeValue

from proxy.errors import (
    DeadlineExceededError,
    InvalidRequestError,
    ProxyError,
    UpstreamError,
    UpstreamTimeoutError,
)
from proxy.observability.metrics import Metrics, record_search
from proxy.observability.telemetry import Telemetry
from proxy.observability.trace_archive import TraceArchive
from proxy.observability.traces import TraceStore, trace_of
from proxy.search.plan import Plan, SearchRequest, config_error
from proxy.search.profiles import AutoRules, Profile
from proxy.search.report import SearchOutcome, build_completion, tts_extension
from proxy.settings import ProxySettings
from proxy.shadow.comparisons import Searched, Shadow, ShadowTicket
from proxy.upstream.client import Upstream
from proxy.upstream.policy import CallStats, PrmScorer, PromptRenderer, VllmPolicy
from proxy.upstream.replicas import PolicyPool
from proxy.upstream.verifier import VerifierScorer
from proxy.wire.chat import ChatCompletion
from proxy.wire.json_types import JSONObject
from proxy.wire.tts import TtsCompare
from strategies import (
    AnswerGrouper,
    ConfidenceScorer,
    ConfigError,
    NoCandidatesError,
    SearchError,
    SearchObserver,
    StepScorer,
    StrategyName,
    group_inline,
    search,
)

__all__ = ["PolicyPool", "SearchDeps", "SearchJob", "prepare_search", "run_search"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SearchDeps:
    """What a search needs from the service, built once in the lifespan (``SearchDeps`` adds the
    edge's own parts)."""

    settings: ProxySettings
    metrics: Metrics
    policy: PolicyPool
    prm: Upstream | None
    renderer: PromptRenderer
    rules: AutoRules
    shadow: Shadow
    traces: TraceStore
    telemetry: Telemetry
    archive: TraceArchive | None = None  # PROXY_TRACES__PERSIST
    verifier: Upstream | None = None  # PROXY_VERIFIER_URL; None: the policy serves as verifier
    answers: AnswerGrouper = group_inline  # the proxy's AnswerPool (worker processes)


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
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "tts.strategy": plan.strategy,
            "tts.budget": plan.config.budget,
        }
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
                span.set_attributes(
                    {
                        "gen_ai.usage.input_tokens": usage.prompt_tokens,
                        "gen_ai.usage.output_tokens": usage.completion_tokens,
                        "tts.method": outcome.result.strategy,
                        "tts.request_id": self.request_id,
                    }
                )
        total_s = time.perf_counter() - self.started
        compare = None
        if self.target is not None:
            compare = TtsCompare(model=self.target, status="recording" if ticket else "skipped")
        tts = tts_extension(plan, outcome, total_s=total_s, compare=compare)
        completion = build_completion(
            result=outcome.result,
            n=self.request.n,
            request_id=self.request_id,
            created=int(time.time()),
            model=model,
            tts=tts,
            stop=self.request.stop,
            cached_tokens=outcome.stats.cached_prompt_tokens,
        )
        _record(state, plan, completion, total_s, outcome.upstream_s)
        record_search(state.metrics, outcome.result)
        trace = trace_of(
            outcome.result,
            request_id=self.request_id,
            model=model,
            requested=plan.requested,
            budget=plan.config.budget,
            question=self.request.question,
            latency_s=total_s,
            has_text=state.settings.store_text,
            max_nodes=state.settings.traces.max_nodes,
        )
        state.traces.put(trace)
        if state.archive is not None:
            state.archive.save(trace)
        state.metrics.trace_store.set(len(state.traces))
        state.metrics.trace_store_bytes.set(state.traces.bytes)
        if ticket is not None:
            prompt = json.dumps([dict(m) for m in self.request.messages], ensure_ascii=False)
            state.shadow.finish(
                ticket,
                request_id=self.request_id,
                completion=completion,
                searched=Searched(plan.strategy, plan.config.budget, plan.reference),
                latency_s=total_s,
                prompt=prompt,
            )
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


def with_reasoning_prompt(
    messages: list[JSONObject], profile: Profile, settings: ProxySettings
) -> tuple[list[JSONObject], str | None]:
    """The family's reasoning prompt (as in the paper's runs) when the request has no system
    prompt of its own; returns the messages and the family name used (or None)."""
    family = profile.family
    if not settings.search.add_reasoning_prompt or family is None:
        return messages, None
    if any(m.get("role") in ("system", "developer") for m in messages):
        return messages, None
    if not family.system_prompt and not family.user_suffix:
        return messages, None
    out = [dict(m) for m in messages]
    if family.user_suffix:
        last_user = max(i for i, m in enumerate(out) if m.get("role") == "user")
        content = out[last_user].get("content")
        if isinstance(content, str):
            out[last_user]["content"] = content + family.user_suffix
    if family.system_prompt:
        out.insert(0, {"role": "system", "content": family.system_prompt})
    return out, family.name


async def run_search(
    state: SearchDeps,
    plan: Plan,
    request: SearchRequest,
    *,
    observer: SearchObserver | None = None,
) -> SearchOutcome:
    """Run ``plan`` (a search strategy) for ``request``; raises ``ProxyError``s only.

    A legacy prompt (``request.raw_prompt``) is continued as the client wrote it, without a
    chat template; otherwise the conversation is rendered with the model's own template.
    """
    if plan.strategy == "none" or plan.profile is None:  # pragma: no cover - routed elsewhere
        raise InvalidRequestError("pass-through requests are not searched")
    strategy: StrategyName = plan.strategy
    model, raw_prompt = plan.model, request.raw_prompt
    settings = state.settings
    stats = CallStats()
    messages, prompt_family = with_reasoning_prompt(
        [dict(m) for m in request.messages], plan.profile, settings
    )
    upstream = state.policy.pick()
    started = time.perf_counter()
    deadline: float | None = None
    try:
        async with asyncio.timeout(settings.request_timeout_s):
            if raw_prompt is None:
                render_started = time.perf_counter()
                key = json.dumps(messages, sort_keys=True)
                prompt, upstream = await state.policy.with_failover(
                    upstream, lambda u: state.renderer.render(u, model, messages, key)
                )
                stats.render_s = time.perf_counter() - render_started
            else:
                prompt = raw_prompt
            extra = dict(request.forwarded)
            if request.seed is not None and settings.forward_seed:
                extra["seed"] = request.seed
            policy = VllmPolicy(
                upstream,
                model,
                prompt,
                stats,
                extra,
                is_templated=raw_prompt is None,
                pool=state.policy,
                thinking_cap=plan.max_thinking_tokens,
            )
            scorer = _scorer(state, plan, stats, policy, model)
            deadline = _deadline(plan)
            result = await search(
                strategy,
                request.question,
                policy,
                scorer,
                plan.config,
                deadline=deadline,
                observer=observer,
                grouper=state.answers,
            )
    except TimeoutError as exc:
        raise UpstreamTimeoutError(
            f"the search did not finish in {settings.request_timeout_s:g} s "
            "(PROXY_REQUEST_TIMEOUT_S); set X-TTS-Timeout-Ms to get the best answer so far"
        ) from exc
    except NoCandidatesError as exc:  # the client's deadline or token cap, not the upstream's
        raise _nothing_generated(plan, deadline) from exc
    except SearchError as exc:
        raise UpstreamError(f"the policy server (or PRM server) broke its contract: {exc}") from exc
    except ConfigError as exc:  # e.g. the method auto chose does not suit the request's caps
        raise config_error(exc) from exc
    upstream_s = stats.policy_s + stats.prm_s + stats.render_s
    logger.debug("search %s done in %.3f s", strategy, time.perf_counter() - started)
    replica = state.policy.upstreams.index(policy.upstream)
    return SearchOutcome(result, stats, f"policy[{replica}]", upstream_s, prompt_family)


def _scorer(
    state: SearchDeps, plan: Plan, stats: CallStats, policy: VllmPolicy, model: str
) -> StepScorer | None:
    settings = state.settings
    if plan.scorer == "none":
        return None
    if plan.scorer == "prm" and state.prm is not None:
        return PrmScorer(state.prm, settings.prm_model, stats)
    if plan.scorer == "verifier":  # a served chat model: the policy's replica unless configured
        upstream = state.verifier or policy.upstream
        judge = settings.verifier_model or model
        return VerifierScorer(
            upstream,
            judge,
            state.renderer,
            stats,
            settings.verifier_top_logprobs,
            settings.verifier_format,
            settings.verifier_analysis_tokens,
            has_own_server=state.verifier is not None,
        )
    return ConfidenceScorer(window=settings.search.confidence_window)


def _nothing_generated(plan: Plan, deadline: float | None) -> ProxyError:
    """Why a search ended without one candidate: the request's deadline, or its token cap
    spent before any answer was finished (the client's 400, not a deadline)."""
    cap = plan.config.max_total_tokens
    is_late = deadline is not None and asyncio.get_running_loop().time() >= deadline
    if cap is not None and not is_late:
        return InvalidRequestError(
            f"max_total_tokens ({cap}) was spent before any answer was finished, so there is no "
            "best-so-far answer to return; raise it",
            param="max_total_tokens",
        )
    wait_ms = round((plan.timeout_s or 0) * 1000)
    return DeadlineExceededError(
        f"nothing was generated within this request's X-TTS-Timeout-Ms ({wait_ms} ms), so "
        "there is no best-so-far answer to return; raise it",
        param="timeout_ms",
    )


def _deadline(plan: Plan) -> float | None:
    if plan.timeout_s is None:
        return None
    return asyncio.get_running_loop().time() + plan.timeout_s
