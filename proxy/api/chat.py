"""Thin HTTP handlers: validate -> plan -> run -> map to an OpenAI response."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from proxy.api.deps import State, has_key, require_key
from proxy.api.endpoint import Call, add_route, large_api_answer, relay
from proxy.api.sse import DONE, chunk_dict, sse
from proxy.search.plan import Plan, SearchRequest, model_not_found, split_alias
from proxy.search.report import completion_chunks
from proxy.state import AppState
from proxy.wire.chat import ChatCompletion, ChatCompletionRequest, ModelCard, ModelList
from proxy.wire.json_types import JSONObject

__all__ = ["ChatEndpoint", "router", "service_router"]

router = APIRouter()  # the generating route
service_router = APIRouter()  # the models, health and metrics


async def _model_cards(state: AppState) -> list[ModelCard]:
    now = int(time.time())
    cards = [ModelCard(id=await state.policy.model(), created=now, owned_by="tts-proxy")]
    cards += [
        ModelCard(id=name, created=now, owned_by="litellm")
        for name in state.settings.litellm_routes
    ]
    return cards


@service_router.get("/v1/models", dependencies=[Depends(require_key)])
async def list_models(state: State) -> ModelList:
    return ModelList(data=await _model_cards(state))


@service_router.get("/v1/models/{model:path}", dependencies=[Depends(require_key)])
async def get_model(model: str, state: State) -> ModelCard:
    """One model card, answered from what the proxy knows (the policy server need not serve it).
    A strategy alias (``beam_search-16/<model>``) names the model it searches over."""
    cards = await _model_cards(state)
    base, strategy, _ = split_alias(model)
    for card in cards:
        if model == card.id or (strategy is not None and base == card.id):
            return card.model_copy(update={"id": model})
    raise model_not_found(cards[0].id, model, state.settings.litellm_routes)


@service_router.get("/health/live")
async def live() -> dict[str, str]:
    """Liveness: the process serves requests."""
    return {"status": "ok"}


@service_router.get("/health/ready")
async def ready(state: State) -> JSONResponse:
    """Readiness: 200 while at least one policy replica can serve (not ejected) and the server
    is not shutting down, else 503."""
    available = sum(u.health.is_available for u in state.policy.upstreams)
    status = "ok" if available else "unavailable"
    if state.admission.is_closed:
        status = "shutting_down"  # out of the load balancer while in-flight requests finish
    body = {"status": status, "policy_replicas_available": available}
    return JSONResponse(body, status_code=200 if status == "ok" else 503)


@service_router.get("/health")
async def health(request: Request, state: State) -> JSONResponse:
    """What is degraded, probed now: each policy replica and the PRM by name; their addresses
    only to a caller holding a proxy API key. "ok" when all answer, "degraded" (200) while the
    proxy can still serve, "unavailable" (503) when no policy replica or the PRM answers."""
    named = {f"policy[{i}]": u for i, u in enumerate(state.policy.upstreams)}
    if state.prm is not None:
        named["prm"] = state.prm
    # gather: every probe returns its status and never raises, so nothing is left unawaited.
    results = dict(
        zip(named, await asyncio.gather(*(u.probe() for u in named.values())), strict=True)
    )
    policy_ok = any(results[f"policy[{i}]"] == "ok" for i in range(len(state.policy.upstreams)))
    can_serve = policy_ok and results.get("prm", "ok") == "ok"
    is_whole = all(result == "ok" for result in results.values())
    status = "ok" if is_whole else "degraded" if can_serve else "unavailable"
    body: JSONObject = {"status": status, "upstreams": results}
    if state.settings.api_keys and has_key(request, state):
        body["urls"] = {name: u.config.base_url for name, u in named.items()}
    return JSONResponse(body, status_code=200 if can_serve else 503)


@service_router.get("/metrics")
async def metrics(request: Request, state: State) -> Response:
    if state.settings.protect_metrics:
        await require_key(request, state)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@dataclass(frozen=True, slots=True)
class ChatEndpoint:
    """``POST /v1/chat/completions`` on the request skeleton."""

    body: ChatCompletionRequest
    id_prefix: ClassVar[str] = "chatcmpl-"
    upstream_path: ClassVar[str] = "/chat/completions"

    @property
    def is_stream(self) -> bool:
        return self.body.stream

    def search_request(self, headers: Mapping[str, str]) -> SearchRequest:
        return search_request(self.body)

    def passthrough_payload(self) -> JSONObject:
        return self.body.model_dump(exclude={"tts"}, exclude_none=True)

    async def passthrough(self, call: Call, plan: Plan, payload: JSONObject) -> Response:
        return await relay(call, self.upstream_path, payload, plan, is_stream=self.is_stream)

    async def large_api(self, call: Call, plan: Plan, request: SearchRequest) -> Response:
        chat = self.body.model_dump(exclude={"tts", "model"}, exclude_none=True)
        return await large_api_answer(call, plan, chat)

    def render(self, call: Call, completion: ChatCompletion) -> JSONObject:
        return completion.model_dump(exclude_none=False)

    def stream(
        self, call: Call, work: Callable[[], Awaitable[ChatCompletion]]
    ) -> StreamingResponse:
        options = self.body.stream_options
        include_usage = bool(options and options.include_usage)
        return call.events(work, finish=lambda done: _chunk_events(done, include_usage))


add_route(
    router,
    "/v1/chat/completions",
    ChatEndpoint,
    ChatCompletionRequest,
    name="chat_completions",
    response_model=ChatCompletion,
)


def _chunk_events(completion: ChatCompletion, include_usage: bool) -> Iterator[bytes]:
    """A finished search as ``chat.completion.chunk`` events."""
    for chunk in completion_chunks(completion, include_usage):
        yield sse(chunk_dict(chunk, include_usage))
    yield DONE


def search_request(body: ChatCompletionRequest) -> SearchRequest:
    """A chat body as the search reads it."""
    return SearchRequest(
        model=body.model,
        messages=tuple(m.model_dump(exclude_none=True) for m in body.messages),
        tts=body.tts.model_dump(exclude_none=True) if body.tts else {},
        n=body.n,
        stop=tuple(body.stop) if isinstance(body.stop, list) else body.stop,
        seed=body.seed,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        extra=body.model_extra or {},
        passthrough_reason=_passthrough_reason(body),
    )


def _passthrough_reason(body: ChatCompletionRequest) -> str | None:
    """Why this chat request goes to the policy server unchanged, or None."""
    if body.tools or body.tool_choice not in (None, "none"):
        return "tools cannot be searched over: passed through unchanged"
    if "functions" in (body.model_extra or {}):
        return "functions cannot be searched over: passed through unchanged"
    if body.response_format and body.response_format.get("type") not in (None, "text"):
        return "response_format cannot be searched over: passed through unchanged"
    for message in body.messages:
        if isinstance(message.content, list) and any(
            not (isinstance(part, dict) and part.get("type") == "text") for part in message.content
        ):
            return "non-text content cannot be searched over: passed through unchanged"
    return None
