"""``POST /v1/messages``: the Anthropic Messages API, searched like chat (same ``X-TTS-*``
headers, ``tts`` body object and model aliases; ``claude-*`` names answer as the served model by
default), or passed through to the policy's chat endpoint, translated, for tools and images. And
``POST /v1/messages/count_tokens``, counted by the policy's own chat template.

``x-api-key`` is checked against the proxy's keys; ``anthropic-version`` and ``anthropic-beta``
are accepted. Errors take Anthropic's shape (``proxy.errors.ProxyError.anthropic``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from proxy.api.deps import ERROR_RESPONSES, State, require_key
from proxy.api.endpoint import Call, add_route
from proxy.api.messages_events import PING, StreamTranslator, error_event, search_events
from proxy.api.messages_mapping import (
    Conversation,
    conversation,
    message_from_chat,
    message_from_completion,
)
from proxy.api.passthrough import open_policy_stream, policy_json, route_note, tts_note
from proxy.errors import InvalidRequestError, UpstreamError
from proxy.search.plan import Plan, SearchRequest, aliased_model, checked_model
from proxy.server.cancel import until_drained
from proxy.upstream.litellm import as_completion, litellm_call, litellm_params
from proxy.wire.anthropic import (
    AnthropicErrorResponse,
    AnthropicMessage,
    CountTokensRequest,
    MessagesRequest,
    TokenCount,
)
from proxy.wire.chat import ChatCompletion
from proxy.wire.json_types import JSONObject

__all__ = ["MessagesEndpoint", "router"]

router = APIRouter()

# Documented in /openapi.json: the same statuses, in Anthropic's shape, and its 529.
ERRORS: dict[int | str, JSONObject] = {
    status: {"model": AnthropicErrorResponse, "description": spec["description"]}
    for status, spec in ERROR_RESPONSES.items()
    if status != 429
} | {529: {"model": AnthropicErrorResponse, "description": "too many searches in flight"}}


@dataclass(frozen=True, slots=True)
class MessagesEndpoint:
    """``POST /v1/messages`` on the request skeleton."""

    body: MessagesRequest
    chat: Conversation = field(init=False)
    id_prefix: ClassVar[str] = "msg_"
    upstream_path: ClassVar[str] = "/chat/completions"

    def __post_init__(self) -> None:
        object.__setattr__(self, "chat", conversation(self.body))

    @property
    def is_stream(self) -> bool:
        return self.body.stream

    def search_request(self, headers: Mapping[str, str]) -> SearchRequest:
        body = self.body
        return SearchRequest(
            model=body.model,
            messages=tuple(self.chat.messages),
            tts=self._tts(),
            stop=tuple(body.stop_sequences) if body.stop_sequences else None,
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            extra={"top_k": body.top_k} if body.top_k is not None else {},
            passthrough_reason=self.chat.passthrough_reason,
            ignored=tuple(self.chat.ignored),
        )

    def _tts(self) -> JSONObject:
        """The body's ``tts`` controls; ``thinking.budget_tokens`` is the thinking cap."""
        tts = self.body.tts.model_dump(exclude_none=True) if self.body.tts else {}
        if self.chat.thinking_budget is not None:
            tts.setdefault("max_thinking_tokens", self.chat.thinking_budget)
        return tts

    def passthrough_payload(self) -> JSONObject:
        body = self.body
        payload: JSONObject = {"model": body.model, **self.chat.chat_fields()}
        payload["max_tokens"] = body.max_tokens
        for name in ("temperature", "top_p", "top_k"):
            if getattr(body, name) is not None:
                payload[name] = getattr(body, name)
        if body.stop_sequences:
            payload["stop"] = body.stop_sequences
        if body.stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        return payload

    async def passthrough(self, call: Call, plan: Plan, payload: JSONObject) -> Response:
        state, stop = call.state, self.body.stop_sequences
        call.headers["X-TTS-Strategy"] = "none"
        if not self.is_stream:
            data = await call.until_disconnect(
                policy_json(state, self.upstream_path, payload, plan)
            )
            data["tts"] = self._note(data["tts"])
            message = message_from_chat(data, call.request_id, self.body.model, stop)
            return JSONResponse(message, headers=call.headers)
        stack = contextlib.AsyncExitStack()
        lines = await call.until_disconnect(
            stack.enter_async_context(
                open_policy_stream(state, self.upstream_path, payload, call.tally)
            )
        )
        translator = StreamTranslator(call.request_id, self.body.model, stop)

        async def noted(source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            async for line in source:
                yield line
            translator.tts = self._note(tts_note(plan))

        async def body() -> AsyncIterator[bytes]:
            async with stack:
                events = translator.events(noted(lines))
                failing = call.tally.failing(error_event)
                async for event in until_drained(events, state.drain, failing):
                    yield event

        return StreamingResponse(body(), media_type="text/event-stream", headers=call.headers)

    def _note(self, note: JSONObject) -> JSONObject:
        """A pass-through's ``tts`` note with the Messages fields that were not honoured."""
        note["ignored_params"] = [*note.get("ignored_params", []), *self.chat.ignored]
        return note

    async def large_api(self, call: Call, plan: Plan, request: SearchRequest) -> Response:
        if request.passthrough_reason is not None:
            raise InvalidRequestError(
                f"large-API route {plan.route!r} takes text requests on /v1/messages "
                f"({request.passthrough_reason}); send tools through /v1/chat/completions",
                param="model",
            )
        note = route_note(plan)
        params = litellm_params(call.state.settings, request.chat_params())
        telemetry = call.state.telemetry

        async def routed() -> ChatCompletion:
            answer = await litellm_call(str(plan.route), params, telemetry)
            return as_completion(answer, note)

        if self.body.stream:
            return self.stream(call, routed)
        return await call.json(routed, lambda done: self.render(call, done))

    def render(self, call: Call, completion: ChatCompletion) -> JSONObject:
        body = self.body
        return message_from_completion(completion, call.request_id, body.model, body.stop_sequences)

    def stream(
        self, call: Call, work: Callable[[], Awaitable[ChatCompletion]]
    ) -> StreamingResponse:
        opening, finish = search_events(call.request_id, self.body.model)
        return call.events(
            work,
            finish=lambda done: finish(self.render(call, done)),
            fail=error_event,
            opening=lambda: opening,
            keepalive=lambda: PING,
        )


add_route(
    router,
    "/v1/messages",
    MessagesEndpoint,
    MessagesRequest,
    name="create_message",
    response_model=AnthropicMessage,
    errors=ERRORS,
)


@router.post(
    "/v1/messages/count_tokens",
    dependencies=[Depends(require_key)],
    responses=ERRORS,
)
async def count_tokens(request: Request, body: CountTokensRequest, state: State) -> TokenCount:
    """The prompt's tokens as the policy's chat template renders it (tools included)."""
    model = await aliased_model(body.model, state.policy.model, state.settings)
    served = await checked_model(model, state.policy.model, state.settings)
    chat = conversation(body)
    payload = {"model": served, **chat.chat_fields(), "add_generation_prompt": True}
    payload.pop("tool_choice", None)
    payload.pop("parallel_tool_calls", None)
    data, _ = await state.policy.post_json(state.policy.pick(), "//tokenize", payload)
    count = data.get("count")
    if not isinstance(count, int):
        tokens = data.get("tokens")
        if not isinstance(tokens, list):
            raise UpstreamError("the policy server's /tokenize answer has no token count")
        count = len(tokens)
    return TokenCount(input_tokens=count)
