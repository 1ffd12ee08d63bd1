"""Thin HTTP handlers: validate -> plan -> run -> map to an OpenAI response."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy.api.deps import (
    ERROR_RESPONSES,
    admitted,
    control_headers,
    disconnected,
    get_state,
    has_key,
    require_key,
)
from proxy.api.endpoint import Call, large_api_answer, result_headers, serve
from proxy.api.sse import search_events
from proxy.search.job import SearchJob
from proxy.search.plan import Plan, resolve_plan, split_alias
from proxy.search.run import model_not_found
from proxy.settings import ProxySettings
from proxy.state import AppState
from proxy.wire.chat import ChatCompletion, ChatCompletionRequest, ModelCard, ModelList

__all__ = ["ChatEndpoint", "router"]

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
    return await admitted(state, lambda: serve(request, state, ChatEndpoint(chat)))


@dataclass(frozen=True, slots=True)
class ChatEndpoint:
    """``POST /v1/chat/completions`` on the request skeleton."""

    body: ChatCompletionRequest
    id_prefix: ClassVar[str] = "chatcmpl-"
    upstream_path: ClassVar[str] = "/chat/completions"

    @property
    def is_stream(self) -> bool:
        return self.body.stream

    def plan(self, headers: Mapping[str, str], settings: ProxySettings) -> Plan:
        return resolve_plan(self.body, headers, settings)

    def passthrough_payload(self) -> dict[str, Any]:
        return self.body.model_dump(exclude={"tts"}, exclude_none=True)

    async def large_api(self, call: Call, plan: Plan, route: str) -> Response:
        return await large_api_answer(call, plan, route, self.body)

    def search_input(self) -> tuple[ChatCompletionRequest, str | None]:
        return self.body, None

    async def answer(self, call: Call, job: SearchJob) -> Response:
        chat, state = self.body, call.state
        if chat.stream:
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            events = search_events(
                job.run, tally=call.tally, include_usage=include_usage,
                keepalive_s=state.settings.keepalive_interval_s, request_id=call.request_id,
                disconnected=lambda: disconnected(call.request),
            )  # fmt: skip
            return StreamingResponse(events, media_type="text/event-stream", headers=call.headers)
        completion = await call.until_disconnect(job.run())
        call.headers.update(result_headers(completion))
        return JSONResponse(completion.model_dump(exclude_none=False), headers=call.headers)
