"""Thin HTTP handlers: validate -> plan -> run -> map to an OpenAI response."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy.control import Plan, resolve_plan, split_alias
from proxy.drain import until_drained
from proxy.http import (
    ERROR_RESPONSES,
    admitted,
    control_headers,
    disconnected,
    get_state,
    has_key,
    require_key,
    until_disconnect,
)
from proxy.passthrough import (
    StreamEnd,
    chat_payload,
    litellm_completion,
    open_policy_stream,
    policy_json,
    tts_note,
    with_tts_note,
)
from proxy.pipeline import prepare_search
from proxy.protocol import ChatCompletion, ChatCompletionRequest, ModelCard, ModelList, TtsReport
from proxy.service import AppState, check_model, model_not_found
from proxy.streaming import search_events

__all__ = ["relay", "result_headers", "router", "strategy_headers"]

router = APIRouter()


async def _model_cards(state: AppState) -> list[ModelCard]:
    now = int(time.time())
    cards = [ModelCard(id=await state.policy.model(), created=now, owned_by="tts-proxy")]
    cards += [
        ModelCard(id=name, created=now, owned_by="litellm")
        for name in state.settings.litellm_routes
    ]
    return cards


@router.get("/v1/models", dependencies=[Depends(require_key)])
async def list_models(state: AppState = Depends(get_state)) -> ModelList:  # noqa: B008
    return ModelList(data=await _model_cards(state))


@router.get("/v1/models/{model:path}", dependencies=[Depends(require_key)])
async def get_model(model: str, state: AppState = Depends(get_state)) -> ModelCard:  # noqa: B008
    """One model card, answered from what the proxy knows (the policy server need not serve it).
    A strategy alias (``beam_search-16/<model>``) names the model it searches over."""
    cards = await _model_cards(state)
    base, strategy, _ = split_alias(model)
    for card in cards:
        if model == card.id or (strategy is not None and base == card.id):
            return card.model_copy(update={"id": model})
    raise model_not_found(state, cards[0].id, model)


@router.get("/health/live")
async def live() -> dict[str, str]:
    """Liveness: the process serves requests."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(state: AppState = Depends(get_state)) -> JSONResponse:  # noqa: B008
    """Readiness: 200 while at least one policy replica can serve (not ejected), else 503."""
    available = sum(u.health.is_available for u in state.policy.upstreams)
    status = "ok" if available else "unavailable"
    body = {"status": status, "policy_replicas_available": available}
    return JSONResponse(body, status_code=200 if available else 503)


@router.get("/health")
async def health(request: Request, state: AppState = Depends(get_state)) -> JSONResponse:  # noqa: B008
    """What is degraded, probed now: each policy replica and the PRM by name; their addresses
    only to a caller holding a proxy API key. "ok" when all answer, "degraded" (200) while the
    proxy can still serve, "unavailable" (503) when no policy replica or the PRM answers."""
    named = {f"policy[{i}]": u for i, u in enumerate(state.policy.upstreams)}
    if state.prm is not None:
        named["prm"] = state.prm
    # gather: every probe returns its status and never raises, so nothing is left unawaited.
    results = dict(zip(named, await asyncio.gather(*(u.probe() for u in named.values())),
                       strict=True))  # fmt: skip
    policy_ok = any(results[f"policy[{i}]"] == "ok" for i in range(len(state.policy.upstreams)))
    can_serve = policy_ok and results.get("prm", "ok") == "ok"
    is_whole = all(result == "ok" for result in results.values())
    status = "ok" if is_whole else "degraded" if can_serve else "unavailable"
    body: dict[str, Any] = {"status": status, "upstreams": results}
    if state.settings.api_keys and has_key(request, state):
        body["urls"] = {name: u.config.base_url for name, u in named.items()}
    return JSONResponse(body, status_code=200 if can_serve else 503)


@router.get("/metrics")
async def metrics(request: Request, state: AppState = Depends(get_state)) -> Response:  # noqa: B008
    if state.settings.protect_metrics:
        await require_key(request, state)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post(
    "/v1/chat/completions", dependencies=[Depends(require_key)], response_model=ChatCompletion,
    responses=ERROR_RESPONSES, openapi_extra=control_headers(),
)  # fmt: skip
async def chat_completions(
    request: Request,
    chat: ChatCompletionRequest,
    state: AppState = Depends(get_state),  # noqa: B008
) -> Response:
    return await admitted(state, lambda: _chat(request, chat, state))


async def _chat(request: Request, chat: ChatCompletionRequest, state: AppState) -> Response:
    started = time.perf_counter()
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    plan = resolve_plan(chat, request.headers, state.settings)
    request.state.strategy = plan.strategy  # for the error handler's metrics
    headers = strategy_headers(request_id, plan)
    route = state.settings.litellm_routes.get(plan.model)
    if route is not None:
        return await _litellm(state, route, chat, plan, headers, request)
    model = await check_model(state, plan.model)
    if plan.strategy == "none":
        return await _passthrough(state, chat, model, plan, headers, request)
    job = prepare_search(state, chat, plan, model, request_id=request_id, started=started)
    if chat.stream:
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        events = search_events(
            job.run, metrics=state.metrics, strategy=plan.strategy, include_usage=include_usage,
            keepalive_s=state.settings.keepalive_interval_s, request_id=request_id,
            disconnected=lambda: disconnected(request),
        )  # fmt: skip
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    completion = await until_disconnect(request, job.run())
    headers.update(result_headers(completion))
    return JSONResponse(completion.model_dump(exclude_none=False), headers=headers)


def strategy_headers(request_id: str, plan: Plan) -> dict[str, str]:
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


async def _passthrough(
    state: AppState,
    chat: ChatCompletionRequest,
    model: str,
    plan: Plan,
    headers: dict[str, str],
    request: Request,
) -> Response:
    state.metrics.requests.labels("none", "ok").inc()
    return await relay(state, "/chat/completions", chat_payload(chat, model, state), plan,
                       is_stream=chat.stream, headers=headers, request=request)  # fmt: skip


async def relay(
    state: AppState,
    path: str,
    payload: dict[str, Any],
    plan: Plan,
    *,
    is_stream: bool,
    headers: dict[str, str],
    request: Request,
) -> Response:
    """A pass-through answer from the policy server, JSON or SSE, with the ``tts`` note."""
    headers["X-TTS-Strategy"] = "none"
    if not is_stream:
        data = await until_disconnect(request, policy_json(state, path, payload, plan))
        return JSONResponse(data, headers=headers)
    stack = contextlib.AsyncExitStack()
    # Until the upstream's first byte nothing has been sent: a client gone by then cancels it.
    lines = await until_disconnect(
        request, stack.enter_async_context(open_policy_stream(state, path, payload))
    )

    end = StreamEnd(path)

    async def body() -> Any:
        async with stack:
            relayed = end.watch(with_tts_note(lines, tts_note(plan)))
            async for line in until_drained(relayed, state.drain, end.fail):
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
    response = await until_disconnect(request, litellm_completion(state, route, chat))
    note = TtsReport(
        strategy="none", requested_strategy=plan.requested,
        reason=f"large-API route {route!r} via litellm",
        ignored_params=["compare"] if plan.compare else [],  # comparisons: searches only
    ).model_dump()  # fmt: skip
    if not chat.stream:
        data = response.model_dump()
        data["tts"] = note
        return JSONResponse(data, headers=headers)

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in response:
            yield f"data: {chunk.model_dump_json()}\n\n".encode()
        yield b"data: [DONE]\n\n"

    async def body() -> Any:
        async for line in until_drained(chunks(), state.drain, StreamEnd("/chat/completions").fail):
            yield line

    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
