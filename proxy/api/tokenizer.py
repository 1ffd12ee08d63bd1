"""vLLM's tokenizer endpoints, relayed to a policy replica as vLLM serves them, at the server
root: ``POST /tokenize``, ``POST /detokenize`` and ``GET /tokenizer_info``. Clients count or
build prompts with the policy's own tokenizer through them; lm-eval's ``local-completions``
asks ``/tokenizer_info`` and ``/tokenize`` for its remote tokenizer (log-likelihood tasks).

A body's ``model`` (a strategy alias too) must name the served model and is sent as its served
name; the rest goes as the client wrote it. Not searched, not admitted, not counted as requests:
the upstream calls are counted in ``tts_upstream_calls_total``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from proxy.api.deps import ERROR_RESPONSES, State, require_key
from proxy.errors import InvalidRequestError, NotFoundError, UpstreamError
from proxy.search.plan import checked_model
from proxy.state import AppState
from proxy.upstream.client import Upstream
from proxy.wire.chat import ChatMessage
from proxy.wire.json_types import JSONObject
from proxy.wire.text import INVALID_TEXT, invalid_text_at

__all__ = ["router"]

router = APIRouter()


class TokenizeRequest(BaseModel):
    """A ``/tokenize`` body as vLLM takes it: a ``prompt``, or chat ``messages`` rendered with the
    model's template (vLLM's other fields, such as ``add_generation_prompt``, pass as written)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either prompt or messages")
        return self


class DetokenizeRequest(BaseModel):
    """A ``/detokenize`` body as vLLM takes it."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0)]]


_KEYED: JSONObject = {"dependencies": [Depends(require_key)], "responses": ERROR_RESPONSES}


@router.post("/tokenize", summary="The policy's tokens for a prompt or chat", **_KEYED)
async def tokenize(body: TokenizeRequest, state: State) -> JSONResponse:
    return await _relay(state, "tokenize", body)


@router.post("/detokenize", summary="The policy's text for token ids", **_KEYED)
async def detokenize(body: DetokenizeRequest, state: State) -> JSONResponse:
    return await _relay(state, "detokenize", body)


@router.get("/tokenizer_info", summary="The policy's tokenizer configuration", **_KEYED)
async def tokenizer_info(state: State) -> JSONResponse:
    return await _relay(state, "tokenizer_info", None)


async def _relay(state: AppState, name: str, body: BaseModel | None) -> JSONResponse:
    payload: JSONObject | None = None
    if body is not None:
        payload = body.model_dump(exclude_unset=True)
        bad = invalid_text_at(payload)
        if bad is not None:
            raise InvalidRequestError(f"{bad}: {INVALID_TEXT}", param=bad)
        if payload.get("model") is not None:
            model = str(payload["model"])
            payload["model"] = await checked_model(model, state.policy.model, state.settings)

    async def call(upstream: Upstream) -> JSONObject:
        path = "//" + name  # at the server root, outside /v1
        if payload is None:
            return await upstream.get_json(path)
        return await upstream.post_json(path, payload)

    try:
        data, _ = await state.policy.with_failover(state.policy.pick(), call)
    except UpstreamError as exc:
        if exc.upstream_status == 404:
            raise NotFoundError(
                f"the policy server does not serve /{name} (vLLM serves /tokenizer_info only "
                "when started with --enable-tokenizer-info-endpoint)"
            ) from None
        raise
    return JSONResponse(data)
