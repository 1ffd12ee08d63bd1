"""``create_app(settings, scorer=None)``: the PRM scoring service.

The model loads in the lifespan (tests pass a ready ``scorer``). Errors are OpenAI-shaped:
``{"error": {"message", "type", "param", "code"}}``. Must not import ``proxy`` or ``strategies``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from prm_server.batcher import Batcher, QueueFullError
from prm_server.metrics import Metrics
from prm_server.protocol import ScoreRequest, ScoreResponse, ScoreUsage
from prm_server.scorer import BackendError, Scorer
from prm_server.settings import PrmServerSettings

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """The service's one error type, answered in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        kind = _KINDS.get(
            self.status, "invalid_request_error" if self.status < 500 else "server_error"
        )
        body = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": body}, status_code=self.status, headers=self.headers)


_KINDS = {401: "authentication_error"}


def _load_scorer(settings: PrmServerSettings) -> Scorer:
    if settings.model is None:
        raise SystemExit("no model: pass --model PATH (a local checkpoint folder)")
    if settings.backend == "vllm_pooling":
        from prm_server.pooling import PoolingScorer

        return PoolingScorer.from_settings(settings)
    from prm_server.scorer import load_hf_scorer

    return load_hf_scorer(
        settings.model,
        settings.family,
        name=settings.served_name,
        device=settings.device,
        dtype=settings.dtype,
        kv_cache_tokens=settings.kv_cache_tokens,
        pass_tokens=settings.max_batch_tokens,
    )


def create_app(settings: PrmServerSettings, scorer: Scorer | None = None) -> FastAPI:
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded: Scorer = (
            scorer if scorer is not None else await asyncio.to_thread(_load_scorer, settings)
        )
        batcher = Batcher(
            loaded,
            metrics,
            max_wait_s=settings.max_wait_ms / 1000,
            max_batch_tokens=settings.max_batch_tokens,
            max_queue_items=settings.max_queue_items,
            cache_entries=settings.cache_entries,
        )
        app.state.batcher = batcher
        task = asyncio.create_task(batcher.run(), name="prm-batcher")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            close = getattr(loaded, "close", None)
            if scorer is None and close is not None:
                close()

    # With keys, the schema and its pages are closed too (they list what the keys guard).
    is_open = not settings.api_keys
    app = FastAPI(
        title="tts-prm",
        lifespan=lifespan,
        docs_url="/docs" if is_open else None,
        redoc_url="/redoc" if is_open else None,
        openapi_url="/openapi.json" if is_open else None,
    )
    _answer_errors(app, metrics)

    require_key = _key_check(settings)

    @app.post("/v1/score", dependencies=[Depends(require_key)])
    async def score(body: ScoreRequest, request: Request) -> ScoreResponse:
        batcher: Batcher = request.app.state.batcher
        return await _score(batcher, settings, body, metrics)

    @app.get("/v1/models", dependencies=[Depends(require_key)])
    async def models(request: Request) -> dict[str, Any]:
        scorer_: Scorer = request.app.state.batcher.scorer
        card = {
            "id": scorer_.name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "tts-prm",
            "family": scorer_.family,
            "max_tokens": _limit(settings, scorer_),
        }
        return {"object": "list", "data": [card]}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", dependencies=[Depends(require_key)])
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _answer_errors(app: FastAPI, metrics: Metrics) -> None:
    """Every error in OpenAI's shape: ours, validation, routing (404, 405 with ``Allow``), and
    anything unexpected."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        metrics.requests.labels(str(exc.status)).inc()
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return await _api_error(request, ApiError(400, str(first["msg"]), param))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        what = {404: "no such endpoint", 405: "method not allowed on this endpoint"}
        message = f"{request.method} {request.url.path}: {what.get(exc.status_code, exc.detail)}"
        return await _api_error(request, ApiError(exc.status_code, message, headers=exc.headers))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error on %s", request.url.path, exc_info=exc)
        return await _api_error(request, ApiError(500, "internal error; see the server's logs"))


def _key_check(settings: PrmServerSettings) -> Any:
    """A dependency: Bearer keys when ``api_keys`` is set (constant-time); /health stays open."""

    def require_key(request: Request) -> None:
        if not settings.api_keys:
            return
        header = request.headers.get("authorization", "")
        token = header[7:].encode() if header.lower().startswith("bearer ") else b""
        keys = [k.get_secret_value().encode() for k in settings.api_keys]
        if not any([hmac.compare_digest(token, key) for key in keys]):
            raise ApiError(
                401,
                "missing or invalid API key (Authorization: Bearer ...)",
                code="invalid_api_key",
            )

    return require_key


def _limit(settings: PrmServerSettings, scorer: Scorer) -> int:
    return settings.max_tokens or scorer.max_tokens


async def _score(
    batcher: Batcher, settings: PrmServerSettings, body: ScoreRequest, metrics: Metrics
) -> ScoreResponse:
    scorer = batcher.scorer
    if body.model not in (None, scorer.name):
        raise ApiError(
            404,
            f"model {body.model!r} is not served here ({scorer.name!r} is)",
            "model",
            "model_not_found",
        )
    if len(body.candidates) > settings.max_candidates:
        raise ApiError(
            400,
            f"at most {settings.max_candidates} candidates per request (PRM_SERVER_MAX_CANDIDATES)",
            "candidates",
        )
    encoded = []
    for i, steps in enumerate(body.candidates):
        if not steps or any(not s.strip() for s in steps):
            raise ApiError(400, f"candidate {i} has an empty step (or no steps)", "candidates")
        try:
            item = scorer.encode(body.problem, [s.strip() for s in steps])
        except ValueError as exc:
            raise ApiError(400, f"candidate {i}: {exc}", "candidates") from exc
        if len(item.ids) > _limit(settings, scorer):
            raise ApiError(
                413,
                f"candidate {i} is {len(item.ids)} tokens, over the model's limit "
                f"of {_limit(settings, scorer)} (PRM_SERVER_MAX_TOKENS)",
                "candidates",
                "context_length_exceeded",
            )
        encoded.append(item)
    try:
        scores = await batcher.score(encoded)
    except QueueFullError as exc:
        raise ApiError(
            503, f"the PRM is overloaded: {exc}; retry shortly", None, "overloaded"
        ) from exc
    except BackendError as exc:
        raise ApiError(502, str(exc), None, "upstream_error") from exc
    metrics.requests.labels("200").inc()
    tokens = sum(len(e.ids) for e in encoded)
    return ScoreResponse(model=scorer.name, scores=scores, usage=ScoreUsage(prompt_tokens=tokens))
