"""Calls to large APIs through ``litellm.acompletion`` (imported on first use), for routes
(``litellm_routes``) and shadow comparisons; litellm's errors become proxy errors."""

from __future__ import annotations

import asyncio
import importlib
import os
from typing import Any

from proxy.errors import InvalidRequestError, UpstreamError, UpstreamTimeoutError
from proxy.protocol import ChatCompletionRequest
from proxy.settings import ProxySettings

__all__ = ["litellm_call", "litellm_params", "load_litellm"]


def litellm_params(settings: ProxySettings, request: ChatCompletionRequest) -> dict[str, Any]:
    """The request's parameters for litellm, with the configured base URL, key and retries."""
    params = request.model_dump(exclude={"tts", "model"}, exclude_none=True)
    if settings.litellm_api_base:
        params["api_base"] = settings.litellm_api_base
    if settings.litellm_api_key is not None:
        params["api_key"] = settings.litellm_api_key.get_secret_value()
    params.setdefault("num_retries", settings.policy_max_retries)
    params.setdefault("timeout", settings.policy_timeout_s)
    return params


async def load_litellm() -> Any:
    """litellm, imported in a worker thread: its first import takes seconds, and on the event
    loop it would stall every request in flight (stale keep-alive connections then fail)."""
    # Without this litellm fetches its price map from the network at import time.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # noqa: TID251
    try:
        return await asyncio.to_thread(importlib.import_module, "litellm")
    except ImportError as exc:
        raise InvalidRequestError(
            "large-API routes need the litellm extra: pip install 'tts-proxy[litellm]'",
            param="model",
        ) from exc


async def litellm_call(route: str, params: dict[str, Any]) -> Any:
    """One ``litellm.acompletion(model=route, **params)``; raises ``ProxyError``s only."""
    litellm = await load_litellm()
    try:
        return await litellm.acompletion(model=route, **params)
    except Exception as exc:  # litellm's own error classes, mapped by their status
        status = getattr(exc, "status_code", 502)
        if status == 408 or "Timeout" in type(exc).__name__:
            raise UpstreamTimeoutError(f"large API {route!r} timed out: {exc}") from exc
        if status in (400, 422):
            raise InvalidRequestError(f"large API {route!r} rejected the request: {exc}") from exc
        raise UpstreamError(f"large API {route!r} failed: {exc}") from exc
