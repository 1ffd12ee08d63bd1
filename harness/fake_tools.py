"""The fake vLLM's chat answers when the request offers tools (as vLLM with a tool-call parser):
one call of the first tool offered, its arguments ``{"a": 2, "b": 2}``, streamed in two argument
fragments; usage on a last chunk when ``stream_options.include_usage`` asks for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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
