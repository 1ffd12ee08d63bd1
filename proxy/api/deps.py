"""What every handler shares: the app state dependency, the API-key check, and what every
searched endpoint documents (its error responses and ``X-TTS-*`` headers).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from proxy.errors import AuthenticationError
from proxy.state import AppState
from proxy.wire.chat import ErrorResponse, TtsOptions
from proxy.wire.json_types import JSONObject

__all__ = [
    "ERROR_RESPONSES",
    "State",
    "control_headers",
    "get_state",
    "has_key",
    "require_key",
]

# Documented in /openapi.json for every endpoint: the OpenAI error shape.
ERROR_RESPONSES: dict[int | str, JSONObject] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "invalid request (the message and param say what to change)"),
        (401, "missing or invalid API key"),
        (404, "unknown model or endpoint"),
        (429, "too many searches in flight"),
        (502, "the policy or PRM server failed"),
        (504, "the search or an upstream timed out"),
    )
}


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.tts
    return state


State = Annotated[AppState, Depends(get_state)]  # a handler's parameter: the app's state


def has_key(request: Request, state: AppState) -> bool:
    """Whether the request carries one of the proxy's API keys (constant-time comparison), as
    ``Authorization: Bearer`` (OpenAI's SDKs) or ``x-api-key`` (Anthropic's)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].encode()
    else:
        token = request.headers.get("x-api-key", "").encode()
    matches = [
        hmac.compare_digest(token, k.get_secret_value().encode()) for k in state.settings.api_keys
    ]
    return any(matches)


async def require_key(request: Request, state: State) -> None:
    if state.settings.api_keys and not has_key(request, state):
        raise AuthenticationError(
            "missing or invalid API key (Authorization: Bearer ..., or x-api-key: ...)"
        )


def _header_parameters() -> list[JSONObject]:
    """The ``X-TTS-*`` headers, documented as the ``tts`` object's fields they override."""
    schema = TtsOptions.model_json_schema()["properties"]
    return [
        {
            "name": "X-TTS-" + "-".join(p.title() for p in name.split("_")),
            "in": "header",
            "required": False,
            "description": f"overrides tts.{name}",
            "schema": {"type": "string"}
            | (
                {"enum": [str(v) for v in spec["anyOf"][0]["enum"]]}
                if "enum" in spec.get("anyOf", [{}])[0]
                else {}
            ),
        }
        for name, spec in schema.items()
    ]


def control_headers() -> JSONObject:
    """A searched endpoint's ``openapi_extra``: its X-TTS-* headers (a new dict each time:
    FastAPI merges into it)."""
    return {"parameters": _header_parameters()}
