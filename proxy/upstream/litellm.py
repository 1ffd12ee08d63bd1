"""Calls to large APIs through ``litellm.acompletion`` (imported on first use), for routes
(``litellm_routes``) and shadow comparisons; litellm's errors become proxy errors."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from proxy.errors import InvalidRequestError, UpstreamError, UpstreamTimeoutError
from proxy.observability.telemetry import Telemetry, record_usage
from proxy.settings import ProxySettings
from proxy.wire.chat import (
    ChatCompletion,
    Choice,
    CompletionTokensDetails,
    FinishReason,
    ResponseMessage,
    TtsReport,
    Usage,
)
from proxy.wire.json_types import JSONObject

__all__ = [
    "as_completion",
    "litellm_call",
    "litellm_chunks",
    "litellm_params",
    "load_litellm",
]

logger = logging.getLogger(__name__)


def as_completion(response: Any, tts: TtsReport) -> ChatCompletion:
    """A litellm ``ModelResponse`` as our ``ChatCompletion`` (first choice, text only)."""
    data = response.model_dump() if hasattr(response, "model_dump") else dict(response)
    choice = (data.get("choices") or [{}])[0]
    usage = data.get("usage") or {}
    details = usage.get("completion_tokens_details") or {}
    prompt, completion = (
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )
    text = (choice.get("message") or {}).get("content")
    finish: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
    return ChatCompletion(
        id=str(data.get("id") or "chatcmpl-litellm"),
        created=int(data.get("created") or 0),
        model=str(data.get("model") or ""),
        choices=[Choice(index=0, finish_reason=finish, message=ResponseMessage(content=text))],
        usage=Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            completion_tokens_details=CompletionTokensDetails(
                reasoning_tokens=int(details.get("reasoning_tokens") or 0)
            ),
        ),
        tts=tts,
    )


def litellm_params(settings: ProxySettings, request: JSONObject) -> JSONObject:
    """One chat call's parameters (no ``model``) for litellm, with the configured base URL, key
    and retries."""
    params = dict(request)
    if settings.litellm_api_base:
        params["api_base"] = settings.litellm_api_base
    if settings.litellm_api_key is not None:
        params["api_key"] = settings.litellm_api_key.get_secret_value()
    params.setdefault("num_retries", settings.policy.max_retries)
    params.setdefault("timeout", settings.policy.timeout_s)
    return params


async def load_litellm() -> Any:
    """litellm, imported in a worker thread: its first import takes seconds, and on the event
    loop it would stall every request in flight (stale keep-alive connections then fail)."""
    # Without this litellm fetches its price map from the network at import time.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # noqa: TID251
    try:
        litellm: Any = await asyncio.to_thread(importlib.import_module, "litellm")
    except ImportError as exc:
        raise InvalidRequestError(
            "large-API routes need the litellm extra: pip install 'tts-proxy[litellm]'",
            param="model",
        ) from exc
    litellm.suppress_debug_info = True  # its "Give Feedback" banner on stdout per error
    return litellm


async def litellm_call(route: str, params: JSONObject, telemetry: Telemetry) -> Any:
    """One ``litellm.acompletion(model=route, **params)``, in its own span; raises
    ``ProxyError``s only."""
    litellm = await load_litellm()
    try:
        with telemetry.baseline_span(route) as span:
            response = await litellm.acompletion(model=route, **params)
            if span is not None and hasattr(response, "model_dump"):
                record_usage(span, response.model_dump())
            return response
    except Exception as exc:
        raise _translate(litellm, route, exc) from exc


async def litellm_chunks(route: str, stream: Any) -> AsyncIterator[Any]:
    """A streamed litellm answer's chunks; a stream that breaks midway raises a ``ProxyError``.
    However it ends (in full, broken, or the client gone), the provider's stream is closed, so
    its connection goes back to the pool instead of waiting for the garbage collector."""
    litellm = await load_litellm()
    try:
        async for chunk in stream:
            yield chunk
    except Exception as exc:
        raise _translate(litellm, route, exc) from exc
    finally:
        closing = getattr(stream, "aclose", None)
        if closing is not None:
            await closing()


def _translate(litellm: Any, route: str, exc: Exception) -> Exception:
    """litellm's error classes as ours. The provider's own text stays in the debug log (it may
    quote the request); anything that is not a provider error is our bug and stays itself."""
    import openai  # litellm's errors derive from the openai SDK's

    if not isinstance(exc, openai.OpenAIError | TimeoutError):
        return exc
    logger.debug("large API %r: %s", route, exc)
    status = getattr(exc, "status_code", None)
    said = f"{type(exc).__name__}" + (f", HTTP {status}" if status else "")
    if isinstance(exc, litellm.Timeout | TimeoutError):
        return UpstreamTimeoutError(f"large API {route!r} timed out ({said})")
    if isinstance(exc, litellm.BadRequestError | litellm.UnprocessableEntityError):
        return InvalidRequestError(f"large API {route!r} rejected the request ({said})")
    return UpstreamError(f"large API {route!r} failed ({said})")
