"""``POST /v1/responses``: the Responses API, searched like chat (same headers, ``tts`` body
object and model aliases), or passed through to the policy server's ``/v1/responses`` unchanged
for tools, structured output and non-text input.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from proxy.control import resolve_plan
from proxy.http import (
    ERROR_RESPONSES,
    admitted,
    control_headers,
    disconnected,
    get_state,
    require_key,
    until_disconnect,
)
from proxy.large_api import as_completion
from proxy.passthrough import litellm_completion
from proxy.pipeline import prepare_search
from proxy.protocol import ChatCompletion, ChatCompletionRequest, ChatMessage, TtsReport
from proxy.responses_api import (
    EventWriter,
    check_stateless,
    ignored_fields,
    passthrough_reason,
    pending_response,
    response_object,
    to_chat,
)
from proxy.responses_wire import ResponseObject, ResponsesRequest
from proxy.routes import relay, result_headers, strategy_headers
from proxy.service import AppState, check_model
from proxy.streaming import counted, keepalive_events

__all__ = ["router"]

router = APIRouter()


@router.post(
    "/v1/responses", dependencies=[Depends(require_key)], response_model=ResponseObject,
    responses=ERROR_RESPONSES, openapi_extra=control_headers(),
)  # fmt: skip
async def create_response(
    request: Request,
    body: ResponsesRequest,
    state: AppState = Depends(get_state),  # noqa: B008
) -> Response:
    return await admitted(state, lambda: _respond(request, body, state))


async def _respond(request: Request, body: ResponsesRequest, state: AppState) -> Response:
    started = time.perf_counter()
    check_stateless(body)
    response_id = f"resp_{uuid.uuid4().hex}"
    reason = passthrough_reason(body)
    chat = to_chat(body) if reason is None else _stand_in(body)
    plan = resolve_plan(chat, request.headers, state.settings)
    plan = dataclasses.replace(plan, ignored_params=(*plan.ignored_params, *ignored_fields(body)))
    request.state.strategy = plan.strategy  # for the error handler's metrics
    headers = strategy_headers(response_id, plan)
    route = state.settings.litellm_routes.get(plan.model)
    if route is not None and reason is None:
        note = TtsReport(strategy="none", requested_strategy=plan.requested,
                         reason=f"large-API route {route!r} via litellm")  # fmt: skip
        once = chat.model_copy(update={"stream": False})

        async def routed() -> ChatCompletion:
            return as_completion(await litellm_completion(state, route, once), note)

        return await _answer(request, state, body, routed, response_id, headers, "none")
    model = await check_model(state, plan.model)
    if reason is not None or plan.strategy == "none":
        why = reason or plan.reason
        plan = dataclasses.replace(plan, strategy="none", reason=why, passthrough_reason=why)
        payload = body.model_dump(exclude={"tts"}, exclude_unset=True) | {"model": model}
        return await relay(state, "/responses", payload, plan, is_stream=body.stream,
                           headers=headers, request=request)  # fmt: skip
    job = prepare_search(state, chat, plan, model, request_id=response_id, started=started)
    return await _answer(request, state, body, job.run, response_id, headers, plan.strategy)


def _stand_in(body: ResponsesRequest) -> ChatCompletionRequest:
    """A chat request that carries only what planning reads (model, ``tts``) for a request that
    is passed through unchanged."""
    return ChatCompletionRequest(
        model=body.model, messages=[ChatMessage(role="user", content="")], tts=body.tts
    )


async def _answer(
    request: Request,
    state: AppState,
    body: ResponsesRequest,
    work: Any,
    response_id: str,
    headers: dict[str, str],
    strategy: str,
) -> Response:
    created_at = int(time.time())
    if not body.stream:
        completion: ChatCompletion = await until_disconnect(request, work())
        headers.update(result_headers(completion))
        done = response_object(body, completion, response_id, created_at)
        return JSONResponse(done.model_dump(exclude_none=False), headers=headers)
    writer = EventWriter(pending_response(body, response_id, created_at))

    def finish(completion: ChatCompletion) -> Iterator[bytes]:
        return writer.finished(response_object(body, completion, response_id, created_at))

    events = keepalive_events(
        work, opening=lambda: writer.created() + writer.in_progress(),
        keepalive=writer.in_progress, finish=finish,
        fail=counted(state.metrics, strategy, writer.failed),
        keepalive_s=state.settings.keepalive_interval_s, request_id=response_id,
        disconnected=lambda: disconnected(request),
    )  # fmt: skip
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)
