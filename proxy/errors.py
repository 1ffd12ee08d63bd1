"""Typed errors of the proxy and their OpenAI-shaped rendering.

Hierarchy::

    ProxyError(status_code, type, code, param)
     +-- InvalidRequestError      400 invalid_request_error
     +-- AuthenticationError      401 authentication_error
     +-- ModelNotFoundError       404 invalid_request_error / model_not_found
     +-- NotFoundError            404 invalid_request_error / not_found (an unknown route)
     +-- MethodNotAllowedError    405 invalid_request_error / method_not_allowed
     +-- OverloadedError          429 rate_limit_error / overloaded
     +-- ShuttingDownError        503 server_error / server_shutting_down (grace period over)
     +-- DeadlineExceededError    504 timeout_error / deadline_exceeded (the client's own deadline)
     +-- ClientDisconnectedError  499 client_disconnected (nobody reads it; logged at INFO)
     +-- UpstreamError            502 upstream_error
     |    +-- UpstreamTimeoutError  504 upstream_timeout
     +-- InternalError            500 internal_error

Every error leaves the proxy as ``{"error": {"message", "type", "param", "code"}}``, or on the
Anthropic Messages API (``/v1/messages``) in its shape, ``{"type": "error", "error": {"type",
"message"}}`` (``ProxyError.anthropic``: a full server is its 529 ``overloaded_error`` there).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ENDPOINTS",
    "AuthenticationError",
    "ClientDisconnectedError",
    "DeadlineExceededError",
    "HttpStatusError",
    "InternalError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "ModelNotFoundError",
    "NotFoundError",
    "OverloadedError",
    "ProxyError",
    "ShuttingDownError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "anthropic_type",
    "http_error",
    "speaks_anthropic",
]

# What this server answers; named in every 404/405 so a client's author sees what to change.
ENDPOINTS = (
    "POST /v1/chat/completions",
    "POST /v1/responses",
    "POST /v1/completions",
    "POST /v1/messages",
    "POST /v1/messages/count_tokens",
    "GET /v1/models",
    "GET /v1/models/{model}",
    "GET /v1/tts/traces",
    "GET /v1/tts/traces/{request_id}",
    "GET /ui/traces",
    "GET /health",
    "GET /metrics",
    "POST /tokenize",
    "POST /detokenize",
    "GET /tokenizer_info",
)


class ProxyError(Exception):
    """Base of every error the proxy turns into an HTTP response."""

    status_code = 500
    type = "internal_error"
    code: str | None = None
    headers: dict[str, str] | None = None  # sent with the error response (e.g. Retry-After)

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def anthropic(self, message: str | None = None) -> tuple[int, dict[str, Any]]:
        """The status and body of this error on the Anthropic Messages API (``message``
        instead of its own, if given)."""
        status = 529 if isinstance(self, OverloadedError) else self.status_code
        text = self.message if message is None else message
        return status, {"type": "error", "error": {"type": anthropic_type(status), "message": text}}


# Anthropic's error types by status (https://docs.claude.com/en/api/errors).
_ANTHROPIC_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status."""
    default = "api_error" if status >= 500 else "invalid_request_error"
    return _ANTHROPIC_TYPES.get(status, default)


def speaks_anthropic(path: str) -> bool:
    """Whether errors on ``path`` take the Anthropic shape: the Messages API's paths, and a
    doubled or misplaced one (``/v1/v1/messages``) whose client expects that shape."""
    return path.rstrip("/").endswith("/messages") or path.startswith("/v1/messages/")


class InvalidRequestError(ProxyError):
    status_code = 400
    type = "invalid_request_error"


class AuthenticationError(ProxyError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFoundError(ProxyError):
    status_code = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFoundError(ProxyError):
    status_code = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowedError(ProxyError):
    status_code = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class OverloadedError(ProxyError):
    status_code = 429
    type = "rate_limit_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


class ShuttingDownError(ProxyError):
    """The server is shutting down and the grace period ended before the request finished."""

    status_code = 503
    type = "server_error"
    code = "server_shutting_down"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": "1"}


class DeadlineExceededError(ProxyError):
    """The request's own deadline (X-TTS-Timeout-Ms) passed before anything was generated."""

    status_code = 504
    type = "timeout_error"
    code = "deadline_exceeded"


class ClientDisconnectedError(ProxyError):
    """The client went away; its upstream calls were cancelled."""

    status_code = 499
    type = "client_disconnected"
    code = "client_disconnected"


class UpstreamError(ProxyError):
    status_code = 502
    type = "upstream_error"
    code = "upstream_error"
    upstream_status: int | None = None  # the upstream's own HTTP status, when it answered one


class UpstreamTimeoutError(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


class InternalError(ProxyError):
    status_code = 500
    type = "internal_error"
    code = "internal_error"


def http_error(method: str, path: str, exc: Exception) -> ProxyError:
    """A routing-level HTTP error (unknown path, wrong method, ...) as a ``ProxyError``."""
    status = int(getattr(exc, "status_code", 500))
    endpoints = "; this server has: " + ", ".join(ENDPOINTS)
    if status == 404 and speaks_anthropic(path):
        return NotFoundError(
            f"unknown endpoint {method} {path}: the Messages API is POST /v1/messages here. Set "
            "ANTHROPIC_BASE_URL (or the SDK's base_url) to the proxy's root, without /v1: the "
            "SDKs append /v1/messages themselves"
        )
    if status == 404:
        return NotFoundError(f"unknown endpoint {method} {path}{endpoints}")
    if status == 405:
        error = MethodNotAllowedError(f"method {method} is not allowed on {path}{endpoints}")
        allow = (getattr(exc, "headers", None) or {}).get("Allow")
        error.headers = {"Allow": allow} if allow else None  # HTTP requires it with a 405
        return error
    if status == 400:  # the body did not parse (invalid, or nested too deeply)
        return InvalidRequestError(
            "the request body could not be parsed as JSON (invalid, or nested too deeply); "
            "send a JSON object"
        )
    return HttpStatusError(status, str(getattr(exc, "detail", exc)))


class HttpStatusError(ProxyError):
    """Any other routing-level HTTP status (``code`` stays null: it is never the status)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status
        self.type = "invalid_request_error" if status < 500 else "internal_error"
