"""The Anthropic Messages API translated to and from the policy's chat calls.

In: ``system`` and ``messages`` (text, image, ``tool_use`` and ``tool_result`` blocks) become
chat messages; ``tools`` and ``tool_choice`` become chat tools. Out: a chat answer (a search's, or
the policy's own on pass-through) becomes a ``message`` object, and a stream of chat chunks becomes
the Messages event stream (``proxy.api.messages_events``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from proxy.errors import InvalidRequestError, UpstreamError
from proxy.wire.anthropic import CountTokensRequest, InputMessage, MessagesRequest
from proxy.wire.chat import ChatCompletion
from proxy.wire.json_types import JSONObject, JSONValue

__all__ = [
    "Conversation",
    "conversation",
    "message_from_chat",
    "message_from_completion",
    "message_object",
    "stop_reason",
    "thinking_blocks",
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

    messages: list[JSONObject]
    tools: list[JSONObject] | None = None
    tool_choice: str | JSONObject | None = None
    parallel_tool_calls: bool | None = None
    passthrough_reason: str | None = None
    ignored: list[str] = field(default_factory=list)
    thinking_budget: int | None = None  # ``thinking.budget_tokens``: max_thinking_tokens

    def chat_fields(self) -> JSONObject:
        """The chat body's ``messages`` and tool fields."""
        out: JSONObject = {"messages": self.messages}
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
    budget = (body.thinking or {}).get("budget_tokens")
    if body.thinking is not None and body.thinking.get("type") == "enabled" and budget:
        out.thinking_budget = int(budget)  # the proxy's thinking cap
    elif body.thinking is not None and body.thinking.get("type") != "disabled":
        out.ignored.append("thinking")
    extra = body.model_extra or {}
    out.ignored += sorted(name for name in extra if name not in _READ)
    if isinstance(body, MessagesRequest) and body.metadata is not None:
        out.ignored.append("metadata")
    return out


def _system_text(system: str | list[JSONObject], out: Conversation) -> str:
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


def _note_cache_control(block: JSONObject, out: Conversation) -> None:
    if "cache_control" in block and "cache_control" not in out.ignored:
        out.ignored.append("cache_control")  # vLLM caches prefixes by itself


def _chat_messages(message: InputMessage, where: str, out: Conversation) -> list[JSONObject]:
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
    chat: list[JSONObject] = list(turn.results)
    content = _content(turn.parts)
    if message.role == "assistant" and turn.tool_calls:
        chat.append({"role": "assistant", "content": content, "tool_calls": turn.tool_calls})
    elif content is not None or not turn.results:
        chat.append({"role": message.role, "content": content if content is not None else ""})
    return chat


@dataclass(slots=True)
class _Turn:
    """One turn's blocks, sorted by what they become in chat."""

    parts: list[JSONObject] = field(default_factory=list)
    tool_calls: list[JSONObject] = field(default_factory=list)
    results: list[JSONObject] = field(default_factory=list)

    def add(self, block: JSONObject, role: str, at: str, out: Conversation) -> None:
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


def _content(parts: list[JSONObject]) -> str | list[JSONObject] | None:
    """Text parts as one string (what every chat template takes); parts with an image as a
    list; None when there are none."""
    if not parts:
        return None
    if all(part["type"] == "text" for part in parts):
        return "\n\n".join(part["text"] for part in parts)
    return parts


def _image_url(block: JSONObject, at: str) -> str:
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


def _tool_call(block: JSONObject, at: str) -> JSONObject:
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


def _tool_result(block: JSONObject, at: str) -> JSONObject:
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


def _tool(tool: JSONObject, at: str) -> JSONObject:
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
    function: JSONObject = {"name": name, "parameters": schema}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: JSONObject) -> tuple[str | JSONObject, bool | None]:
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
    completion: ChatCompletion, message_id: str, model: str, stop: list[str] | None
) -> JSONObject:
    """A finished search as a ``message`` (every generated token of the search counted);
    ``model`` is the name the client asked for, echoed as Anthropic does."""
    choice = completion.choices[0]
    text = choice.message.content or ""
    reason, sequence = stop_reason(choice.finish_reason, text, stop, matched=None)
    usage = completion.usage
    blocks = [*thinking_blocks(choice.message.reasoning), {"type": "text", "text": text}]
    counts = {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}
    tts = completion.tts.model_dump() if completion.tts else None
    return message_object(message_id, model, blocks, reason, sequence, counts) | {"tts": tts}


def message_object(
    message_id: str,
    model: str,
    content: list[JSONObject],
    reason: str | None,
    sequence: str | None,
    usage: dict[str, int],
) -> JSONObject:
    """A Messages API ``message`` object."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": model,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage,
    }


def thinking_blocks(reasoning: JSONValue) -> list[JSONObject]:
    """A reasoning model's thinking as Messages' ``thinking`` block (none without thinking; no
    signature: it is the policy's own text, nothing to verify)."""
    if not isinstance(reasoning, str):
        return []
    return [{"type": "thinking", "thinking": reasoning, "signature": ""}]


def stop_reason(
    finish: str | None, text: str, stop: list[str] | None, matched: JSONValue
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
    data: JSONObject, message_id: str, model: str, stop: list[str] | None
) -> JSONObject:
    """The policy's chat answer (pass-through) as a ``message``."""
    try:
        choice = data["choices"][0]
        message = choice.get("message") or {}
        blocks = thinking_blocks(message.get("reasoning") or message.get("reasoning_content"))
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
        reason, sequence = stop_reason(
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
    message = message_object(message_id, model, blocks, reason, sequence, counts)
    return message | {"tts": data.get("tts")}


def _arguments(raw: JSONValue) -> JSONObject:
    """A tool call's arguments (a JSON object in a string) as ``input``."""
    value = json.loads(raw) if isinstance(raw, str) and raw.strip() else {}
    if not isinstance(value, dict):
        raise ValueError("tool arguments are not a JSON object")
    return value
