"""Search traces: ``/v1/tts/traces`` (JSON, behind the API key) and the pages that draw them
(``/ui/traces``: static HTML and a small script, no build step, nothing from a CDN; the script
fetches the JSON with the key the page is given, so the pages themselves hold no data).
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, Response

from proxy.api.deps import ERROR_RESPONSES, State, require_key
from proxy.errors import NotFoundError
from proxy.observability.traces import SearchTrace, TraceList, TraceSummary

__all__ = ["router"]

router = APIRouter()
_ASSETS = {"trace.js": "text/javascript", "trace.css": "text/css"}


@router.get(
    "/v1/tts/traces",
    dependencies=[Depends(require_key)],
    response_model=TraceList,
    responses=ERROR_RESPONSES,
    summary="Recent searches' traces, newest first",
)
async def list_traces(
    state: State,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> TraceList:
    return TraceList(data=[_summary(t) for t in state.traces.recent(limit)])


def _summary(t: SearchTrace) -> TraceSummary:
    return TraceSummary(
        request_id=t.request_id,
        created=t.created,
        model=t.model,
        strategy=t.strategy,
        answer=t.answer,
        nodes=len(t.nodes),
        latency_ms=t.latency_ms,
    )


@router.get(
    "/v1/tts/traces/{request_id}",
    dependencies=[Depends(require_key)],
    response_model=SearchTrace,
    responses=ERROR_RESPONSES,
    summary="One search's trace: its tree, answers and upstream calls",
)
async def get_trace(request_id: str, state: State) -> SearchTrace:
    trace = state.traces.get(request_id)
    if trace is None and state.archive is not None:
        trace = await state.archive.load(request_id)
    if trace is None:
        settings = state.settings
        raise NotFoundError(
            f"no trace for request {request_id!r}: the id is the X-Request-Id response header "
            f"of a searched request, and traces are kept for "
            f"{settings.traces.store_max_age_s:g} s, {settings.traces.store_max} at most "
            "(PROXY_TRACES__STORE_MAX*; PROXY_TRACES__PERSIST keeps them in the experiment store)",
            param="request_id",
            code="trace_not_found",
        )
    return trace


def _asset(name: str) -> str:
    return resources.files("proxy").joinpath("ui", name).read_text(encoding="utf-8")


@router.get("/ui/traces", include_in_schema=False)
async def traces_page() -> HTMLResponse:
    return HTMLResponse(_asset("traces.html"))


@router.get("/ui/traces/{request_id}", include_in_schema=False)
async def trace_page(request_id: str) -> HTMLResponse:
    return HTMLResponse(_asset("traces.html"))  # the same page: its script reads the path


@router.get("/ui/static/{name}", include_in_schema=False)
async def static_asset(name: str) -> Response:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFoundError(f"no such file: {name!r}", param="name")
    return Response(_asset(name), media_type=media_type, headers={"Cache-Control": "no-cache"})
