"""Requests that are not searched: plain pass-through to the policy server (strategy ``none``,
tools, structured output, images) and large-API routes through litellm (for A/B comparisons).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from proxy.control import Plan
from proxy.errors import ProxyError, UpstreamError
from proxy.large_api import litellm_call, litellm_params
from proxy.protocol import ChatCompletionRequest
from proxy.service import AppState
from proxy.streaming import DONE, sse

__all__ = ["litellm_completion", "open_policy_stream", "policy_completion"]

logger = logging.getLogger(__name__)


def _payload(request: ChatCompletionRequest, model: str, state: AppState) -> dict[str, Any]:
    payload = request.model_dump(exclude={"tts"}, exclude_none=True)
    payload["model"] = model
    if "seed" in payload and not state.settings.forward_seed:
        del payload["seed"]
    return payload


def _tts_note(plan: Plan, state: AppState) -> dict[str, Any]:
    ignored = ["seed"] if "seed" in plan.ignored_params else []
    if plan.compare:  # shadow comparisons are made for searched requests only
        ignored.append("compare")
    return {"strategy": "none", "reason": plan.passthrough_reason or plan.reason,
            "ignored_params": ignored}  # fmt: skip


async def policy_completion(
    state: AppState, request: ChatCompletionRequest, model: str, plan: Plan
) -> dict[str, Any]:
    """One non-streaming chat completion straight from a policy replica."""
    upstream = state.policy.pick()
    data = await upstream.post_json("/chat/completions", _payload(request, model, state))
    data["tts"] = _tts_note(plan, state)
    return data


@contextlib.asynccontextmanager
async def open_policy_stream(
    state: AppState, request: ChatCompletionRequest, model: str
) -> AsyncIterator[AsyncIterator[bytes]]:
    """Open the upstream stream (errors surface here, before our response starts)."""
    upstream = state.policy.pick()
    async with upstream.stream("/chat/completions", _payload(request, model, state)) as response:

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for line in response.aiter_lines():
                    yield (line + "\n").encode()
            except ProxyError as exc:
                yield sse(exc.body())
                yield DONE
            except Exception as exc:  # a task boundary: the upstream broke mid-stream
                logger.warning("pass-through stream broke: %r", exc)
                yield sse(UpstreamError(f"the policy server's stream broke: {exc!r}").body())
                yield DONE

        yield lines()


async def litellm_completion(state: AppState, route: str, request: ChatCompletionRequest) -> Any:
    """A completion from a large API through litellm (for A/B routes)."""
    return await litellm_call(route, litellm_params(state.settings, request))
