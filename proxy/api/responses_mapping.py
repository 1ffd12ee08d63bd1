"""The Responses API over the search: a ``ResponsesRequest`` becomes a ``SearchRequest`` (chat
messages, when it can be searched), and the search's ``chat.completion`` becomes a ``response``
object or its event stream. Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from proxy.errors import InvalidRequestError, OverloadedError, ProxyError
from proxy.search.plan import SearchRequest
from proxy.wire.chat import ChatCompletion, ChatMessage
from proxy.wire.json_types import JSONObject
from proxy.wire.responses import (
    ContentPartEvent,
    ErrorEvent,
    IncompleteDetails,
    InputTokensDetails,
    LifecycleEvent,
    OutputItemEvent,
    OutputMessage,
    OutputText,
    OutputTokensDetails,
    ReasoningItem,
    ReasoningText,
    ResponseError,
    ResponseObject,
    ResponsesRequest,
    ResponsesUsage,
    TextDeltaEvent,
    TextDoneEvent,
)

__all__ = [
    "EventWriter",
    "check_stateless",
    "ignored_fields",
    "passthrough_reason",
    "pending_response",
    "response_object",
    "to_search",
]

_TEXT_PARTS = {"input_text", "output_text", "text"}
_ROLES = {"user", "assistant", "system", "developer"}
# Responses fields a search does not use; any set to a non-default value is reported as ignored.
_IGNORED = ("include", "reasoning", "truncation", "parallel_tool_calls", "user", "tool_choice")


_STATEFUL = {
    "store": "this proxy keeps no responses; send store: false (or omit it) and keep the "
    "conversation on the client",
    "previous_response_id": "this proxy keeps no responses; send the earlier turns in input",
    "conversation": "this proxy keeps no conversations; send the earlier turns in input",
    "background": "send a normal (or stream: true) request",
    "prompt": "stored prompt templates are not kept here; send instructions and input",
}


def check_stateless(request: ResponsesRequest) -> None:
    """The proxy keeps no responses: a 400 for each field that needs a stored one."""
    for name, advice in _STATEFUL.items():
        value = getattr(request, name)
        if value is not None and value is not False:
            raise InvalidRequestError(
                f"{name} is not supported: {advice}", param=name, code="unsupported_parameter"
            )


def passthrough_reason(request: ResponsesRequest) -> str | None:
    """Why this request goes to the policy server's ``/v1/responses`` unchanged, or None."""
    if request.tools:
        return "tools cannot be searched over: passed through unchanged"
    fmt = (request.text or {}).get("format") or {}
    if isinstance(fmt, dict) and fmt.get("type", "text") != "text":
        return "text.format cannot be searched over: passed through unchanged"
    if isinstance(request.input, list):
        for item in request.input:
            if item.get("type", "message") != "message":
                return f"{item.get('type')} items cannot be searched over: passed through unchanged"
            content = item.get("content")
            if isinstance(content, list) and any(
                not isinstance(p, dict) or p.get("type") not in _TEXT_PARTS for p in content
            ):
                return "non-text input cannot be searched over: passed through unchanged"
    return None


def to_search(request: ResponsesRequest) -> SearchRequest:
    """The request as the search reads it: text-only input as chat messages, or, for a request
    that cannot be searched (see ``passthrough_reason``), only what planning reads."""
    tts = request.tts.model_dump(exclude_none=True) if request.tts else {}
    reason = passthrough_reason(request)
    if reason is not None:
        return SearchRequest(model=request.model, messages=(), tts=tts, passthrough_reason=reason)
    messages: list[ChatMessage] = []
    if request.instructions:
        messages.append(ChatMessage(role="system", content=request.instructions))
    if isinstance(request.input, str):
        messages.append(ChatMessage(role="user", content=request.input))
    else:
        for i, item in enumerate(request.input):
            messages.append(_message(item, i))
    if not messages:
        raise InvalidRequestError("input must hold at least one message", param="input")
    return SearchRequest(
        model=request.model,
        messages=tuple(m.model_dump(exclude_none=True) for m in messages),
        tts=tts,
        max_tokens=request.max_output_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        extra=request.model_extra or {},
        ignored=ignored_fields(request),
    )


def ignored_fields(request: ResponsesRequest) -> tuple[str, ...]:
    """Responses fields that were set but that a search does not use."""
    return tuple(name for name in _IGNORED if getattr(request, name) is not None)


def _message(item: JSONObject, index: int) -> ChatMessage:
    role = item.get("role")
    if role not in _ROLES:
        raise InvalidRequestError(
            f"input[{index}].role must be one of {', '.join(sorted(_ROLES))}; got {role!r}",
            param=f"input[{index}].role",
        )
    content = item.get("content")
    if isinstance(content, list):
        content = "".join(str(part.get("text", "")) for part in content)
    if not isinstance(content, str):
        raise InvalidRequestError(
            f"input[{index}].content must be text or a list of text parts",
            param=f"input[{index}].content",
        )
    return ChatMessage(role=role, content=content)


def _usage(completion: ChatCompletion) -> ResponsesUsage:
    usage = completion.usage
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    return ResponsesUsage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=cached),
        output_tokens=usage.completion_tokens,
        output_tokens_details=OutputTokensDetails(
            reasoning_tokens=usage.completion_tokens_details.reasoning_tokens
        ),
        total_tokens=usage.total_tokens,
    )


def pending_response(
    request: ResponsesRequest, response_id: str, created_at: int
) -> ResponseObject:
    """The response as it stands before the search has an answer."""
    return ResponseObject(
        id=response_id,
        created_at=created_at,
        status="in_progress",
        output=[],
        instructions=request.instructions,
        max_output_tokens=request.max_output_tokens,
        model=request.model,
        temperature=request.temperature,
        top_p=request.top_p,
        metadata=request.metadata or {},
        user=request.user,
        text=request.text or {"format": {"type": "text"}},
    )


def response_object(
    request: ResponsesRequest, completion: ChatCompletion, response_id: str, created_at: int
) -> ResponseObject:
    """The finished response: the best answer as one ``output_text`` message, after a
    reasoning model's thinking as a ``reasoning`` item."""
    choice = completion.choices[0]
    is_cut = choice.finish_reason == "length"
    suffix = response_id.removeprefix("resp_")
    item = OutputMessage(
        id=f"msg_{suffix}",
        status="incomplete" if is_cut else "completed",
        content=[OutputText(text=choice.message.content or "")],
    )
    output: list[ReasoningItem | OutputMessage] = [item]
    if choice.message.reasoning is not None:
        thinking = ReasoningItem(
            id=f"rs_{suffix}", content=[ReasoningText(text=choice.message.reasoning)]
        )
        output.insert(0, thinking)
    return pending_response(request, response_id, created_at).model_copy(
        update={
            "status": "incomplete" if is_cut else "completed",
            "incomplete_details": IncompleteDetails(reason="max_output_tokens") if is_cut else None,
            "model": completion.model,
            "output": output,
            "usage": _usage(completion),
            "tts": completion.tts,
        }
    )


_Event = (
    LifecycleEvent
    | OutputItemEvent
    | ContentPartEvent
    | TextDeltaEvent
    | TextDoneEvent
    | ErrorEvent
)
_ADDED_DONE: tuple[Literal["response.output_item.added", "response.output_item.done"], ...] = (
    "response.output_item.added",
    "response.output_item.done",
)
_Closing = Literal["response.incomplete", "response.completed"]
_FailCode = Literal["rate_limit_exceeded", "server_error"]


class EventWriter:
    """Numbers and frames one response's events (``event:`` + ``data:`` lines)."""

    def __init__(self, pending: ResponseObject) -> None:
        self._pending = pending
        self._sequence = 0

    def _frame(self, event: _Event) -> bytes:
        event = event.model_copy(update={"sequence_number": self._sequence})
        self._sequence += 1
        data = event.model_dump_json(exclude_none=False)
        return f"event: {event.type}\ndata: {data}\n\n".encode()

    def created(self) -> bytes:
        return self._frame(
            LifecycleEvent(type="response.created", sequence_number=0, response=self._pending)
        )

    def in_progress(self) -> bytes:
        return self._frame(
            LifecycleEvent(type="response.in_progress", sequence_number=0, response=self._pending)
        )

    def finished(self, done: ResponseObject) -> Iterator[bytes]:
        """The answer's events: a reasoning item (added, done) if there is one; the message
        item, its part, text delta(s); and the closing lifecycle event."""
        *before, item = done.output
        assert isinstance(item, OutputMessage), "the answer's message comes last"
        for index, reasoning in enumerate(before):
            for added_or_done in _ADDED_DONE:
                yield self._frame(
                    OutputItemEvent(
                        type=added_or_done, sequence_number=0, output_index=index, item=reasoning
                    )
                )
        at = len(before)
        text = item.content[0].text
        where: JSONObject = {
            "item_id": item.id,
            "output_index": at,
            "content_index": 0,
            "sequence_number": 0,
        }
        empty = item.model_copy(update={"status": "in_progress", "content": []})
        yield self._frame(
            OutputItemEvent(
                type="response.output_item.added", sequence_number=0, output_index=at, item=empty
            )
        )
        yield self._frame(
            ContentPartEvent(type="response.content_part.added", **where, part=OutputText(text=""))
        )
        yield self._frame(TextDeltaEvent(**where, delta=text))
        yield self._frame(TextDoneEvent(**where, text=text))
        yield self._frame(
            ContentPartEvent(type="response.content_part.done", **where, part=item.content[0])
        )
        yield self._frame(
            OutputItemEvent(
                type="response.output_item.done", sequence_number=0, output_index=at, item=item
            )
        )
        kind: _Closing = (
            "response.incomplete" if done.status == "incomplete" else "response.completed"
        )
        yield self._frame(LifecycleEvent(type=kind, sequence_number=0, response=done))

    def failed(self, error: ProxyError) -> Iterator[bytes]:
        """``error`` (with the proxy's code and param), then ``response.failed``."""
        code: _FailCode = (
            "rate_limit_exceeded" if isinstance(error, OverloadedError) else "server_error"
        )
        yield self._frame(
            ErrorEvent(
                sequence_number=0,
                code=error.code or error.type,
                message=error.message,
                param=error.param,
            )
        )
        failed = self._pending.model_copy(
            update={"status": "failed", "error": ResponseError(code=code, message=error.message)}
        )
        yield self._frame(
            LifecycleEvent(type="response.failed", sequence_number=0, response=failed)
        )
