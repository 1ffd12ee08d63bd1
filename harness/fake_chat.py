"""The fake vLLM's chat answers: a plain one ("plain answer from the policy"; with ``reasoning``
beside it when set, as vLLM's reasoning parser answers), and, when the request offers tools (as
vLLM with a tool-call parser), one call of the first tool offered, its arguments
``{"a": 2, "b": 2}``, streamed in two argument fragments; usage on a last chunk when
``stream_options.include_usage`` asks for it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

__all__ = ["ARGUMENTS", "tool_call_answer", "tool_call_events", "wants_tool_call"]

ARGUMENTS = {"a": 2, "b": 2}
_USAGE = {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}


def wants_tool_call(body: dict[str, Any]) -> bool:
    """Tools offered, not refused, and no tool's result in the conversation yet."""
    has_result = any(m.get("role") == "tool" for m in body.get("messages") or [])
    return bool(body.get("tools")) and body.get("tool_choice") != "none" and not has_result


def _call(body: dict[str, Any]) -> dict[str, Any]:
    name = body["tools"][0]["function"]["name"]
    return {"id": "chatcmpl-tool-1", "type": "function", "function": {"name": name}}


def tool_call_answer(body: dict[str, Any], model: str) -> dict[str, Any]:
    call = _call(body)
    call["function"]["arguments"] = json.dumps(ARGUMENTS)
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "usage": _USAGE,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
    }


def tool_call_events(body: dict[str, Any], model: str) -> Iterator[str]:
    call = _call(body) | {"index": 0}
    call["function"]["arguments"] = ""
    text = json.dumps(ARGUMENTS)
    middle = len(text) // 2
    deltas: list[dict[str, Any]] = [
        {"role": "assistant", "tool_calls": [call]},
        {"tool_calls": [{"index": 0, "function": {"arguments": text[:middle]}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": text[middle:]}}]},
    ]
    for k, delta in enumerate(deltas):
        finish = "tool_calls" if k == len(deltas) - 1 else None
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        yield _chunk(model, [choice])
    if (body.get("stream_options") or {}).get("include_usage"):
        yield _chunk(model, [], usage=_USAGE)
    yield "data: [DONE]\n\n"


def _chunk(model: str, choices: list[dict[str, Any]], **extra: Any) -> str:
    chunk = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 0, "model": model}
    return f"data: {json.dumps(chunk | {'choices': choices} | extra)}\n\n"


def plain_answer(body: dict[str, Any], model: str, reasoning: str | None) -> dict[str, Any]:
    n = body.get("n") or 1  # as vLLM: n choices in one answer
    message: dict[str, Any] = {"role": "assistant", "content": "plain answer from the policy"}
    if reasoning:
        message["reasoning"] = reasoning
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "usage": {"prompt_tokens": 7, "completion_tokens": 5 * n, "total_tokens": 7 + 5 * n},
        "choices": [{"index": i, "message": message, "finish_reason": "stop"} for i in range(n)],
    }


async def plain_events(
    model: str, reasoning: str | None, trickle_s: float, break_after: int | None
) -> AsyncIterator[str]:
    """The plain answer streamed in two pieces (or ``more`` for a long while, one piece per
    ``trickle_s``); the connection drops after ``break_after`` pieces if set."""
    pieces = ("plain ", "answer") if not trickle_s else ("more ",) * 10_000
    if reasoning:  # as vLLM's reasoning parser streams it: before the answer
        yield _chunk(
            model, [{"index": 0, "delta": {"reasoning": reasoning}, "finish_reason": None}]
        )
    for k, piece in enumerate(pieces):
        if k == break_after:  # the connection drops mid-stream
            raise ConnectionResetError("the fake vLLM broke its stream")
        if trickle_s:
            await asyncio.sleep(trickle_s)
        finish = "stop" if k == len(pieces) - 1 else None  # as vLLM: on the last
        yield _chunk(model, [{"index": 0, "delta": {"content": piece}, "finish_reason": finish}])
    yield "data: [DONE]\n\n"
