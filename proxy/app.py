"""``create_app(settings)``: the FastAPI app, its lifespan (pooled upstream clients) and the error
handlers that give every failure OpenAI's ``{"error": {...}}`` shape.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry.sdk.trace.export import SpanExporter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.api.chat import router, service_router
from proxy.api.completions import router as completions_router
from proxy.api.deps import has_key
from proxy.api.messages import router as messages_router
from proxy.api.responses import router as responses_router
from proxy.api.tokenizer import router as tokenizer_router
from proxy.api.traces import router as traces_router
from proxy.errors import (
    ClientDisconnectedError,
    InternalError,
    InvalidRequestError,
    ProxyError,
    UpstreamError,
    http_error,
    speaks_anthropic,
)
from proxy.observability.metrics import Metrics, RequestTally
from proxy.observability.request_ids import REQUEST_ID
from proxy.observability.telemetry import RequestSpans, Telemetry
from proxy.observability.trace_archive import TraceArchive
from proxy.observability.traces import TraceStore
from proxy.search.answers import AnswerPool
from proxy.search.profiles import AutoRules, RulesError, load_rules
from proxy.server.cancel import Drain
from proxy.server.limits import Admission, BodyLimit, DocsGuard
from proxy.settings import ProxySettings
from proxy.shadow.comparisons import Shadow
from proxy.state import AppState
from proxy.store import StoreLink
from proxy.upstream.client import Upstream, UpstreamConfig
from proxy.upstream.litellm import load_litellm
from proxy.upstream.policy import PromptRenderer
from proxy.upstream.replicas import PolicyPool

__all__ = ["create_app"]

logger = logging.getLogger(__name__)
_DOCS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def _upstream(
    settings: ProxySettings, kind: str, url: str, metrics: Metrics, telemetry: Telemetry
) -> Upstream:
    """A pooled client for a ``policy``, ``prm`` or ``verifier`` server, from its settings."""
    limits = {"policy": settings.policy, "prm": settings.prm, "verifier": settings.verifier}[kind]
    key = limits.api_key
    return Upstream(
        UpstreamConfig(
            kind=kind,
            base_url=url,
            api_key=key.get_secret_value() if key else None,
            connect_timeout_s=limits.connect_timeout_s,
            timeout_s=limits.timeout_s,
            max_connections=limits.max_connections,
            max_retries=limits.max_retries,
            timeout_setting=f"PROXY_{kind.upper()}__TIMEOUT_S",
            eject_s=settings.policy_eject_s,
        ),
        metrics,
        telemetry,
    )


def _v1(url: str | None) -> str | None:
    return url if url is None or url.endswith("/v1") else url + "/v1"


def _upstreams(
    settings: ProxySettings, metrics: Metrics, telemetry: Telemetry
) -> tuple[list[Upstream], Upstream | None, Upstream | None]:
    """The policy replicas' clients, and the PRM's and the verifier's when configured."""
    policies = [
        _upstream(settings, "policy", url, metrics, telemetry) for url in settings.policy_urls
    ]
    prm_url, verifier_url = _v1(settings.prm_url), _v1(settings.verifier_url)
    prm = _upstream(settings, "prm", prm_url, metrics, telemetry) if prm_url else None
    verifier = (
        _upstream(settings, "verifier", verifier_url, metrics, telemetry) if verifier_url else None
    )
    return policies, prm, verifier


def _log(request: Request, exc: ProxyError) -> None:
    """A disconnect is one INFO line; the proxy's own 5xx a WARNING (no request text)."""
    if isinstance(exc, ClientDisconnectedError):
        logger.info(
            "%s %s: client disconnected, upstream calls cancelled", request.method, request.url.path
        )
    elif exc.status_code >= 500:
        logger.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc)


class LastResort:
    """ASGI: an error no handler took is answered here with the typed 500 and not raised on.
    Raised past the app (as Starlette's own last handler does after answering), uvicorn would
    close the connection without ``Connection: close``, so a client's next request on it fails.
    After the response has started nothing can be answered: the error goes on, as it must."""

    def __init__(
        self, app: ASGIApp, respond: Callable[[Request, Exception], Awaitable[Response]]
    ) -> None:
        self._app = app
        self._respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, receive, sending)
        except Exception as exc:
            if started:
                raise
            response = await self._respond(Request(scope, receive), exc)
            await response(scope, receive, send)


def _keyed(app: FastAPI, scope: Scope) -> bool:
    return has_key(Request(scope), app.state.tts)


def error_response(exc: ProxyError, path: str = "") -> JSONResponse:
    """The error in OpenAI's shape, or Anthropic's on the Messages API (``path``); with the
    request's id (``X-Request-Id``, and in the message of a 5xx: what to quote when reporting
    it)."""
    headers = dict(exc.headers or {})
    request_id = REQUEST_ID.get()
    message = exc.message
    if request_id != "-":
        headers["X-Request-Id"] = request_id
        if exc.status_code >= 500:
            message = f"{exc.message} (request id {request_id})"
    if speaks_anthropic(path):
        status, shaped = exc.anthropic(message)
        if request_id != "-":
            shaped["request_id"] = request_id
        return JSONResponse(shaped, status_code=status, headers=headers)
    body = exc.body()
    body["error"]["message"] = message
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


def validation_error(errors: Sequence[Any]) -> InvalidRequestError:
    """A request-body validation failure as a 400 naming the first bad parameter."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return InvalidRequestError(
            f"the request body is not valid JSON (send a JSON object): {first.get('msg')}"
        )
    loc = [str(p) for p in first.get("loc", ())[1:]]
    if not loc:
        return InvalidRequestError(
            "the request body must be a JSON object (Content-Type: application/json) with the "
            f"endpoint's fields; got: {first['msg']}"
        )
    param = ".".join(loc)
    return InvalidRequestError(f"{param}: {first['msg']}", param=param)


async def _records(
    settings: ProxySettings, metrics: Metrics, telemetry: Telemetry
) -> tuple[Shadow, TraceArchive | None, Callable[[], Awaitable[None]]]:
    """What writes to the experiment store — shadow comparisons, and traces with
    ``traces.persist`` — and how to close them. A bad store URL fails start-up when either is
    configured."""
    store = StoreLink(settings.store_url)
    shadow = Shadow(settings, metrics, store, telemetry)
    await shadow.open()
    archive = TraceArchive(store, metrics) if settings.traces.persist else None
    if archive is not None:
        await store.get()

    async def close() -> None:
        await shadow.aclose()
        if archive is not None:
            await archive.aclose()
        await store.aclose()

    return shadow, archive, close


async def _check_fitted_model(rules: AutoRules, pool: PolicyPool) -> None:
    """A rules file fitted for another model must not steer this one: refuse to start."""
    try:
        served = await pool.model()
    except UpstreamError as exc:
        raise RulesError(
            f"{rules.name}: fitted for model {rules.model!r}, and the policy's /v1/models could "
            f"not be read to compare ({exc.message}); start the policy first, or set "
            "PROXY_AUTO_RULES_ANY_MODEL=true"
        ) from None
    if served != rules.model:
        raise RulesError(
            f"{rules.name}: fitted for model {rules.model!r} but the policy serves {served!r}; "
            "fit it again for this model (tts-eval calibrate), or set "
            "PROXY_AUTO_RULES_ANY_MODEL=true to use it anyway"
        )


def _include_routes(app: FastAPI) -> None:
    """Starlette tries the routes in order: the generating ones first, FastAPI's own pages (the
    schema and the docs, added when the app is made) last."""
    own_pages = list(app.router.routes)
    app.router.routes.clear()
    for api in (router, completions_router, responses_router, messages_router):
        app.include_router(api)
    for api in (service_router, traces_router, tokenizer_router):
        app.include_router(api)
    app.router.routes.extend(own_pages)


def create_app(settings: ProxySettings, *, span_exporter: SpanExporter | None = None) -> FastAPI:
    """Build the proxy app; upstream clients live from startup to shutdown. ``span_exporter``
    receives every span at once (tests); by default spans go over OTLP when configured."""
    metrics = Metrics()
    rules = load_rules(settings.auto_rules_file)  # a bad rules file fails at start-up
    telemetry = Telemetry.create(
        endpoint=settings.otel_exporter_otlp_endpoint,
        traces_endpoint=settings.otel_exporter_otlp_traces_endpoint,
        service_name=settings.otel_service_name,
        exporter=span_exporter,
    )

    drain = Drain()  # begun by the server on SIGTERM (proxy.server.serving)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Answer workers start warm (sympy imports, ~0.5 s) before the first request needs them.
        answers = AnswerPool(settings.answer_workers, settings.answer_deadline_s, metrics)
        await answers.start()
        policies, prm, verifier = _upstreams(settings, metrics, telemetry)
        shadow, archive, close_records = await _records(settings, metrics, telemetry)
        if settings.litellm_routes or settings.shadow.model:
            await load_litellm()  # at start-up, not in the first routed request
        pool = PolicyPool(policies, settings.policy_model)
        app.state.tts = AppState(
            settings=settings,
            metrics=metrics,
            policy=pool,
            prm=prm,
            renderer=PromptRenderer(settings.prompt_cache_bytes),
            admission=Admission(settings.max_concurrent_searches, metrics),
            rules=rules,
            shadow=shadow,
            traces=TraceStore(
                settings.traces.store_max,
                settings.traces.store_max_age_s,
                settings.traces.store_max_bytes,
            ),
            telemetry=telemetry,
            archive=archive,
            verifier=verifier,
            answers=answers,
            drain=drain,
        )
        try:
            if rules.model is not None and not settings.auto_rules_any_model:
                await _check_fitted_model(rules, pool)
            async with pool.probing(settings.policy_probe_interval_s):
                yield
        finally:
            await close_records()
            answers.close()
            for upstream in [*policies, *(u for u in (prm, verifier) if u is not None)]:
                await upstream.aclose()
            telemetry.shutdown()

    # One schema per model (validation mode): TtsReport drops absent sections when it serializes.
    app = FastAPI(title="tts-proxy", lifespan=lifespan, separate_input_output_schemas=False)
    app.state.drain = drain
    _include_routes(app)

    @app.exception_handler(ProxyError)
    async def _proxy_error(request: Request, exc: ProxyError) -> JSONResponse:
        tally: RequestTally = getattr(request.state, "tally", None) or RequestTally(metrics)
        tally.error(exc)  # once: an error after a counted outcome is not counted again
        _log(request, exc)
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await _proxy_error(request, validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return await _proxy_error(request, http_error(request.method, request.url.path, exc))

    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        path, request_id = request.url.path, REQUEST_ID.get()
        logger.error("unhandled error on %s (request id %s)", path, request_id, exc_info=exc)
        return await _proxy_error(request, InternalError("internal error; see the proxy's logs"))

    # Innermost of the middleware, so spans and limits see the typed 500 as any other answer.
    app.add_middleware(LastResort, respond=_unexpected)
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_request_bytes, read_timeout_s=settings.body_read_timeout_s
    )
    app.add_middleware(RequestSpans, telemetry=telemetry)

    if settings.protect_docs and settings.api_keys:
        app.add_middleware(DocsGuard, paths=_DOCS, allowed=lambda scope: _keyed(app, scope))

    return app
