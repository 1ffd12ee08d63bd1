"""One request as the search layer sees it (``SearchRequest``), and its plan: ``X-TTS-*``
headers > body ``tts`` > model alias > server default.

Each endpoint's adapter (``proxy.api``) turns its own wire body into a ``SearchRequest`` once;
planning, the search, the trace and a shadow comparison read only that, never a wire model.
``plan_request`` turns it into its final, frozen ``Plan`` in one place: the alias, the model
checked against the served one (or a large-API route), the controls, the model's profile
(family sampling defaults, ``auto``'s rules), the seed, and one ``check`` of the method against
its settings; or raises ``InvalidRequestError`` (``ModelNotFoundError``) naming the parameter.
Its one I/O is the served model's name, asked through the function it is given.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, cast, get_args

from pydantic import ValidationError

from proxy.errors import InvalidRequestError, ModelNotFoundError
from proxy.search.profiles import AutoRules, Profile, auto_config, profile_of
from proxy.settings import ProxySettings, ScorerKind, SearchDefaults, StrategyChoice
from proxy.wire.json_types import JSONObject, JSONValue
from proxy.wire.tts import TtsOptions
from strategies import ConfigError, SearchConfig, StrategyName, check

__all__ = [
    "Plan",
    "PlannedStrategy",
    "SearchRequest",
    "aliased_model",
    "checked_model",
    "model_not_found",
    "plan_request",
    "resolve_plan",
    "search_seed",
    "split_alias",
]

PlannedStrategy = StrategyName | Literal["none"]

# Chat-only or per-token fields that a search cannot honour; reported back in ``tts``.
NOT_FORWARDED = frozenset(
    {
        "logprobs",
        "top_logprobs",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "store",
        "metadata",
        "modalities",
        "audio",
        "prediction",
        "service_tier",
        "reasoning_effort",
        "web_search_options",
        "stream_options",
        "user",
        "logit_bias",
    }
)


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """What a search reads from one request.

    ``messages`` are plain chat messages (the shape a chat template and a large API take);
    ``raw_prompt`` is a legacy prompt continued as written, without a template. ``tts`` holds
    the body's search controls (headers win over them). ``extra`` holds body fields outside the
    wire schema: forwarded to the policy server, or listed in ``tts.ignored_params``.
    ``passthrough_reason`` says why this request cannot be searched (tools, non-text input);
    ``default_strategy`` overrides the server's default when none is asked (a plain legacy
    prompt passes through). ``ignored`` names wire fields a search does not use.
    """

    model: str
    messages: tuple[Mapping[str, JSONValue], ...]
    tts: Mapping[str, JSONValue] = field(default_factory=dict)
    n: int = 1
    stop: str | tuple[str, ...] | None = None
    seed: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    extra: Mapping[str, JSONValue] = field(default_factory=dict)
    raw_prompt: str | None = None
    passthrough_reason: str | None = None
    default_strategy: tuple[str, str] | None = None  # (strategy, reason)
    ignored: tuple[str, ...] = ()
    # Read from the fields above once, at construction:
    question: str = field(init=False)  # what the scorer sees: the last user message's text
    forwarded: Mapping[str, JSONValue] = field(init=False)  # ``extra`` the policy server receives
    not_forwarded: tuple[str, ...] = field(init=False)  # ``extra`` names a search cannot honour

    def __post_init__(self) -> None:
        users = [m for m in self.messages if m.get("role") == "user"] or self.messages[-1:]
        question = _text(users[-1].get("content")) if users else ""
        forwarded = {k: v for k, v in self.extra.items() if k not in NOT_FORWARDED}
        not_forwarded = tuple(sorted(k for k in self.extra if k in NOT_FORWARDED))
        object.__setattr__(self, "question", question)
        object.__setattr__(self, "forwarded", forwarded)
        object.__setattr__(self, "not_forwarded", not_forwarded)

    def chat_params(self) -> JSONObject:
        """The request as one chat call's parameters, without ``model`` (a large API's, a
        comparison's baseline): the body's other fields included, as the client sent them."""
        params: JSONObject = dict(self.extra) | {"messages": [dict(m) for m in self.messages]}
        if self.n != 1:
            params["n"] = self.n
        for name in ("stop", "seed", "temperature", "top_p"):
            value = getattr(self, name)
            if value is not None:
                params[name] = list(value) if isinstance(value, tuple) else value
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        return params


def _text(content: JSONValue) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


_ALIAS = re.compile(r"^(?P<strategy>[a-z_]+)(?:-(?P<budget>\d+))?/(?P<model>.+)$")
_FIELDS = ("strategy", "budget", "beam_width", "scoring", "voting", "scorer", "max_steps")
_EXTRA_FIELDS = (
    "timeout_ms",
    "trace",
    "max_total_tokens",
    "max_generations",
    "keep_percent",
    "deepconf_mode",
    "warmup",
    "confidence_window",
    "particle_iterations",
    "max_thinking_tokens",
    "auto_mode",
    "compare",
    "reference",
)
_HEADER = {name: "x-tts-" + name.replace("_", "-") for name in (*_FIELDS, *_EXTRA_FIELDS)}
_FIELD_OF_HEADER = {header: name for name, header in _HEADER.items()}


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
    ignored_params: tuple[str, ...] = ()
    compare: str | None = None  # shadow this request with that baseline model (X-TTS-Compare)
    reference: str | None = None  # the known correct answer (X-TTS-Reference)
    temperature_note: str | None = None  # why the request's temperature was not used
    route: str | None = None  # a large-API route (litellm) answers instead of the policy
    profile: Profile | None = None  # the served model's size, family and scorer class
    max_thinking_tokens: int | None = None  # a reasoning model's thinking cap per sample


def split_alias(model: str) -> tuple[str, str | None, int | None]:
    """``"beam_search-16/qwen"`` -> ``("qwen", "beam_search", 16)``; other names pass unchanged."""
    match = _ALIAS.match(model)
    if match is None or match["strategy"] not in get_args(StrategyChoice):
        return model, None, None
    budget = int(match["budget"]) if match["budget"] else None
    return match["model"], match["strategy"], budget


def _options(
    request: SearchRequest, headers: Mapping[str, str], alias: Mapping[str, str | int | None]
) -> TtsOptions:
    """Headers > body ``tts`` > alias, validated in one place (``TtsOptions``)."""
    given: dict[str, str] = {}
    for key, value in headers.items():  # one pass (a lookup per name scans every header)
        name = _FIELD_OF_HEADER.get(key.lower())
        if name is not None and name not in given:  # the first of repeated headers
            given[name] = value
    merged = {k: v for k, v in alias.items() if v is not None} | dict(request.tts) | given
    try:
        return TtsOptions.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "tts"
        source = f" (header X-TTS-{name.replace('_', '-').title()})" if name in given else ""
        raise InvalidRequestError(f"{name}: {first['msg']}{source}", param=name) from exc


async def plan_request(
    request: SearchRequest,
    headers: Mapping[str, str],
    settings: ProxySettings,
    rules: AutoRules,
    *,
    served_model: Callable[[], Awaitable[str]],
    request_id: str,
) -> Plan:
    """The request's final plan: a large-API route, or the policy's model (``served_model``)
    checked by name (404 otherwise), after the model aliases (``PROXY_MODEL_ALIASES``)."""
    asked = request.model
    aliased = await aliased_model(asked, served_model, settings)
    if aliased != asked:
        request = dataclasses.replace(request, model=aliased)
    is_routed = split_alias(request.model)[0] in settings.litellm_routes
    try:
        served = None if is_routed else await checked_model(aliased, served_model, settings)
    except ModelNotFoundError as exc:
        if aliased != asked:
            exc.message += f" ({asked!r} is aliased to {aliased!r} by PROXY_MODEL_ALIASES)"
        raise
    return resolve_plan(request, headers, settings, rules, served=served, request_id=request_id)


async def aliased_model(
    model: str, served_model: Callable[[], Awaitable[str]], settings: ProxySettings
) -> str:
    """``model`` as ``PROXY_MODEL_ALIASES`` maps it (an exact name first, then the patterns in
    order; "" is the served model); unchanged when no alias applies or it names a large-API
    route."""
    aliases = settings.model_aliases
    if not aliases or model in settings.litellm_routes:
        return model
    target = aliases.get(model)
    if target is None:
        target = next((t for p, t in aliases.items() if fnmatch.fnmatchcase(model, p)), None)
    if target is None:
        return model
    return target or await served_model()


async def checked_model(
    model: str, served_model: Callable[[], Awaitable[str]], settings: ProxySettings
) -> str:
    """The policy's served name, if ``model`` (or the model of a strategy alias) names it; else
    the 404 that lists the known models."""
    served = await served_model()
    if split_alias(model)[0] != served:
        raise model_not_found(served, model, settings.litellm_routes)
    return served


_ALIAS_LIKE = re.compile(r"^(?P<name>[a-z_]+?)(?:-(?P<budget>\d+))?/(?P<rest>.+)$")


def model_not_found(served: str, model: str, routes: Iterable[str]) -> ModelNotFoundError:
    """The 404 for ``model``: the known models, and when the name looks like a strategy alias
    (``foo-8/<model>``) whose strategy is unknown, the strategies there are. Model names with a
    ``/`` (``Qwen/Qwen2.5-7B-Instruct``) stay plain names."""
    known = [served, *routes]
    message = f"model {model!r} is not served here; known models: {', '.join(known)}"
    match = _ALIAS_LIKE.match(model)
    is_strategy = match is not None and match["name"] in get_args(StrategyChoice)
    if match and not is_strategy and (match["budget"] is not None or match["rest"] in known):
        strategies = ", ".join(get_args(StrategyChoice))
        message += (
            f". {match['name']!r} is not a known strategy; an alias is "
            f"<strategy>[-<budget>]/<model> with a strategy among {strategies}"
        )
    return ModelNotFoundError(message, param="model")


def resolve_plan(
    request: SearchRequest,
    headers: Mapping[str, str],
    settings: ProxySettings,
    rules: AutoRules,
    *,
    served: str | None,
    request_id: str,
) -> Plan:
    """The request's final plan. ``served`` is the policy's model name (checked against the
    request's), or None when a large-API route answers instead (``settings.litellm_routes``)."""
    model, alias_strategy, alias_budget = split_alias(request.model)
    route = settings.litellm_routes.get(model) if served is None else None
    options = _options(request, headers, {"strategy": alias_strategy, "budget": alias_budget})
    default, default_reason = request.default_strategy or (settings.search.strategy, None)
    requested: StrategyChoice = options.strategy or cast(StrategyChoice, default)
    strategy, reason = _strategy(requested, request.passthrough_reason)
    if options.strategy is None and default_reason is not None:
        reason = default_reason
    strategy, reason, greedy_note = _greedy(request, strategy, reason, options.strategy is not None)
    # The default scorer: the configured one, else the PRM when one is configured.
    scorer = (
        options.scorer or settings.search.scorer or ("prm" if settings.prm_url else "confidence")
    )
    if scorer == "prm" and settings.prm_url is None:
        raise InvalidRequestError("scorer 'prm' needs a PRM server (PROXY_PRM_URL)", param="scorer")
    config = _search_config(
        request, options, settings.search, use_request_temperature=not greedy_note
    )
    is_search = strategy != "none"  # a pass-through has no profile and draws no seed
    profile = None
    if served is not None and is_search:
        profile = profile_of(served, scorer, settings, rules)
    if profile is not None:
        is_sampling_asked = (request.temperature is not None and not greedy_note) or (
            request.top_p is not None
        )
        config = _with_profile(config, strategy, profile, rules, is_sampling_asked)
        if config.auto is not None and options.auto_mode is not None:
            config = dataclasses.replace(
                config, auto=dataclasses.replace(config.auto, mode=options.auto_mode)
            )
    if is_search:
        seed = request.seed if request.seed is not None else search_seed(request_id)
        config = dataclasses.replace(config, seed=seed)
    if strategy != "none" and strategy != "auto":  # auto's pick is checked when it is made
        try:
            check(strategy, config, has_scorer=scorer != "none")
        except ConfigError as exc:
            raise config_error(exc) from exc
    return Plan(
        strategy=strategy,
        requested=requested,
        reason=reason,
        model=served or model,
        scorer=scorer,
        config=config,
        timeout_s=options.timeout_ms / 1000 if options.timeout_ms is not None else None,
        enable_trace=bool(options.trace),
        ignored_params=_ignored(request, settings, strategy, greedy_note),
        compare=options.compare,
        reference=options.reference,
        temperature_note=greedy_note,
        route=route,
        profile=profile,
        max_thinking_tokens=options.max_thinking_tokens,
    )


def _with_profile(
    config: SearchConfig,
    strategy: PlannedStrategy,
    profile: Profile,
    rules: AutoRules,
    is_sampling_asked: bool,
) -> SearchConfig:
    """The family's sampling defaults (unless the request set its own) and ``auto``'s rules."""
    family = profile.family
    if family is not None and not is_sampling_asked:
        temperature = family.temperature if family.temperature is not None else config.temperature
        top_p = family.top_p if family.top_p is not None else config.top_p
        config = dataclasses.replace(config, temperature=temperature, top_p=top_p)
    if strategy == "auto":
        config = dataclasses.replace(config, auto=auto_config(profile, rules))
    return config


def _ignored(
    request: SearchRequest, settings: ProxySettings, strategy: str, greedy_note: str | None
) -> tuple[str, ...]:
    """What the request set that is not honoured, for ``tts.ignored_params``."""
    ignored = request.not_forwarded
    if request.seed is not None and not settings.forward_seed:
        ignored = (*ignored, "seed")
    if greedy_note:
        ignored = (*ignored, "temperature")
    if strategy != "none":  # a pass-through relays the wire's own fields
        ignored = (*ignored, *request.ignored)
    return ignored


def search_seed(request_id: str) -> int:
    """The seed of a search's own randomness when the request sets none: from its id, so the
    reported ``tts.seed`` replays it."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:4], "big")


def _greedy(
    request: SearchRequest, strategy: PlannedStrategy, reason: str, is_asked: bool
) -> tuple[PlannedStrategy, str, str | None]:
    """``temperature: 0`` asks for one greedy answer. N greedy samples are N copies of it, so
    no search pays for them: without an explicit strategy the request gets ``cot`` at
    temperature 0; with one, the search runs at the search temperature (said in ``tts``)."""
    if request.temperature != 0 or strategy in ("none", "cot"):
        return strategy, reason, None
    if not is_asked:
        return "cot", "temperature 0 asks for one greedy answer: cot, no search", None
    note = (
        f"temperature 0 cannot be honoured by {strategy} (its samples would all be the same "
        "answer): the search ran at the server's search temperature"
    )
    return strategy, reason, note


_ASKED_NONE = "pass-through requested"


def _strategy(requested: StrategyChoice, passthrough: str | None) -> tuple[PlannedStrategy, str]:
    if passthrough is not None:
        return "none", passthrough
    if requested == "none":
        return "none", _ASKED_NONE
    if requested == "auto":
        return "auto", "auto: difficulty estimated online, method from the rules file"
    return requested, "requested"


def _search_config(
    request: SearchRequest,
    options: TtsOptions,
    defaults: SearchDefaults,
    *,
    use_request_temperature: bool,
) -> SearchConfig:
    budget = _capped(options.budget, "budget", defaults.max_budget) or defaults.budget
    width = (
        _capped(options.beam_width, "beam_width", defaults.max_beam_width) or defaults.beam_width
    )
    max_steps = (
        _capped(options.max_steps, "max_steps", defaults.max_max_steps) or defaults.max_steps
    )
    cap = request.max_tokens
    temperature = request.temperature if use_request_temperature else None
    try:
        config = _build_config(request, defaults, budget, width, max_steps, options, cap)
    except ConfigError as exc:
        raise config_error(exc) from exc
    if temperature is None:
        config = dataclasses.replace(config, temperature=defaults.temperature)
    return dataclasses.replace(config, enable_trace=bool(options.trace))


def _build_config(
    request: SearchRequest,
    defaults: SearchDefaults,
    budget: int,
    width: int,
    max_steps: int,
    options: TtsOptions,
    cap: int | None,
) -> SearchConfig:
    temperature = request.temperature
    return SearchConfig(
        budget=budget,
        beam_width=width,
        max_steps=max_steps,
        scoring=options.scoring or "last",
        voting=options.voting,
        step_delimiter=defaults.step_delimiter,
        answer_markers=tuple(defaults.answer_markers),
        temperature=temperature if temperature is not None else defaults.temperature,
        top_p=request.top_p if request.top_p is not None else defaults.top_p,
        max_step_tokens=min(defaults.max_step_tokens, cap or defaults.max_step_tokens),
        max_answer_tokens=min(defaults.max_answer_tokens, cap or defaults.max_answer_tokens),
        top_candidates=defaults.top_candidates_in_response,
        max_total_tokens=options.max_total_tokens,
        max_generations=options.max_generations,
        particle_iterations=options.particle_iterations or 1,
        top_logprobs=defaults.deepconf_top_logprobs,
        keep_percent=options.keep_percent or defaults.deepconf_keep_percent,
        deepconf_mode=options.deepconf_mode or defaults.deepconf_mode,
        warmup=options.warmup,
        confidence_window=options.confidence_window,
    )


def _capped(value: int | None, name: str, high: int) -> int | None:
    """``value`` within the server's cap for ``name`` (the type was checked by TtsOptions)."""
    if value is not None and value > high:
        raise InvalidRequestError(
            f"{name} must be an integer in [1, {high}] on this server, got {value}", param=name
        )
    return value


# SearchConfig fields that the request spells differently.
_PARAM_OF_FIELD = {"max_answer_tokens": "max_tokens", "max_step_tokens": "max_tokens"}


def config_error(exc: ConfigError) -> InvalidRequestError:
    """The 400 for a search setting that does not suit the method, naming the request field."""
    return InvalidRequestError(str(exc), param=_PARAM_OF_FIELD.get(exc.field, exc.field))
