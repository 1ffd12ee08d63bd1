"""Outbound HTTP: pooled connections per upstream server, with bounded jittered retries and the
single place where httpx exceptions become ``ProxyError``s (the policy's replicas over them:
``proxy.upstream.replicas``).

Retries (tenacity): connect errors, dropped keep-alive connections, 429 and 5xx only, at most
``max_retries`` extra attempts, honouring ``Retry-After`` and never past the caller's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TypeVar, cast

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from proxy.errors import (
    InvalidRequestError,
    ProxyError,
    UpstreamError,
    UpstreamTimeoutError,
)
from proxy.observability.metrics import Metrics
from proxy.observability.telemetry import Telemetry, record_usage
from proxy.upstream.transport import AiohttpTransport, client_timeout
from proxy.wire.json_types import JSONObject
from proxy.wire.text import upstream_json

__all__ = ["Health", "Upstream", "UpstreamConfig"]

logger = logging.getLogger(__name__)

_MAX_RETRY_AFTER_S = 10.0
_PROBE_TIMEOUT = client_timeout(httpx.Timeout(5.0))
_USER_AGENT = "tts-proxy"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """How to reach one upstream; ``timeout_setting`` names the setting for error messages."""

    kind: str  # "policy" | "prm" (metrics label)
    base_url: str
    api_key: str | None
    connect_timeout_s: float
    timeout_s: float
    max_connections: int
    max_retries: int
    timeout_setting: str
    eject_s: float = 10.0  # how long a failing upstream is skipped (passive ejection)


@dataclass(slots=True)
class Health:
    """Passive health: a transport error, a timeout or a 5xx (after retries) ejects the upstream
    for ``eject_s``; any success brings it back, and so does a good active probe unless a
    request timed out there: a server whose ``/health`` answers while its generations hang
    stays out until its ejection lapses and a request succeeds again (each timeout in a row
    doubles the ejection, up to 8 x ``eject_s``)."""

    eject_s: float
    failures: int = 0
    ejected_until: float = 0.0
    last_error: str | None = None
    timeouts: int = 0  # in a row; a probe cannot vouch for generations

    @property
    def is_available(self) -> bool:
        return time.monotonic() >= self.ejected_until

    def failure(self, why: str) -> None:
        self.failures += 1
        self.last_error = why
        self.ejected_until = time.monotonic() + self.eject_s

    def timed_out(self) -> None:
        self.timeouts += 1
        self.failure("timed out")
        self.ejected_until += self.eject_s * (min(2 ** (self.timeouts - 1), 8) - 1)

    def probed_ok(self) -> None:
        if not self.timeouts:
            self.success()

    def success(self) -> None:
        self.failures = 0
        self.timeouts = 0
        self.last_error = None
        self.ejected_until = 0.0


class _RetryableStatus(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class Upstream:
    """Pooled keep-alive connections to one base URL (``max_connections`` at most), opened on
    the first call and closed in the lifespan, over aiohttp's client
    (``proxy.upstream.transport``): httpx's client layers and httpcore's pure-Python pool and
    parser were the larger part of the hop's CPU (bench/profile_hop.py)."""

    def __init__(
        self, config: UpstreamConfig, metrics: Metrics, telemetry: Telemetry | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.telemetry = telemetry if telemetry is not None else Telemetry(None)
        self.in_flight = 0
        self.health = Health(config.eject_s)
        self._headers = {"User-Agent": _USER_AGENT}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"
        self._timeouts = client_timeout(
            httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        )
        self._transport = AiohttpTransport(
            config.max_connections, tls=config.base_url.startswith("https:")
        )

    @property
    def root_url(self) -> str:
        """The server root (vLLM serves ``/tokenize`` and ``/health`` outside ``/v1``)."""
        base = self.config.base_url
        return base[: -len("/v1")] if base.endswith("/v1") else base

    async def aclose(self) -> None:
        await self._transport.aclose()

    def _prepared(
        self, payload: JSONObject | None, trace_headers: dict[str, str]
    ) -> tuple[dict[str, str], bytes | None]:
        """The call's headers and body: the payload as JSON, encoded as httpx encodes it."""
        headers = self._headers | trace_headers
        if payload is None:
            return headers, None
        headers["Content-Type"] = "application/json"
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return headers, text.encode()

    @contextlib.asynccontextmanager
    async def _open(
        self, url: str, headers: dict[str, str], content: bytes | None
    ) -> AsyncIterator[httpx.Response]:
        """A POST's response, open (body unread) until the block ends."""
        response = await self._transport.open("POST", url, headers, content, self._timeouts)
        try:
            yield response
        finally:
            await response.aclose()

    async def post_json(self, path: str, payload: JSONObject) -> JSONObject:
        return await self._request_json("POST", path, payload)

    async def get_json(self, path: str) -> JSONObject:
        return await self._request_json("GET", path, None)

    async def _request_json(self, method: str, path: str, payload: JSONObject | None) -> JSONObject:
        url = self._url(path)
        started = time.perf_counter()
        outcome = "error"
        self.in_flight += 1
        span_of = self.telemetry.client_span(self.config.kind, method, path, payload)
        try:
            with span_of as (span, trace_headers), self._translate(path):
                # A total deadline, not only httpx's idle timeouts: a trickling upstream ends too.
                async with asyncio.timeout(self.config.timeout_s):
                    content = await self._with_retries(method, url, payload, trace_headers)
                data = cast("JSONObject", upstream_json(content))
                if not isinstance(data, dict):
                    raise UpstreamError(
                        f"the {self.config.kind} server's answer on {path} is not a JSON object"
                    )
                if span is not None:  # tracing on
                    record_usage(span, data)
            outcome = "ok"
            self.health.success()
            return data
        finally:
            self.in_flight -= 1
            self.metrics.upstream_calls.labels(self.config.kind, path, outcome).inc()
            self.metrics.upstream_latency.labels(self.config.kind).observe(
                time.perf_counter() - started
            )

    @contextlib.asynccontextmanager
    async def stream(self, path: str, payload: JSONObject) -> AsyncIterator[httpx.Response]:
        """An open streaming response (status already checked); closed on exit or cancellation."""
        self.in_flight += 1
        try:
            async with contextlib.AsyncExitStack() as stack:
                _, th = stack.enter_context(
                    self.telemetry.client_span(self.config.kind, "POST", path, payload)
                )
                with self._translate(path):
                    headers, content = self._prepared(payload, th)
                    response = await stack.enter_async_context(
                        self._open(self._url(path), headers, content)
                    )
                if response.status_code >= 400:
                    await response.aread()
                    with self._translate(path):
                        _raise_for_status(response)
                self.health.success()
                yield response
        finally:
            self.in_flight -= 1
            self.metrics.upstream_calls.labels(self.config.kind, path, "stream").inc()

    async def probe(self) -> str:
        """Active health probe of the server root's ``/health``: its status only (vLLM answers
        200 with an empty body). Updates the health; returns "ok" or what went wrong."""
        try:
            response = await self._transport.fetch(
                "GET", self.root_url + "/health", self._headers, None, _PROBE_TIMEOUT
            )
        except httpx.HTTPError as exc:
            why = f"unreachable ({type(exc).__name__})"
        else:
            if response.status_code < 400:
                self.health.probed_ok()
                return "ok" if self.health.timeouts == 0 else "ok, but a request timed out"
            why = f"HTTP {response.status_code}"
        self.health.failure(why)
        return why

    def _url(self, path: str) -> str:
        # Paths starting with "//" are relative to the server root, not to /v1.
        return self.root_url + path[1:] if path.startswith("//") else self.config.base_url + path

    async def _with_retries(
        self, method: str, url: str, payload: JSONObject | None, trace_headers: dict[str, str]
    ) -> bytes:
        """The body of the call's answer (a 2xx or 3xx), after retries."""
        headers, content = self._prepared(payload, trace_headers)
        # The first attempt runs outside tenacity, whose bookkeeping costs as much CPU as
        # parsing the answer; a failure worth retrying is handed to it as its first attempt's,
        # so its waits and its count of attempts are as if it had made that one too.
        try:
            return await self._attempt(method, url, content, headers)
        except Exception as exc:
            if not self.config.max_retries or not _is_retryable(exc):
                raise
            first_failure: Exception | None = exc
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=_wait,
            retry=retry_if_exception(_is_retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if first_failure is not None:
                    failure, first_failure = first_failure, None
                    raise failure
                return await self._attempt(method, url, content, headers)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _attempt(
        self, method: str, url: str, content: bytes | None, headers: dict[str, str]
    ) -> bytes:
        """One call's answer; a status worth retrying (429, 5xx) raised as ``_RetryableStatus``."""
        fetched = await self._transport.fetch(method, url, headers, content, self._timeouts)
        if fetched.status_code >= 400:
            _raise_for_status(fetched.as_httpx())
        return fetched.content

    @contextlib.contextmanager
    def _translate(self, path: str) -> Iterator[None]:
        cfg = self.config
        where = f"{cfg.kind} server at {cfg.base_url}"
        try:
            yield
        except ProxyError:  # the upstream answered (4xx): it works, the request did not
            raise
        except _RetryableStatus as exc:
            if exc.response.status_code != 429:  # busy is not broken
                self.health.failure(f"HTTP {exc.response.status_code}")
            # Its text stays out of the body and the WARNING line: it may quote the request.
            logger.debug(
                "%s HTTP %d on %s: %s",
                where,
                exc.response.status_code,
                path,
                _upstream_message(exc.response),
            )
            raise UpstreamError(
                f"{where} answered HTTP {exc.response.status_code} on {path}"
            ) from exc
        except (httpx.TimeoutException, TimeoutError) as exc:
            self.health.timed_out()
            raise UpstreamTimeoutError(
                f"{where} timed out after {cfg.timeout_s:g} s ({cfg.timeout_setting})"
            ) from exc
        except UnicodeEncodeError as exc:  # the request's text, not the upstream: no failure
            raise InvalidRequestError(
                "the request holds text that is not valid Unicode (a lone UTF-16 surrogate)"
            ) from exc
        except (httpx.TransportError, ValueError) as exc:
            # The exception's text can hold the request (a prompt): its type only.
            self.health.failure(f"transport error ({type(exc).__name__})")
            raise UpstreamError(f"could not talk to {where} ({type(exc).__name__})") from exc


def _raise_for_status(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    if status in (400, 413, 422):  # the client's request: said in our words, never the upstream's
        logger.debug("upstream HTTP %d: %s", status, _upstream_message(response))
        raise _rejection(status, _upstream_message(response))
    if status == 429 or status >= 500:
        raise _RetryableStatus(response)
    logger.debug("upstream HTTP %d: %s", status, _upstream_message(response))
    error = UpstreamError(f"the upstream server answered HTTP {status}")
    error.upstream_status = status
    raise error


_CONTEXT = re.compile(r"maximum context length is (\d+) tokens.*?requested (\d+) tokens", re.S)


def _rejection(status: int, upstream_message: str) -> InvalidRequestError:
    """A 4xx from the upstream as our own message: its text may quote the request (a prompt),
    so only what we recognise is told back — the context length, in numbers."""
    match = _CONTEXT.search(upstream_message)
    if match is not None:
        limit, asked = match.groups()
        return InvalidRequestError(
            f"the request needs {asked} tokens, more than the policy model's context length of "
            f"{limit}; shorten the messages or lower max_tokens",
            param="messages",
            code="context_length_exceeded",
        )
    return InvalidRequestError(
        f"the upstream server rejected the request (HTTP {status}); its own message is in the "
        "proxy's debug log"
    )


def _upstream_message(response: httpx.Response) -> str:
    """An OpenAI-style error's ``message`` (at most 300 characters); never raw body text."""
    try:
        body = upstream_json(response.content)
    except ValueError:
        return f"(a non-JSON body of {len(response.content)} bytes)"
    error = body.get("error", body) if isinstance(body, dict) else body
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str):
        return f"(no error message; HTTP {response.status_code})"
    return message if len(message) <= 300 else message[:300] + "…"


def _is_retryable(exc: BaseException) -> bool:
    # A pooled keep-alive connection the server had closed (RemoteProtocolError) or reset
    # (ReadError, WriteError), no response received: a generation is safe to ask again.
    retryable = _RetryableStatus | httpx.ConnectError | httpx.ConnectTimeout
    dropped = httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError
    return isinstance(exc, retryable | dropped)


_jitter = wait_random_exponential(multiplier=0.25, max=4.0)


def _wait(state: RetryCallState) -> float:
    """Retry-After when the upstream sent one (capped), else jittered exponential backoff."""
    outcome = state.outcome
    exc = outcome.exception() if outcome is not None else None
    if isinstance(exc, _RetryableStatus):
        header = exc.response.headers.get("retry-after")
        if header is not None:
            with contextlib.suppress(ValueError):
                return min(max(float(header), 0.0), _MAX_RETRY_AFTER_S)
    return float(_jitter(state))
