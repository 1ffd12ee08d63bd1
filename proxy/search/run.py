"""Running one planned search against the upstreams: replica choice, prompt rendering, scorer
choice, deadlines, and the mapping of search-library errors to proxy errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, get_args

from proxy.errors import (
    DeadlineExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    ProxyError,
    UpstreamError,
    UpstreamTimeoutError,
)
from proxy.observability.metrics import Metrics
from proxy.observability.telemetry import Telemetry
from proxy.observability.trace_archive import TraceArchive
from proxy.observability.traces import TraceStore
from proxy.search.plan import Plan, config_error
from proxy.search.profiles import AutoRules, Profile
from proxy.search.request import SearchRequest
from proxy.settings import ProxySettings, StrategyChoice
from proxy.shadow.comparisons import Shadow
from proxy.upstream.client import Upstream
from proxy.upstream.policy import CallStats, PrmScorer, PromptRenderer, VllmPolicy
from proxy.upstream.replicas import PolicyPool
from proxy.upstream.verifier import VerifierScorer
from strategies import (
    AnswerGrouper,
    ConfidenceScorer,
    ConfigError,
    NoCandidatesError,
    SearchError,
    SearchObserver,
    SearchResult,
    StepScorer,
    StrategyName,
    group_inline,
    search,
)

__all__ = [
    "PolicyPool", "SearchDeps", "SearchOutcome", "check_model", "model_not_found", "run_search",
]  # fmt: skip

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
    archive: TraceArchive | None = None  # PROXY_TRACE_PERSIST
    verifier: Upstream | None = None  # PROXY_VERIFIER_URL; None: the policy serves as verifier
    answers: AnswerGrouper = group_inline  # the proxy's AnswerPool (worker processes)


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    result: SearchResult
    stats: CallStats
    replica: str
    upstream_s: float
    reasoning_prompt: str | None = None


def with_reasoning_prompt(
    messages: list[dict[str, Any]], profile: Profile, settings: ProxySettings
) -> tuple[list[dict[str, Any]], str | None]:
    """The family's reasoning prompt (as in the paper's runs) when the request has no system
    prompt of its own; returns the messages and the family name used (or None)."""
    family = profile.family
    if not settings.add_reasoning_prompt or family is None:
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
    upstream = state.policy.pick()
    messages, prompt_family = with_reasoning_prompt(
        [dict(m) for m in request.messages], plan.profile, settings
    )
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
            extra = dict(plan.forwarded)
            if request.seed is not None and settings.forward_seed:
                extra["seed"] = request.seed
            policy = VllmPolicy(
                upstream, model, prompt, stats, extra, is_templated=raw_prompt is None,
                pool=state.policy,
            )  # fmt: skip
            scorer = _scorer(state, plan, stats, policy, model)
            deadline = _deadline(plan)
            result = await search(
                strategy, request.question, policy, scorer, plan.config, deadline=deadline,
                observer=observer, grouper=state.answers,
            )  # fmt: skip
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
            upstream, judge, state.renderer, stats, settings.verifier_top_logprobs,
            settings.verifier_format, settings.verifier_analysis_tokens,
        )  # fmt: skip
    return ConfidenceScorer(window=settings.confidence_window)


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


async def check_model(state: SearchDeps, model: str) -> str:
    """The policy model's name if ``model`` names it; 404 otherwise."""
    served = await state.policy.model()
    if model != served:
        raise model_not_found(state, served, model)
    return served


_ALIAS_LIKE = re.compile(r"^(?P<name>[a-z_]+?)(?:-(?P<budget>\d+))?/(?P<rest>.+)$")


def model_not_found(state: SearchDeps, served: str, model: str) -> ModelNotFoundError:
    """The 404 for ``model``: the known models, and when the name looks like a strategy alias
    (``foo-8/<model>``) whose strategy is unknown, the strategies there are. Model names with a
    ``/`` (``Qwen/Qwen2.5-7B-Instruct``) stay plain names."""
    known = [served, *state.settings.litellm_routes]
    message = f"model {model!r} is not served here; known models: {', '.join(known)}"
    match = _ALIAS_LIKE.match(model)
    if match and (match["budget"] is not None or match["rest"] in known):
        strategies = ", ".join(get_args(StrategyChoice))
        message += (
            f". {match['name']!r} is not a known strategy; an alias is "
            f"<strategy>[-<budget>]/<model> with a strategy among {strategies}"
        )
    return ModelNotFoundError(message, param="model")
