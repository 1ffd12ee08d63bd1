"""Typed errors of the proxy and their OpenAI-shaped rendering.

Hierarchy::

    ProxyError(status_code, type, code, param)
     +-- InvalidRequestError      400 invalid_request_error
     +-- AuthenticationError      401 authentication_error
     +-- ModelNotFoundError       404 invalid_request_error / model_not_found
     +-- OverloadedError          429 rate_limit_error / overloaded
     +-- UpstreamError            502 upstream_error
     |    +-- UpstreamTimeoutError  504 upstream_timeout
     +-- InternalError            500 internal_error

Every error leaves the proxy as ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "InternalError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "OverloadedError",
    "ProxyError",
    "UpstreamError",
    "UpstreamTimeoutError",
]


class ProxyError(Exception):
    """Base of every error the proxy turns into an HTTP response."""

    status_code = 500
    type = "internal_error"
    code: str | None = None

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


class OverloadedError(ProxyError):
    status_code = 429
    type = "rate_limit_error"
    code = "overloaded"


class UpstreamError(ProxyError):
    status_code = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeoutError(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


class InternalError(ProxyError):
    status_code = 500
    type = "internal_error"
    code = "internal_error"
