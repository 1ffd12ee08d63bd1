"""Requests that are not searched, relayed to the policy server (strategy ``none``, tools,
structured output, images; on chat, Responses and legacy completions alike). Pass-through answers
carry a ``tts`` note too: on the body, or on the last event of a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

import httpx

from proxy.api.sse import DONE, sse
from proxy.errors import ProxyError, UpstreamError, UpstreamTimeoutError
from proxy.observability.metrics import RequestTally
from proxy.search.plan import Plan
from proxy.state import AppState
from proxy.upstream.client import Upstream
from proxy.wire.chat import TtsReport
from proxy.wire.json_types import JSONObject
from proxy.wire.text import upstream_json

__all__ = [
    "StreamEnd",
    "open_policy_stream",
    "policy_json",
    "route_note",
    "tts_note",
    "whole_events",
    "with_tts_note",
]

logger = logging.getLogger(__name__)


def tts_note(plan: Plan) -> JSONObject:
    """What a pass-through answer says about itself."""
    ignored = ["seed"] if "seed" in plan.ignored_params else []
    if plan.compare:  # shadow comparisons are made for searched requests only
        ignored.append("compare")
    return TtsReport(
        strategy="none",
        requested_strategy=plan.requested,
        reason=plan.reason,
        ignored_params=ignored,
    ).model_dump()


def route_note(plan: Plan) -> TtsReport:
    """What a large API's answer (``plan.route``, via litellm) says about itself."""
    return TtsReport(
        strategy="none",
        requested_strategy=plan.requested,
        reason=f"large-API route {plan.route!r} via litellm",
        ignored_params=["compare"] if plan.compare else [],  # comparisons: searches only
    )


async def policy_json(state: AppState, path: str, payload: JSONObject, plan: Plan) -> JSONObject:
    """One non-streaming answer straight from a policy replica, with the ``tts`` note."""
    data, _ = await state.policy.post_json(state.policy.pick(), path, payload)
    data["tts"] = tts_note(plan)
    return data


@contextlib.asynccontextmanager
async def open_policy_stream(
    state: AppState, path: str, payload: JSONObject, tally: RequestTally
) -> AsyncIterator[AsyncIterator[bytes]]:
    """Open the upstream stream (errors surface here, before our response starts; a failed
    replica hands over to another before any byte was sent)."""
    async with contextlib.AsyncExitStack() as stack:

        async def open_on(upstream: Upstream) -> httpx.Response:
            return await stack.enter_async_context(upstream.stream(path, payload))

        response, _ = await state.policy.with_failover(state.policy.pick(), open_on)

        async def lines() -> AsyncIterator[bytes]:
            # A total deadline over the whole relay, checked while waiting for each line (a
            # timer per line, not wait_for's task).
            limit_s = state.settings.policy.timeout_s
            deadline = asyncio.get_running_loop().time() + limit_s
            upstream_lines = response.aiter_lines().__aiter__()
            try:
                while True:
                    try:
                        async with asyncio.timeout_at(deadline):
                            line = await anext(upstream_lines)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        raise UpstreamTimeoutError(
                            f"the policy server's stream did not end in {limit_s:g} s "
                            "(PROXY_POLICY__TIMEOUT_S)"
                        ) from None
                    yield (line + "\n").encode()
            except Exception as exc:  # a task boundary: the upstream broke mid-stream
                error = (
                    exc
                    if isinstance(exc, ProxyError)
                    else UpstreamError(f"the policy server's stream broke ({type(exc).__name__})")
                )
                logger.warning("pass-through stream broke: %s", error.code)
                tally.error(error)
                yield sse(error.body())
                yield DONE

        yield lines()


async def with_tts_note(lines: AsyncIterator[bytes], note: JSONObject) -> AsyncIterator[bytes]:
    """Relay SSE lines unchanged, except that the last data event (before ``[DONE]``, or at the
    end of a stream without one) gains a ``tts`` field. Lines after a held event are held with it,
    so the framing is exactly the upstream's."""
    held: list[bytes] = []
    async for line in lines:
        is_done = line.startswith(b"data: [DONE]")
        if line.startswith(b"data: ") and not is_done:
            for kept in held:
                yield kept
            held = [line]
        elif is_done and held:
            for kept in [_attach(held[0], note), *held[1:]]:
                yield kept
            held = []
            yield line
        elif held:
            held.append(line)
        else:
            yield line
    if held:
        for kept in [_attach(held[0], note), *held[1:]]:
            yield kept


async def whole_events(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The relayed lines joined into their events, each sent in one write (an event ends at
    its blank line; a client dispatches nothing before it, so holding its lines costs no
    latency, where a write per line doubled the socket writes)."""
    held: list[bytes] = []
    async for line in lines:
        held.append(line)
        if line == b"\n" or line.endswith(b"\n\n"):
            yield b"".join(held)
            held.clear()
    if held:
        yield b"".join(held)


def _attach(line: bytes, note: JSONObject) -> bytes:
    try:
        data = upstream_json(line[len(b"data: ") :])
    except ValueError:
        return line
    if not isinstance(data, dict) or "error" in data:
        return line
    data["tts"] = note
    return f"data: {json.dumps(data, ensure_ascii=False)}\n".encode()


class StreamEnd:
    """Ends a relayed stream that the proxy must cut (the shutdown grace period ended) in the
    upstream's own framing: chat/completions get an error event and ``[DONE]``; the Responses
    API an ``error`` event numbered after the last one relayed."""

    def __init__(self, path: str) -> None:
        self.is_responses = path == "/responses"
        self.last_data = b""

    async def watch(self, lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for line in lines:
            if line.startswith(b"data: "):
                self.last_data = line
            yield line

    def fail(self, error: ProxyError) -> list[bytes]:
        if not self.is_responses:
            return [sse(error.body()), DONE]
        try:
            sequence = int(json.loads(self.last_data[6:]).get("sequence_number", -1)) + 1
        except (ValueError, AttributeError, TypeError):
            sequence = 0
        event = {
            "type": "error",
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "sequence_number": sequence,
        }
        return [f"event: error\ndata: {json.dumps(event)}\n\n".encode()]
