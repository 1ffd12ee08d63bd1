"""Where answers come from: any OpenAI-compatible endpoint through the OpenAI SDK (our proxy, with
the strategy and budget set per request by headers) or a large API through litellm.

Both retry 429 and 5xx answers a bounded number of times (the SDKs' own backoff); what still
fails raises ``ProviderError``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = [
    "Answer",
    "Provider",
    "ProviderError",
    "ProviderKind",
    "make_provider",
    "samples_of",
]

ProviderKind = Literal["openai", "litellm"]
# The proxy's decisions worth keeping per row (the rest of ``tts`` is per-request detail).
_KEPT = (
    "strategy",
    "requested_strategy",
    "reason",
    "budget",
    "budget_spent",
    "policy_calls",
    "scorer",
    "voting",
    "is_partial",
    "auto",
    "answers",
    "ignored_params",
    "deepconf",
    "particle_iterations",
)


class ProviderError(Exception):
    """A request that failed after the provider's retries."""


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    hidden_tokens: int
    tts: dict[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    kind: ProviderKind

    async def ask(
        self, messages: list[dict[str, str]], strategy: str, budget: int, max_tokens: int | None
    ) -> Answer: ...

    async def aclose(self) -> None: ...


def samples_of(trace: list[Any]) -> list[dict[str, Any]]:
    """The whole samples of a voting search's inline trace (``X-TTS-Trace: true``), compact:
    each final candidate's extracted answer, its score and its generated tokens. This is the
    sample bank ``tts-eval calibrate`` replays voting methods and stopping rules from."""
    return [
        {
            "answer": node.get("answer") or "",
            "score": node.get("score"),
            "tokens": node.get("tokens"),
        }
        for node in trace
        if isinstance(node, dict) and node.get("status") == "finished" and node.get("depth") == 0
    ]


def _usage(usage: Any) -> tuple[int, int, int]:
    if usage is None:
        return 0, 0, 0
    details = getattr(usage, "completion_tokens_details", None)
    hidden = getattr(details, "reasoning_tokens", None) or 0
    return int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0), int(hidden)


class OpenAIProvider:
    """The OpenAI SDK at ``endpoint``; ``X-TTS-Strategy``/``X-TTS-Budget`` steer our proxy."""

    kind: ProviderKind = "openai"

    def __init__(
        self,
        endpoint: str,
        model: str,
        api_key: str | None,
        retries: int,
        timeout_s: float,
        headers: Mapping[str, str],
        temperature: float | None = None,
    ) -> None:
        openai = importlib.import_module("openai")
        self._sampling = {"temperature": temperature} if temperature is not None else {}
        self._headers = dict(headers)
        self._errors = openai.OpenAIError
        self._client = openai.AsyncOpenAI(
            base_url=endpoint, api_key=api_key or "unused", max_retries=retries, timeout=timeout_s
        )
        self._model = model

    async def ask(
        self, messages: list[dict[str, str]], strategy: str, budget: int, max_tokens: int | None
    ) -> Answer:
        headers = {**self._headers, "X-TTS-Strategy": strategy}
        if strategy not in ("none", "cot"):
            headers["X-TTS-Budget"] = str(budget)
        extra: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}
        extra.update(self._sampling)
        try:
            completion = await self._client.chat.completions.create(
                model=self._model, messages=messages, extra_headers=headers, **extra
            )
        except self._errors as exc:
            raise ProviderError(f"{type(exc).__name__}: {exc}") from exc
        if not completion.choices:
            raise ProviderError("the endpoint returned no choices")
        prompt, completion_tokens, hidden = _usage(completion.usage)
        tts = (completion.model_extra or {}).get("tts") or {}
        kept = {k: tts[k] for k in _KEPT if k in tts} if isinstance(tts, dict) else {}
        if isinstance(tts, dict) and isinstance(tts.get("trace"), list):
            kept["samples"] = samples_of(tts["trace"])
        return Answer(
            text=completion.choices[0].message.content or "",
            prompt_tokens=prompt,
            completion_tokens=completion_tokens,
            hidden_tokens=hidden,
            tts=kept,
        )

    async def aclose(self) -> None:
        await self._client.close()


class LitellmProvider:
    """``litellm.acompletion`` (keys from the environment, as litellm reads them)."""

    kind: ProviderKind = "litellm"

    def __init__(
        self,
        endpoint: str | None,
        model: str,
        api_key: str | None,
        retries: int,
        timeout_s: float,
        headers: Mapping[str, str],
        temperature: float | None = None,
    ) -> None:
        self._sampling = {"temperature": temperature} if temperature is not None else {}
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # noqa: TID251
        self._litellm = importlib.import_module("litellm")
        self._model = model
        self._params: dict[str, Any] = {"num_retries": retries, "timeout": timeout_s}
        if endpoint:
            self._params["api_base"] = endpoint
        if api_key:
            self._params["api_key"] = api_key
        if headers:
            self._params["extra_headers"] = dict(headers)

    async def ask(
        self, messages: list[dict[str, str]], strategy: str, budget: int, max_tokens: int | None
    ) -> Answer:
        extra: dict[str, Any] = {"max_tokens": max_tokens} if max_tokens else {}
        extra.update(self._sampling)
        try:
            response = await self._litellm.acompletion(
                model=self._model, messages=messages, **self._params, **extra
            )
        except Exception as exc:  # litellm's many error classes share no useful base
            raise ProviderError(f"{type(exc).__name__}: {exc}") from exc
        prompt, completion_tokens, hidden = _usage(getattr(response, "usage", None))
        content = response.choices[0].message.content if response.choices else None
        return Answer(str(content or ""), prompt, completion_tokens, hidden)

    async def aclose(self) -> None:
        return None


def make_provider(
    kind: ProviderKind,
    endpoint: str | None,
    model: str,
    api_key: str | None,
    retries: int,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    temperature: float | None = None,
) -> Provider:
    """A provider; ``headers`` go with every request (e.g. ``X-TTS-Keep-Percent`` to the proxy)."""
    if kind == "litellm":
        return LitellmProvider(
            endpoint, model, api_key, retries, timeout_s, headers or {}, temperature
        )
    if not endpoint:
        raise ValueError("--provider openai needs --endpoint (e.g. http://127.0.0.1:8000/v1)")
    return OpenAIProvider(endpoint, model, api_key, retries, timeout_s, headers or {}, temperature)
