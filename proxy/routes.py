"""Thin HTTP handlers: validate -> plan -> run -> map to an OpenAI response."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.types import Message

from proxy.control import Plan, resolve_plan
from proxy.errors import AuthenticationError, InvalidRequestError
from proxy.passthrough import litellm_completion, open_policy_stream, policy_completion
from proxy.profiles import apply_profile, profile_of
from proxy.protocol import ChatCompletion, ChatCompletionRequest, ModelCard, ModelList
from proxy.responses import build_completion, tts_extension
from proxy.service import AppState, check_model, run_search
from proxy.streaming import search_events

__all__ = ["router"]

router = APIRouter()
_T = TypeVar("_T")


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.tts
    return state


async def require_key(request: Request, state: AppState = Depends(get_state)) -> None:  # noqa: B008
    keys = state.settings.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else ""
    if not any(token == key.get_secret_value() for key in keys):
        raise AuthenticationError("missing or invalid API key (Authorization: Bearer ...)")


@router.get("/v1/models", dependencies=[Depends(require_key)])
async def list_models(state: AppState = Depends(get_state)) -> ModelList:  # noqa: B008
    now = int(time.time())
    cards = [ModelCard(id=await state.policy.model(), created=now, owned_by="tts-proxy")]
    cards += [
        ModelCard(id=name, created=now, owned_by="litellm")
        for name in state.settings.litellm_routes
    ]
    return ModelList(data=cards)


@router.get("/health")
async def health(state: AppState = Depends(get_state)) -> JSONResponse:  # noqa: B008
    checks = {u.config.base_url: _probe(u.get_json("//health")) for u in state.policy.upstreams}
    if state.prm is not None:
        checks[state.prm.config.base_url] = _probe(state.prm.get_json("//health"))
    # gather: every probe returns its status and never raises, so nothing is left unawaited.
    results = dict(zip(checks, await asyncio.gather(*checks.values()), strict=True))
    policy_ok = any(results[u.config.base_url] == "ok" for u in state.policy.upstreams)
    prm_ok = state.prm is None or results[state.prm.config.base_url] == "ok"
    status = "ok" if policy_ok and prm_ok else "degraded"
    body = {"status": status, "upstreams": results}
    return JSONResponse(body, status_code=200 if status == "ok" else 503)


async def _probe(call: Awaitable[Any]) -> str:
    try:
        await call
    except Exception as exc:  # a health probe reports, never raises
        return f"error: {exc}"
    return "ok"


@router.get("/metrics")
async def metrics(state: AppState = Depends(get_state)) -> Response:  # noqa: B008
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post("/v1/chat/completions", dependencies=[Depends(require_key)])
async def chat_completions(request: Request, state: AppState = Depends(get_state)) -> Response:  # noqa: B008
    started = time.perf_counter()
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    chat = _parse(await request.body())
    plan = resolve_plan(chat, request.headers, state.settings)
    headers = {"X-Request-Id": request_id, "X-TTS-Strategy": plan.strategy}
    route = state.settings.litellm_routes.get(plan.model)
    if route is not None:
        return await _litellm(state, route, chat, plan, headers, request)
    model = await check_model(state, plan.model)
    if plan.strategy == "none":
        return await _passthrough(state, chat, model, plan, headers, request)
    profile = profile_of(model, plan.scorer, state.settings, state.rules)
    has_sampling = chat.temperature is not None or chat.top_p is not None
    plan = apply_profile(plan, profile, state.rules, request_has_sampling=has_sampling)

    target = state.shadow.target(plan)
    ticket = state.shadow.start(target, chat) if target else None

    async def work() -> ChatCompletion:
        try:
            outcome = await run_search(state, plan, chat, model, profile)
        except BaseException:
            if ticket is not None:
                state.shadow.abandon(ticket)
            raise
        total_s = time.perf_counter() - started
        tts = tts_extension(plan, outcome, total_s=total_s, ignored=plan.ignored_params)
        tts["profile"] = {"size": profile.size, "params_b": profile.params_b,
                          "family": profile.family.name if profile.family else None,
                          "scorer": profile.scorer}  # fmt: skip
        if target is not None:
            tts["compare"] = {"model": target, "status": "recording" if ticket else "skipped"}
        completion = build_completion(
            result=outcome.result, n=chat.n, request_id=request_id,
            created=int(time.time()), model=model, tts=tts,
        )  # fmt: skip
        _record(state, plan, completion, total_s, outcome.upstream_s)
        if ticket is not None:
            state.shadow.finish(ticket, request_id=request_id, plan=plan, completion=completion,
                                latency_s=total_s, prompt=_prompt_json(chat))  # fmt: skip
        return completion

    if chat.stream:
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        events = search_events(
            work, include_usage=include_usage,
            keepalive_s=state.settings.keepalive_interval_s, request_id=request_id,
            disconnected=lambda: _disconnected(request),
        )  # fmt: skip
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    completion = await _until_disconnect(request, work())
    tts = completion.tts or {}
    headers["X-TTS-Budget-Spent"] = str(tts.get("budget_spent", 0))
    headers["X-TTS-Overhead-Ms"] = str(tts.get("latency_ms", {}).get("proxy", 0))
    return JSONResponse(completion.model_dump(exclude_none=False), headers=headers)


def _prompt_json(chat: ChatCompletionRequest) -> str:
    return json.dumps([m.model_dump(exclude_none=True) for m in chat.messages], ensure_ascii=False)


def _parse(raw: bytes) -> ChatCompletionRequest:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from exc
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequestError(f"{param}: {first['msg']}", param=param) from exc


def _record(
    state: AppState, plan: Plan, completion: ChatCompletion, total_s: float, upstream_s: float
) -> None:
    m = state.metrics
    m.requests.labels(plan.strategy, "ok").inc()
    m.latency.labels(plan.strategy).observe(total_s)
    m.overhead.observe(max(total_s - upstream_s, 0.0))
    usage = completion.usage
    m.tokens.labels("prompt").inc(usage.prompt_tokens)
    m.tokens.labels("completion").inc(usage.completion_tokens)
    m.tokens.labels("reasoning").inc(usage.completion_tokens_details.reasoning_tokens)
    if completion.tts:
        m.tokens.labels("prm").inc(completion.tts.get("prm_tokens", 0))


async def _passthrough(
    state: AppState,
    chat: ChatCompletionRequest,
    model: str,
    plan: Plan,
    headers: dict[str, str],
    request: Request,
) -> Response:
    state.metrics.requests.labels("none", "ok").inc()
    if not chat.stream:
        data = await _until_disconnect(request, policy_completion(state, chat, model, plan))
        return JSONResponse(data, headers=headers)
    stack = contextlib.AsyncExitStack()
    lines = await stack.enter_async_context(open_policy_stream(state, chat, model))

    async def body() -> Any:
        async with stack:
            async for line in lines:
                yield line

    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


async def _litellm(
    state: AppState,
    route: str,
    chat: ChatCompletionRequest,
    plan: Plan,
    headers: dict[str, str],
    request: Request,
) -> Response:
    state.metrics.requests.labels("litellm", "ok").inc()
    headers["X-TTS-Strategy"] = "none"
    response = await _until_disconnect(request, litellm_completion(state, route, chat))
    note: dict[str, Any] = {"strategy": "none", "reason": f"large-API route {route!r} via litellm"}
    if plan.compare:  # shadow comparisons are made for searched requests only
        note["ignored_params"] = ["compare"]
    if not chat.stream:
        data = response.model_dump()
        data["tts"] = note
        return JSONResponse(data, headers=headers)

    async def body() -> Any:
        async for chunk in response:
            yield f"data: {chunk.model_dump_json()}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


async def _until_disconnect(request: Request, work: Awaitable[_T]) -> _T:
    """Race ``work`` against the client going away; a disconnect cancels all upstream calls."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
                with anyio.CancelScope(shield=True), contextlib.suppress(asyncio.CancelledError):
                    await pending
    if task.cancelled():
        raise asyncio.CancelledError("client disconnected")
    return task.result()


async def _disconnected(request: Request) -> None:
    while True:
        message: Message = await request.receive()
        if message["type"] == "http.disconnect":
            return
