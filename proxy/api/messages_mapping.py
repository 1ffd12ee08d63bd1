"""The Anthropic Messages API translated to and from the policy's chat calls.

In: ``system`` and ``messages`` (text, image, ``tool_use`` and ``tool_result`` blocks) become
chat messages; ``tools`` and ``tool_choice`` become chat tools. Out: a chat answer (a search's, or
the policy's own on pass-through) becomes a ``message`` object, and a stream of chat chunks becomes
the Messages event stream (``message_start``, ``content_block_*`` with ``text_delta`` and
``input_json_delta``, ``message_delta``, ``message_stop``; ``error`` events on failure).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from proxy.errors import InvalidRequestError, ProxyError, UpstreamError
from proxy.wire.anthropic import CountTokensRequest, InputMessage, MessagesRequest
from proxy.wire.chat import ChatCompletion

__all__ = [
    "Conversation",
    "StreamTranslator",
    "anthropic_event",
    "conversation",
    "error_event",
    "message_from_chat",
    "message_from_completion",
    "search_events",
]

# Fields of the Messages API the translation reads; any other is reported as ignored.
_READ = frozenset(
    {"model", "messages", "system", "max_tokens", "stop_sequences", "stream", "temperature"}
    | {"top_k", "top_p", "tools", "tool_choice", "tts"}
)
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


@dataclass(slots=True)
class Conversation:
    """A Messages request as chat: its messages, tools, and why it cannot be searched."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    passthrough_reason: str | None = None
    ignored: list[str] = field(default_factory=list)

    def chat_fields(self) -> dict[str, Any]:
        """The chat body's ``messages`` and tool fields."""
        out: dict[str, Any] = {"messages": self.messages}
        if self.tools:
            out["tools"] = self.tools
        if self.tool_choice is not None:
            out["tool_choice"] = self.tool_choice
        if self.parallel_tool_calls is not None:
            out["parallel_tool_calls"] = self.parallel_tool_calls
        return out


def conversation(body: MessagesRequest | CountTokensRequest) -> Conversation:
    """``body`` as chat; a 400 naming the block for what cannot be translated."""
    out = Conversation(messages=[])
    if body.system is not None:
        out.messages.append({"role": "system", "content": _system_text(body.system, out)})
    for i, message in enumerate(body.messages):
        out.messages += _chat_messages(message, f"messages.{i}", out)
    if body.tools:
        out.tools = [_tool(tool, f"tools.{i}") for i, tool in enumerate(body.tools)]
    if body.tool_choice is not None:
        out.tool_choice, out.parallel_tool_calls = _tool_choice(body.tool_choice)
    if out.tools or out.tool_choice not in (None, "none"):
        out.passthrough_reason = "tools cannot be searched over: passed through unchanged"
    if body.thinking is not None:
        out.ignored.append("thinking")
    extra = body.model_extra or {}
    out.ignored += sorted(name for name in extra if name not in _READ)
    if isinstance(body, MessagesRequest) and body.metadata is not None:
        out.ignored.append("metadata")
    return out


def _system_text(system: str | list[dict[str, Any]], out: Conversation) -> str:
    if isinstance(system, str):
        return system
    texts = []
    for i, block in enumerate(system):
        if block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise InvalidRequestError(
                f"system.{i}: the system prompt takes text blocks only", param=f"system.{i}"
            )
        _note_cache_control(block, out)
        texts.append(block["text"])
    return "\n\n".join(texts)


def _note_cache_control(block: dict[str, Any], out: Conversation) -> None:
    if "cache_control" in block and "cache_control" not in out.ignored:
        out.ignored.append("cache_control")  # vLLM caches prefixes by itself


def _chat_messages(message: InputMessage, where: str, out: Conversation) -> list[dict[str, Any]]:
    """One Messages turn as chat messages: tool results become ``tool`` messages (before the
    turn's text), ``tool_use`` blocks the assistant's ``tool_calls``."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    turn = _Turn()
    for j, block in enumerate(message.content):
        _note_cache_control(block, out)
        turn.add(block, message.role, f"{where}.content.{j}", out)
    if turn.tool_calls or turn.results:
        out.passthrough_reason = "tools cannot be searched over: passed through unchanged"
    chat: list[dict[str, Any]] = list(turn.results)
    content = _content(turn.parts)
    if message.role == "assistant" and turn.tool_calls:
        chat.append({"role": "assistant", "content": content, "tool_calls": turn.tool_calls})
    elif content is not None or not turn.results:
        chat.append({"role": message.role, "content": content if content is not None else ""})
    return chat


@dataclass(slots=True)
class _Turn:
    """One turn's blocks, sorted by what they become in chat."""

    parts: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)

    def add(self, block: dict[str, Any], role: str, at: str, out: Conversation) -> None:
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            self.parts.append({"type": "text", "text": block["text"]})
        elif kind == "image" and role == "user":
            self.parts.append({"type": "image_url", "image_url": {"url": _image_url(block, at)}})
            out.passthrough_reason = (
                out.passthrough_reason
                or "non-text content cannot be searched over: passed through unchanged"
            )
        elif kind == "tool_use" and role == "assistant":
            self.tool_calls.append(_tool_call(block, at))
        elif kind == "tool_result" and role == "user":
            self.results.append(_tool_result(block, at))
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            if "thinking blocks" not in out.ignored:
                out.ignored.append("thinking blocks")  # earlier turns' reasoning: not re-sent
        else:
            raise InvalidRequestError(
                f"{at}: a {kind!r} block is not supported in a {role} turn here "
                "(text, image, tool_use and tool_result blocks are)",
                param=at,
            )


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
    """Text parts as one string (what every chat template takes); parts with an image as a
    list; None when there are none."""
    if not parts:
        return None
    if all(part["type"] == "text" for part in parts):
        return "\n\n".join(part["text"] for part in parts)
    return parts


def _image_url(block: dict[str, Any], at: str) -> str:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        if isinstance(media, str) and isinstance(data, str):
            return f"data:{media};base64,{data}"
    if (
        isinstance(source, dict)
        and source.get("type") == "url"
        and isinstance(source.get("url"), str)
    ):
        return str(source["url"])
    raise InvalidRequestError(
        f"{at}.source: an image needs a base64 or url source", param=f"{at}.source"
    )


def _tool_call(block: dict[str, Any], at: str) -> dict[str, Any]:
    name, call_id, arguments = block.get("name"), block.get("id"), block.get("input", {})
    if not isinstance(name, str) or not isinstance(call_id, str) or not isinstance(arguments, dict):
        raise InvalidRequestError(
            f"{at}: a tool_use block needs an id, a name and an input object", param=at
        )
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


def _tool_result(block: dict[str, Any], at: str) -> dict[str, Any]:
    call_id, content = block.get("tool_use_id"), block.get("content", "")
    if not isinstance(call_id, str):
        raise InvalidRequestError(f"{at}: a tool_result block needs a tool_use_id", param=at)
    if isinstance(content, list):
        texts = []
        for k, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise InvalidRequestError(
                    f"{at}.content.{k}: a tool result takes text blocks only here",
                    param=f"{at}.content.{k}",
                )
            texts.append(str(part.get("text", "")))
        content = "\n\n".join(texts)
    if not isinstance(content, str):
        raise InvalidRequestError(f"{at}.content: text or text blocks", param=f"{at}.content")
    if block.get("is_error"):
        content = f"Error: {content}"
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def _tool(tool: dict[str, Any], at: str) -> dict[str, Any]:
    kind = tool.get("type", "custom")
    if kind != "custom":
        raise InvalidRequestError(
            f"{at}.type: server tool {kind!r} is not available here; define the tool with a "
            "name and an input_schema",
            param=f"{at}.type",
        )
    name, schema = tool.get("name"), tool.get("input_schema")
    if not isinstance(name, str) or not isinstance(schema, dict):
        raise InvalidRequestError(f"{at}: a tool needs a name and an input_schema", param=at)
    function: dict[str, Any] = {"name": name, "parameters": schema}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: dict[str, Any]) -> tuple[str | dict[str, Any], bool | None]:
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    if kind in ("auto", "none"):
        return str(kind), parallel
    if kind == "any":
        return "required", parallel
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    raise InvalidRequestError(
        "tool_choice: type auto, any, none, or tool with a name", param="tool_choice"
    )


def message_from_completion(
    completion: ChatCompletion, message_id: str, stop: list[str] | None
) -> dict[str, Any]:
    """A finished search as a ``message`` (every generated token of the search counted)."""
    choice = completion.choices[0]
    text = choice.message.content or ""
    reason, sequence = _stop_reason(choice.finish_reason, text, stop, matched=None)
    usage = completion.usage
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": text}],
        "model": completion.model,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
        "tts": completion.tts.model_dump() if completion.tts else None,
    }


def _stop_reason(
    finish: str | None, text: str, stop: list[str] | None, matched: Any
) -> tuple[str | None, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence``: vLLM names the stop string it met
    (``stop_reason``); a search's answer is cut before it, so it is found at the text's end."""
    if finish == "stop" and stop:
        if isinstance(matched, str) and matched in stop:
            return "stop_sequence", matched
        for sequence in stop:
            if text.endswith(sequence):
                return "stop_sequence", sequence
    return _STOP_REASONS.get(finish or "stop", "end_turn"), None


def message_from_chat(
    data: dict[str, Any], message_id: str, stop: list[str] | None
) -> dict[str, Any]:
    """The policy's chat answer (pass-through) as a ``message``."""
    try:
        choice = data["choices"][0]
        message = choice.get("message") or {}
        blocks: list[dict[str, Any]] = []
        if message.get("content"):
            blocks.append({"type": "text", "text": str(message["content"])})
        for call in message.get("tool_calls") or []:
            function = call["function"]
            blocks.append(
                {
                    "type": "tool_use",
                    "id": str(call["id"]),
                    "name": str(function["name"]),
                    "input": _arguments(function.get("arguments")),
                }
            )
        reason, sequence = _stop_reason(
            choice.get("finish_reason"), "", stop, matched=choice.get("stop_reason")
        )
        usage = data.get("usage") or {}
        counts = {
            "input_tokens": int(usage.get("prompt_tokens", 0)),
            "output_tokens": int(usage.get("completion_tokens", 0)),
        }
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise UpstreamError(
            f"the policy server's chat answer is malformed ({type(exc).__name__})"
        ) from exc
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": blocks,
        "model": str(data.get("model", "")),
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": counts,
        "tts": data.get("tts"),
    }


def _arguments(raw: Any) -> dict[str, Any]:
    """A tool call's arguments (a JSON object in a string) as ``input``."""
    value = json.loads(raw) if isinstance(raw, str) and raw.strip() else {}
    if not isinstance(value, dict):
        raise ValueError("tool arguments are not a JSON object")
    return value


def anthropic_event(payload: dict[str, Any]) -> bytes:
    """One event of the Messages stream: ``event:`` named as its ``type``."""
    return f"event: {payload['type']}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


PING = anthropic_event({"type": "ping"})


def error_event(error: ProxyError) -> list[bytes]:
    """A failure after the stream started, as Anthropic's ``error`` event."""
    _, body = error.anthropic()
    return [anthropic_event(body)]


def _start(message_id: str, model: str) -> bytes:
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    return anthropic_event({"type": "message_start", "message": message})


def _end(message: dict[str, Any]) -> Iterator[bytes]:
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    event = {"type": "message_delta", "delta": delta, "usage": message["usage"]}
    if message.get("tts") is not None:
        event["tts"] = message["tts"]
    yield anthropic_event(event)
    yield anthropic_event({"type": "message_stop"})


def search_events(message_id: str, model: str) -> tuple[bytes, Any]:
    """A search as Messages events: the opening (``message_start``, the text block started),
    then, once finished, ``finish(message)``: the text, the block's end, the stop reason with
    the usage and the ``tts`` report, ``message_stop``."""
    opening = _start(message_id, model) + anthropic_event(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    )

    def finish(message: dict[str, Any]) -> Iterator[bytes]:
        text = message["content"][0]["text"]
        delta = {"type": "text_delta", "text": text}
        yield anthropic_event({"type": "content_block_delta", "index": 0, "delta": delta})
        yield anthropic_event({"type": "content_block_stop", "index": 0})
        yield from _end(message)

    return opening, finish


class StreamTranslator:
    """A relayed chat stream (the policy's ``chat.completion.chunk`` events) as the Messages
    event stream, block by block: text deltas, then each tool call's ``input_json_delta``."""

    def __init__(self, message_id: str, model: str, stop: list[str] | None) -> None:
        self._id, self._model, self._stop = message_id, model, stop
        self._block: tuple[str, int] | None = None  # ("text", -1) or ("tool", its call index)
        self._index = -1
        self._finish: str | None = None
        self._matched: Any = None
        self._usage = {"input_tokens": 0, "output_tokens": 0}
        self.tts: dict[str, Any] | None = None  # the pass-through's note, on message_delta

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
        reason, sequence = _stop_reason(self._finish, "", self._stop, matched=self._matched)
        message: dict[str, Any] = {
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": self._usage,
            "tts": self.tts,
        }
        for event in _end(message):
            yield event

    def _chunk(self, chunk: dict[str, Any]) -> Iterator[bytes]:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = {
                "input_tokens": int(usage.get("prompt_tokens", 0)),
                "output_tokens": int(usage.get("completion_tokens", 0)),
            }
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                yield from self._open(("text", -1), {"type": "text", "text": ""})
                text_delta = {"type": "text_delta", "text": str(delta["content"])}
                yield self._delta(text_delta)
            for call in delta.get("tool_calls") or []:
                yield from self._tool_delta(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                self._matched = choice.get("stop_reason")

    def _tool_delta(self, call: dict[str, Any]) -> Iterator[bytes]:
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

    def _open(self, key: tuple[str, int], block: dict[str, Any]) -> Iterator[bytes]:
        if self._block == key:
            return
        yield from self._close()
        self._index += 1
        self._block = key
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        yield anthropic_event(start)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return anthropic_event(
            {"type": "content_block_delta", "index": self._index, "delta": delta}
        )

    def _close(self) -> Iterator[bytes]:
        if self._block is not None:
            yield anthropic_event({"type": "content_block_stop", "index": self._index})
            self._block = None
