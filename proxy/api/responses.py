"""``POST /v1/responses``: the Responses API, searched like chat (same headers, ``tts`` body
object and model aliases), or passed through to the policy server's ``/v1/responses`` unchanged
for tools, structured output and non-text input.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse

from proxy.api.endpoint import Call, add_route, relay
from proxy.api.passthrough import route_note
from proxy.api.responses_mapping import (
    EventWriter,
    check_stateless,
    pending_response,
    response_object,
    to_search,
)
from proxy.errors import InvalidRequestError
from proxy.search.plan import Plan, SearchRequest
from proxy.upstream.litellm import as_completion, litellm_call, litellm_params
from proxy.wire.chat import ChatCompletion
from proxy.wire.json_types import JSONObject
from proxy.wire.responses import ResponseObject, ResponsesRequest

__all__ = ["ResponsesEndpoint", "router"]

router = APIRouter()


@dataclass(frozen=True, slots=True)
class ResponsesEndpoint:
    """``POST /v1/responses`` on the request skeleton."""

    body: ResponsesRequest
    id_prefix: ClassVar[str] = "resp_"
    upstream_path: ClassVar[str] = "/responses"

    @property
    def is_stream(self) -> bool:
        return self.body.stream

    def search_request(self, headers: Mapping[str, str]) -> SearchRequest:
        check_stateless(self.body)
        return to_search(self.body)

    def passthrough_payload(self) -> JSONObject:
        return self.body.model_dump(exclude={"tts"}, exclude_unset=True)

    async def passthrough(self, call: Call, plan: Plan, payload: JSONObject) -> Response:
        return await relay(call, self.upstream_path, payload, plan, is_stream=self.is_stream)

    async def large_api(self, call: Call, plan: Plan, request: SearchRequest) -> Response:
        route, reason = plan.route, request.passthrough_reason
        if reason is not None:
            raise InvalidRequestError(
                f"large-API route {route!r} takes text requests on /v1/responses ({reason}); "
                "send tools and structured output through /v1/chat/completions",
                param="model",
            )
        note = route_note(plan)
        params = litellm_params(call.state.settings, request.chat_params())
        telemetry = call.state.telemetry

        async def routed() -> ChatCompletion:
            answer = await litellm_call(str(route), params, telemetry)
            return as_completion(answer, note)

        if self.body.stream:
            return self.stream(call, routed)
        return await call.json(routed, lambda done: self.render(call, done))

    def render(self, call: Call, completion: ChatCompletion) -> JSONObject:
        done = response_object(self.body, completion, call.request_id, call.created)
        return done.model_dump(exclude_none=False)

    def stream(
        self, call: Call, work: Callable[[], Awaitable[ChatCompletion]]
    ) -> StreamingResponse:
        body, response_id, created_at = self.body, call.request_id, call.created
        writer = EventWriter(pending_response(body, response_id, created_at))

        def finish(completion: ChatCompletion) -> Iterator[bytes]:
            return writer.finished(response_object(body, completion, response_id, created_at))

        return call.events(
            work,
            finish=finish,
            fail=writer.failed,
            opening=lambda: writer.created() + writer.in_progress(),
            keepalive=writer.in_progress,
        )


add_route(
    router,
    "/v1/responses",
    ResponsesEndpoint,
    ResponsesRequest,
    name="create_response",
    response_model=ResponseObject,
)
