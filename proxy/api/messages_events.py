"""The Messages API's event stream: a search's answer as events (``message_start``, each block's
``content_block_start`` / ``_delta`` / ``_stop``, ``message_delta``, ``message_stop``), a relayed
chat stream translated block by block (``thinking_delta``, ``text_delta``, ``input_json_delta``),
and ``error`` events for failures after the stream started.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator

from proxy.api.messages_mapping import message_object, stop_reason
from proxy.errors import ProxyError, UpstreamError
from proxy.wire.json_types import JSONObject, JSONValue

__all__ = ["PING", "StreamTranslator", "anthropic_event", "error_event", "search_events"]


def anthropic_event(payload: JSONObject) -> bytes:
    """One event of the Messages stream: ``event:`` named as its ``type``."""
    return f"event: {payload['type']}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


PING = anthropic_event({"type": "ping"})


def error_event(error: ProxyError) -> list[bytes]:
    """A failure after the stream started, as Anthropic's ``error`` event."""
    _, body = error.anthropic()
    return [anthropic_event(body)]


def _start(message_id: str, model: str) -> bytes:
    usage = {"input_tokens": 0, "output_tokens": 0}
    message = message_object(message_id, model, [], None, None, usage)
    return anthropic_event({"type": "message_start", "message": message})


def _end(message: JSONObject) -> Iterator[bytes]:
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    event = {"type": "message_delta", "delta": delta, "usage": message["usage"]}
    if message.get("tts") is not None:
        event["tts"] = message["tts"]
    yield anthropic_event(event)
    yield anthropic_event({"type": "message_stop"})


def search_events(
    message_id: str, model: str
) -> tuple[bytes, Callable[[JSONObject], Iterator[bytes]]]:
    """A search as Messages events: the opening ``message_start``, then, once finished,
    ``finish(message)``: each block (the thinking, if any, then the text) started, its text in
    one delta and stopped; the stop reason with the usage and the ``tts`` report;
    ``message_stop``."""

    def finish(message: JSONObject) -> Iterator[bytes]:
        for index, block in enumerate(message["content"]):
            kind = block["type"]
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            start = empty if kind == "thinking" else {"type": "text", "text": ""}
            yield anthropic_event(
                {"type": "content_block_start", "index": index, "content_block": start}
            )
            delta = (
                {"type": "thinking_delta", "thinking": block["thinking"]}
                if kind == "thinking"
                else {"type": "text_delta", "text": block["text"]}
            )
            yield anthropic_event({"type": "content_block_delta", "index": index, "delta": delta})
            yield anthropic_event({"type": "content_block_stop", "index": index})
        yield from _end(message)

    return _start(message_id, model), finish


class StreamTranslator:
    """A relayed chat stream (the policy's ``chat.completion.chunk`` events) as the Messages
    event stream, block by block: text deltas, then each tool call's ``input_json_delta``."""

    def __init__(self, message_id: str, model: str, stop: list[str] | None) -> None:
        self._id, self._model, self._stop = message_id, model, stop
        # ("thinking", -1), ("text", -1) or ("tool", its call index)
        self._block: tuple[str, int] | None = None
        self._index = -1
        self._finish: str | None = None
        self._matched: JSONValue = None
        self._usage = {"input_tokens": 0, "output_tokens": 0}
        self.tts: JSONObject | None = None  # the pass-through's note, on message_delta

    async def events(self, lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        yield _start(self._id, self._model)
        async for line in lines:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            try:
                chunk = json.loads(line[6:])
            except ValueError:
                continue
            if isinstance(chunk, dict) and "error" in chunk:  # relayed as our error event
                error = chunk["error"] if isinstance(chunk["error"], dict) else {}
                failure = UpstreamError(str(error.get("message", "the stream failed")))
                for event in error_event(failure):
                    yield event
                return
            for event in self._chunk(chunk):
                yield event
        for event in self._close():
            yield event
        reason, sequence = stop_reason(self._finish, "", self._stop, matched=self._matched)
        message: JSONObject = {
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": self._usage,
            "tts": self.tts,
        }
        for event in _end(message):
            yield event

    def _chunk(self, chunk: JSONObject) -> Iterator[bytes]:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = {
                "input_tokens": int(usage.get("prompt_tokens", 0)),
                "output_tokens": int(usage.get("completion_tokens", 0)),
            }
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            thinking = delta.get("reasoning") or delta.get("reasoning_content")
            if thinking:
                empty = {"type": "thinking", "thinking": "", "signature": ""}
                yield from self._open(("thinking", -1), empty)
                yield self._delta({"type": "thinking_delta", "thinking": str(thinking)})
            if delta.get("content"):
                yield from self._open(("text", -1), {"type": "text", "text": ""})
                text_delta = {"type": "text_delta", "text": str(delta["content"])}
                yield self._delta(text_delta)
            for call in delta.get("tool_calls") or []:
                yield from self._tool_delta(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                self._matched = choice.get("stop_reason")

    def _tool_delta(self, call: JSONObject) -> Iterator[bytes]:
        key = ("tool", int(call.get("index", 0)))
        function = call.get("function") or {}
        if self._block != key:
            block = {
                "type": "tool_use",
                "id": str(call.get("id") or ""),
                "name": str(function.get("name") or ""),
                "input": {},
            }
            yield from self._open(key, block)
        if function.get("arguments"):
            yield self._delta({"type": "input_json_delta", "partial_json": function["arguments"]})

    def _open(self, key: tuple[str, int], block: JSONObject) -> Iterator[bytes]:
        if self._block == key:
            return
        yield from self._close()
        self._index += 1
        self._block = key
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        yield anthropic_event(start)

    def _delta(self, delta: JSONObject) -> bytes:
        return anthropic_event(
            {"type": "content_block_delta", "index": self._index, "delta": delta}
        )

    def _close(self) -> Iterator[bytes]:
        if self._block is not None:
            yield anthropic_event({"type": "content_block_stop", "index": self._index})
            self._block = None
