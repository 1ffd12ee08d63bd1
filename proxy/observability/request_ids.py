"""The id of the request being served, on every log line and in 5xx bodies.

``serve`` sets it (the id the client gets in ``X-Request-Id``) in a context variable, which
follows the request's task and the tasks it starts; ``RequestIdFilter`` puts it on each log
record as ``request_id`` (``-`` outside a request).
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

__all__ = ["REQUEST_ID", "RequestIdFilter"]

REQUEST_ID: ContextVar[str] = ContextVar("tts_request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record a handler emits (attach it to handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True
