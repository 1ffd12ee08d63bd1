"""Per-request search control: ``X-TTS-*`` headers > body ``tts`` > model alias > server default.

Turns one chat request into a frozen ``Plan`` (which method, which scorer, the ``SearchConfig``),
or raises ``InvalidRequestError`` naming the parameter. No I/O.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from proxy.errors import InvalidRequestError
from proxy.protocol import ChatCompletionRequest
from proxy.settings import ProxySettings, ScorerKind, StrategyChoice
from strategies import ScoringMode, SearchConfig, StrategyName, VotingMode, check

__all__ = ["Plan", "PlannedStrategy", "resolve_plan", "split_alias"]

PlannedStrategy = StrategyName | Literal["none"]

_ALIAS = re.compile(r"^(?P<strategy>[a-z_]+)(?:-(?P<budget>\d+))?/(?P<model>.+)$")
_FIELDS = ("strategy", "budget", "beam_width", "scoring", "voting", "scorer", "max_steps")
_EXTRA_FIELDS = ("timeout_ms", "trace", "compare", "reference")
_HEADER = {name: "x-tts-" + name.replace("_", "-") for name in (*_FIELDS, *_EXTRA_FIELDS)}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}
# Chat-only or per-token fields that a search cannot honour; reported back in ``tts``.
_NOT_FORWARDED = {
    "logprobs", "top_logprobs", "parallel_tool_calls", "functions", "function_call", "store",
    "metadata", "modalities", "audio", "prediction", "service_tier", "reasoning_effort",
    "web_search_options", "stream_options", "user", "logit_bias",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with one request."""

    strategy: PlannedStrategy
    requested: StrategyChoice
    reason: str
    model: str
    scorer: ScorerKind
    config: SearchConfig
    timeout_s: float | None
    enable_trace: bool
    passthrough_reason: str | None = None
    ignored_params: tuple[str, ...] = ()
    forwarded: dict[str, Any] = field(default_factory=dict)
    compare: str | None = None  # shadow this request with that baseline model (X-TTS-Compare)
    reference: str | None = None  # the known correct answer (X-TTS-Reference)


def split_alias(model: str) -> tuple[str, str | None, int | None]:
    """``"beam_search-16/qwen"`` -> ``("qwen", "beam_search", 16)``; other names pass unchanged."""
    match = _ALIAS.match(model)
    if match is None or match["strategy"] not in get_args(StrategyChoice):
        return model, None, None
    budget = int(match["budget"]) if match["budget"] else None
    return match["model"], match["strategy"], budget


def resolve_plan(
    request: ChatCompletionRequest, headers: Mapping[str, str], settings: ProxySettings
) -> Plan:
    """Merge the four sources of control and validate every value against the server's caps."""
    model, alias_strategy, alias_budget = split_alias(request.model)
    body = request.tts.model_dump(exclude_none=True) if request.tts else {}
    alias = {"strategy": alias_strategy, "budget": alias_budget}

    def pick(name: str) -> Any:
        header = headers.get(_HEADER[name])
        if header is not None:
            return header
        if name in body:
            return body[name]
        return alias.get(name)

    requested = _choice(pick("strategy"), "strategy", get_args(StrategyChoice))
    requested = requested or settings.default_strategy
    passthrough = _passthrough_reason(request)
    has_prm = settings.prm_url is not None
    strategy, reason = _strategy(requested, passthrough, has_prm, settings)
    scorer = _choice(pick("scorer"), "scorer", get_args(ScorerKind)) or settings.scorer_default
    if scorer == "prm" and not has_prm:
        raise InvalidRequestError("scorer 'prm' needs a PRM server (PROXY_PRM_URL)", param="scorer")
    enable_trace = _flag(pick("trace"), "trace")
    config = dataclasses.replace(_search_config(request, pick, settings), enable_trace=enable_trace)
    if strategy != "none" and strategy != "auto":  # auto's rules come once the model is known
        try:
            check(strategy, config, has_scorer=scorer != "none")
        except ValueError as exc:
            param = "scorer" if "scorer" in str(exc) else "budget"
            raise InvalidRequestError(str(exc), param=param) from exc
    timeout_ms = _integer(pick("timeout_ms"), "timeout_ms", 1, 24 * 3600 * 1000)
    ignored = tuple(sorted(k for k in (request.model_extra or {}) if k in _NOT_FORWARDED))
    if request.seed is not None and not settings.forward_seed:
        ignored = (*ignored, "seed")
    return Plan(
        strategy=strategy,
        requested=requested,
        reason=reason,
        model=model,
        scorer=scorer,
        config=config,
        timeout_s=timeout_ms / 1000 if timeout_ms is not None else None,
        enable_trace=enable_trace,
        passthrough_reason=passthrough,
        ignored_params=ignored,
        forwarded={k: v for k, v in (request.model_extra or {}).items() if k not in _NOT_FORWARDED},
        compare=_text_value(pick("compare")),
        reference=_text_value(pick("reference")),
    )


def _text_value(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _strategy(
    requested: StrategyChoice, passthrough: str | None, has_prm: bool, settings: ProxySettings
) -> tuple[PlannedStrategy, str]:
    if passthrough is not None:
        return "none", passthrough
    if requested == "none":
        return "none", "pass-through requested"
    if requested == "auto":
        return "auto", "auto: difficulty estimated online, method from the rules file"
    return requested, "requested"


def _passthrough_reason(request: ChatCompletionRequest) -> str | None:
    if request.tools or request.tool_choice not in (None, "none"):
        return "tools cannot be searched over: passed through unchanged"
    extra = request.model_extra or {}
    if "functions" in extra:
        return "functions cannot be searched over: passed through unchanged"
    if request.response_format and request.response_format.get("type") not in (None, "text"):
        return "response_format cannot be searched over: passed through unchanged"
    for message in request.messages:
        if isinstance(message.content, list) and any(
            not (isinstance(part, dict) and part.get("type") == "text") for part in message.content
        ):
            return "non-text content cannot be searched over: passed through unchanged"
    return None


def _search_config(
    request: ChatCompletionRequest, pick: Callable[[str], Any], settings: ProxySettings
) -> SearchConfig:
    budget = _integer(pick("budget"), "budget", 1, settings.max_budget) or settings.default_budget
    width = (
        _integer(pick("beam_width"), "beam_width", 1, settings.max_beam_width)
        or settings.default_beam_width
    )
    max_steps = (
        _integer(pick("max_steps"), "max_steps", 1, settings.max_max_steps)
        or settings.default_max_steps
    )
    scoring: ScoringMode = _choice(pick("scoring"), "scoring", get_args(ScoringMode)) or "last"
    voting: VotingMode | None = _choice(pick("voting"), "voting", get_args(VotingMode))
    cap = request.max_completion_tokens or request.max_tokens
    try:
        return _build_config(request, settings, budget, width, max_steps, scoring, voting, cap)
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from exc


def _build_config(
    request: ChatCompletionRequest,
    settings: ProxySettings,
    budget: int,
    width: int,
    max_steps: int,
    scoring: ScoringMode,
    voting: VotingMode | None,
    cap: int | None,
) -> SearchConfig:
    temperature = request.temperature
    return SearchConfig(
        budget=budget,
        beam_width=width,
        max_steps=max_steps,
        scoring=scoring,
        voting=voting,
        step_delimiter=settings.step_delimiter,
        answer_markers=tuple(settings.answer_markers),
        temperature=temperature if temperature is not None else settings.temperature,
        top_p=request.top_p if request.top_p is not None else settings.top_p,
        max_step_tokens=min(settings.max_step_tokens, cap or settings.max_step_tokens),
        max_answer_tokens=min(settings.max_answer_tokens, cap or settings.max_answer_tokens),
        top_candidates=settings.top_candidates_in_response,
    )


def _integer(value: Any, name: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise InvalidRequestError(
            f"{name} must be an integer in [{low}, {high}], got {value!r}", param=name
        )
    return number


def _choice(value: Any, name: str, allowed: tuple[str, ...]) -> Any:
    if value is None:
        return None
    text = str(value).strip().lower()
    if text not in allowed:
        raise InvalidRequestError(
            f"{name} must be one of {', '.join(allowed)}; got {value!r}", param=name
        )
    return text


def _flag(value: Any, name: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise InvalidRequestError(f"{name} must be true or false, got {value!r}", param=name)
