"""The one request skeleton behind every generating endpoint (chat, legacy completions, Responses,
Anthropic Messages).

``serve`` holds the steps every endpoint shares, once: an id and a start time, the plan, its
headers, a large-API route, the model check, pass-through (with one seed rule), the search, and
the outcome counted once in ``tts_requests_total`` — for JSON answers, error responses and
streams alike. Each endpoint supplies a small ``Endpoint`` adapter: how its body plans, what it
passes through, how it asks a large API, and how it renders a finished search.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import time
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
)
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from proxy.api.deps import ERROR_RESPONSES, control_headers, get_state, require_key
from proxy.api.passthrough import (
    StreamEnd,
    open_policy_stream,
    policy_json,
    route_note,
    tts_note,
    whole_events,
    with_tts_note,
)
from proxy.api.sse import DONE, KEEPALIVE, keepalive_events, sse
from proxy.errors import InvalidRequestError, ProxyError, UpstreamError
from proxy.observability.metrics import RequestTally
from proxy.observability.request_ids import REQUEST_ID
from proxy.search.job import prepare_search
from proxy.search.plan import Plan, SearchRequest, plan_request
from proxy.server.cancel import client_gone, until_drained, until_stopped
from proxy.state import AppState
from proxy.upstream.litellm import litellm_call, litellm_chunks, litellm_params
from proxy.wire.chat import ChatCompletion
from proxy.wire.json_types import JSONObject, JSONValue
from proxy.wire.text import INVALID_TEXT, invalid_text_at

__all__ = ["Call", "Endpoint", "add_route", "large_api_answer", "relay", "result_headers", "serve"]

_T = TypeVar("_T")
_Body = TypeVar("_Body", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Call:
    """One request at the edge, as the skeleton hands it to an endpoint's adapter."""

    request: Request
    state: AppState
    request_id: str
    started: float  # time.perf_counter() when the request came in
    created: int  # its Unix time, in seconds
    headers: dict[str, str]  # the response's headers (X-Request-Id, X-TTS-*)
    tally: RequestTally

    async def until_disconnect(self, work: Awaitable[_T]) -> _T:
        """``work``'s result, unless the client goes away first (``ClientDisconnectedError``)
        or the shutdown grace period ends (``ShuttingDownError``): then it is cancelled, and
        with it every upstream call."""
        return await until_stopped(work, client_gone(self.request.receive), self.state.drain.wait())

    async def json(
        self,
        work: Callable[[], Awaitable[ChatCompletion]],
        render: Callable[[ChatCompletion], JSONObject],
    ) -> JSONResponse:
        """A finished search as one JSON body (``render``), with its outcome in the headers."""
        completion = await self.until_disconnect(work())
        self.headers.update(result_headers(completion))
        return JSONResponse(render(completion), headers=self.headers)

    def events(
        self,
        work: Callable[[], Awaitable[_T]],
        *,
        finish: Callable[[_T], Iterable[bytes]],
        fail: Callable[[ProxyError], Iterable[bytes]] | None = None,
        opening: Callable[[], bytes] = lambda: b": searching\n\n",
        keepalive: Callable[[], bytes] = lambda: KEEPALIVE,
    ) -> StreamingResponse:
        """A long answer as an event stream: ``opening``, a ``keepalive`` every interval while
        ``work`` runs, then its ``finish`` events, or the ``fail`` events of its error (counted
        once; by default an error event and ``[DONE]``). The client leaving cancels the work."""
        events = keepalive_events(
            work,
            opening=opening,
            keepalive=keepalive,
            finish=finish,
            fail=self.tally.failing(fail or (lambda exc: [sse(exc.body()), DONE])),
            keepalive_s=self.state.settings.keepalive_interval_s,
            request_id=self.request_id,
            disconnected=self._disconnected,
        )
        return StreamingResponse(events, media_type="text/event-stream", headers=self.headers)

    async def _disconnected(self) -> None:
        """Returns once the client is gone, counted as its 499 (the stream then ends without
        error, which would otherwise count as sent in full)."""
        await until_stopped(client_gone(self.request.receive), self.state.drain.wait())
        self.tally.count("499")


class Endpoint(Protocol):
    """What one endpoint adds to the skeleton."""

    id_prefix: ClassVar[str]  # "chatcmpl-", "cmpl-", "resp_"
    upstream_path: ClassVar[str]  # where a pass-through goes on the policy server

    @property
    def is_stream(self) -> bool: ...

    def search_request(self, headers: Mapping[str, str]) -> SearchRequest:
        """The body as the search layer reads it (planned once, by the skeleton); raises
        ``InvalidRequestError`` for a body this endpoint cannot take."""
        ...

    def passthrough_payload(self) -> JSONObject:
        """The body relayed unchanged (``model`` and ``seed`` are the skeleton's)."""
        ...

    async def passthrough(self, call: Call, plan: Plan, payload: JSONObject) -> Response:
        """The policy's own answer to ``payload`` (``relay`` on the same wire, or translated)."""
        ...

    async def large_api(self, call: Call, plan: Plan, request: SearchRequest) -> Response:
        """The answer from the large-API route ``plan.route`` (``litellm_routes``)."""
        ...

    def render(self, call: Call, completion: ChatCompletion) -> JSONObject:
        """A finished search as this endpoint's JSON body."""
        ...

    def stream(
        self, call: Call, work: Callable[[], Awaitable[ChatCompletion]]
    ) -> StreamingResponse:
        """A search running (``work``) as this endpoint's events (through ``call.events``)."""
        ...


def add_route(
    router: APIRouter,
    path: str,
    adapter: Callable[[_Body], Endpoint],
    body: type[_Body],
    *,
    name: str,
    response_model: type[BaseModel],
    errors: dict[int | str, JSONObject] = ERROR_RESPONSES,
) -> None:
    """``POST path`` on the skeleton: the body parsed as ``body``, then ``serve``d through its
    ``adapter`` (the API key checked, the error responses (``errors``) and ``X-TTS-*`` headers
    documented)."""

    async def handle(request: Request, body: JSONValue, state: AppState) -> Response:
        return await serve(request, state, adapter(body))

    # FastAPI reads the parameters from the signature: the body's model is the adapter's.
    parameter = inspect.Parameter
    handle.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            parameter("request", parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
            parameter("body", parameter.POSITIONAL_OR_KEYWORD, annotation=body),
            parameter(
                "state",
                parameter.POSITIONAL_OR_KEYWORD,
                annotation=AppState,
                default=Depends(get_state),
            ),
        ],
        return_annotation=Response,
    )
    router.add_api_route(
        path,
        handle,
        methods=["POST"],
        name=name,
        dependencies=[Depends(require_key)],
        response_model=response_model,
        responses=errors,
        openapi_extra=control_headers(),
        route_class_override=_direct_route(adapter, body),
    )


def _direct_route(adapter: Callable[[_Body], Endpoint], body: type[_Body]) -> type[APIRoute]:
    """A route that serves a well-formed JSON body itself: the body parsed and validated as
    FastAPI would (``json.loads``, then the model in Python mode), the key checked, then
    ``serve``, skipping FastAPI's dependency and validation machinery, which did nothing else
    for these routes (its cost: docs/benchmarks/overhead.md, round three). Anything else (no
    JSON content type, a body that does not parse or validate) goes to FastAPI's own handler, so
    its errors are exactly FastAPI's."""

    class DirectRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            fastapi_handler = super().get_route_handler()

            async def handler(request: Request) -> Response:
                if not _is_json(request.headers.get("content-type")):
                    return await fastapi_handler(request)
                try:
                    parsed = body.model_validate(json.loads(await request.body()))
                except (ValueError, RecursionError, ValidationError):
                    return await fastapi_handler(request)
                state: AppState = request.app.state.tts
                await require_key(request, state)
                return await serve(request, state, adapter(parsed))

            return handler

    return DirectRoute


def _is_json(content_type: str | None) -> bool:
    """``application/json`` (or ``+json``), as FastAPI reads it."""
    if content_type is None:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


async def serve(request: Request, state: AppState, endpoint: Endpoint) -> Response:
    started = time.perf_counter()
    tally = RequestTally(state.metrics)
    request.state.tally = tally  # the error handler counts through it
    request_id = f"{endpoint.id_prefix}{uuid.uuid4().hex}"
    REQUEST_ID.set(request_id)  # on every log line from here on, and in 5xx bodies
    relayed = endpoint.passthrough_payload()
    bad = invalid_text_at(relayed)
    if bad is not None:  # no upstream could be sent it: the client's 400, no replica's fault
        raise InvalidRequestError(f"{bad}: {INVALID_TEXT}", param=bad)
    search = endpoint.search_request(request.headers)
    plan = await plan_request(
        search,
        request.headers,
        state.settings,
        state.rules,
        served_model=state.policy.model,
        request_id=request_id,
    )
    tally.strategy = "litellm" if plan.route is not None else plan.strategy
    headers = _strategy_headers(request_id, plan)
    call = Call(request, state, request_id, started, int(time.time()), headers, tally)
    # Admitted once planned, before the response starts: a 429 (with Retry-After, streams
    # included) is counted under its strategy. The place is held until the response, streamed
    # or not, is finished.
    slot = state.admission.admit()
    try:
        response = await _answer(call, endpoint, plan, search, relayed)
    except BaseException:
        slot.release()
        raise
    if isinstance(response, StreamingResponse):
        return _HeldStream(response, slot.release)
    slot.release()
    return response


class _HeldStream(StreamingResponse):
    """A streaming response that gives its admission slot back when it is done (sent in full,
    failed, or cut by a client disconnect)."""

    def __init__(self, source: StreamingResponse, release: Callable[[], None]) -> None:
        super().__init__(
            source.body_iterator,
            status_code=source.status_code,
            headers=dict(source.headers),
            media_type=source.media_type,
        )
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


async def _answer(
    call: Call, endpoint: Endpoint, plan: Plan, search: SearchRequest, relayed: JSONObject
) -> Response:
    """The planned request's answer (large-API route, pass-through of ``relayed``, or search),
    its outcome counted once: JSON now, a stream when it ends."""
    state, tally, is_stream = call.state, call.tally, endpoint.is_stream
    if plan.route is not None:
        call.headers["X-TTS-Strategy"] = "none"
        response = await endpoint.large_api(call, plan, search)
    elif plan.strategy == "none":
        payload = relayed | {"model": plan.model}
        if not state.settings.forward_seed:
            payload.pop("seed", None)  # said in tts.ignored_params (the plan's)
        if plan.max_thinking_tokens is not None:  # vLLM's own cap (with --reasoning-config)
            payload.setdefault("thinking_token_budget", plan.max_thinking_tokens)
        response = await endpoint.passthrough(call, plan, payload)
    else:
        if is_stream and not await state.policy.any_available():
            # Before the 200, where it costs nothing: a stream that could only fail gets a status
            # the SDKs retry on, not an error event after a 200.
            raise UpstreamError(
                "every policy replica is failing (each was ejected and none answers its health "
                "probe); retry shortly"
            )
        job = prepare_search(state, search, plan, request_id=call.request_id, started=call.started)
        if is_stream:
            response = endpoint.stream(call, job.run)
        else:
            response = await call.json(job.run, lambda done: endpoint.render(call, done))
    if isinstance(response, StreamingResponse):
        response.body_iterator = _tallied(response.body_iterator, tally)
    else:
        tally.ok()
    return response


async def _tallied(events: AsyncIterable[_T], tally: RequestTally) -> AsyncIterator[_T]:
    """A stream's events; ``ok`` once sent in full (unless an error event was counted), 499 when
    the client went away first."""
    finished = False
    try:
        async for event in events:
            yield event
        finished = True
    finally:
        tally.count("ok" if finished else "499")


def _strategy_headers(request_id: str, plan: Plan) -> dict[str, str]:
    """What is known before the search runs. ``auto`` decides its method while searching, so a
    streamed ``auto`` response names only the requested strategy here; the method that ran is in
    the ``tts`` object of its last chunk (and in ``X-TTS-Strategy`` of non-streamed responses)."""
    headers = {"X-Request-Id": request_id, "X-TTS-Requested-Strategy": plan.requested}
    if plan.strategy != "auto":
        headers["X-TTS-Strategy"] = plan.strategy
    return headers


def result_headers(completion: ChatCompletion) -> dict[str, str]:
    """The outcome of a finished search as headers (non-streamed responses)."""
    tts = completion.tts
    if tts is None:
        return {}
    return {
        "X-TTS-Strategy": tts.strategy,
        "X-TTS-Budget-Spent": str(tts.budget_spent or 0),
        "X-TTS-Overhead-Ms": str(tts.latency_ms.proxy if tts.latency_ms else 0),
    }


async def relay(
    call: Call, path: str, payload: JSONObject, plan: Plan, *, is_stream: bool
) -> Response:
    """A pass-through answer from the policy server, JSON or SSE, with the ``tts`` note."""
    state, headers = call.state, call.headers
    headers["X-TTS-Strategy"] = "none"
    if not is_stream:
        data = await call.until_disconnect(policy_json(state, path, payload, plan))
        return JSONResponse(data, headers=headers)
    stack = contextlib.AsyncExitStack()
    # Until the upstream's first byte nothing has been sent: a client gone by then cancels it.
    lines = await call.until_disconnect(
        stack.enter_async_context(open_policy_stream(state, path, payload, call.tally))
    )
    end = StreamEnd(path)

    async def body() -> AsyncIterator[bytes]:
        async with stack:
            relayed = end.watch(with_tts_note(lines, tts_note(plan)))
            fail = call.tally.failing(end.fail)
            async for event in whole_events(until_drained(relayed, state.drain, fail)):
                yield event

    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


def _same(data: JSONObject) -> JSONObject:
    return data


async def large_api_answer(
    call: Call,
    plan: Plan,
    chat: JSONObject,
    *,
    shape: Callable[[JSONObject], JSONObject] = _same,
    shape_chunk: Callable[[JSONObject], JSONObject] = _same,
) -> Response:
    """A large API's answer to one chat call (``chat``: its parameters, ``stream`` included),
    in the client's endpoint's shape (``shape``, ``shape_chunk``), with the ``tts`` note; a
    stream that breaks midway ends with an error event and ``[DONE]``, like every stream of
    ours."""
    state, route = call.state, plan.route
    assert route is not None, "a large-API plan"
    note = route_note(plan).model_dump()
    params = litellm_params(state.settings, chat)
    response = await call.until_disconnect(litellm_call(route, params, state.telemetry))
    if not chat.get("stream"):
        return JSONResponse(shape(response.model_dump()) | {"tts": note}, headers=call.headers)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in litellm_chunks(route, response):
                if shape_chunk is _same:  # litellm's own JSON, as it serialises it
                    yield f"data: {chunk.model_dump_json()}\n\n".encode()
                else:
                    yield sse(shape_chunk(chunk.model_dump()))
        except ProxyError as error:
            call.tally.error(error)
            yield sse(error.body())
        yield DONE

    fail = call.tally.failing(StreamEnd("/chat/completions").fail)
    return StreamingResponse(
        until_drained(chunks(), state.drain, fail),
        media_type="text/event-stream",
        headers=call.headers,
    )
