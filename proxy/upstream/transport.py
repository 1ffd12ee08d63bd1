"""The upstream calls over aiohttp's client: its connection pool and HTTP/1.1 parsing
(C-accelerated; httpcore's are pure Python), with httpx's response type for streams and httpx's
exception types for every error.

Measured on the pass-through hop (``docs/benchmarks/overhead.md``, round four): a call through
aiohttp costs about 0.5 ms less CPU than through ``httpx.AsyncHTTPTransport`` on the 2-core
development machine.

aiohttp's errors are mapped to the httpx exception each one matches, so the retry and health
rules (``proxy.upstream.client``) classify them as before: a refused connection is a
``ConnectError``, a keep-alive connection the server closed before answering a
``RemoteProtocolError``, a reset a ``ReadError``, an idle read past the timeout a ``ReadTimeout``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass

import aiohttp
import httpx
from yarl import URL

__all__ = ["AiohttpTransport", "Fetched", "client_timeout"]

# Below uvicorn's (vLLM's server) 5 s keep-alive: a connection is dropped here before the
# server closes it, so a request rarely lands on a connection being closed (and one that does
# is retried: ``proxy.upstream.client``).
KEEPALIVE_S = 4.0
_URL_CACHE_SIZE = 64  # an upstream's URLs are the proxy's own few

# First match wins: the subclasses come before their bases.
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # a malformed answer
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectionError, httpx.ReadError),  # a reset, a connection closed mid-way
    (aiohttp.ClientError, httpx.TransportError),
)


def client_timeout(timeout: httpx.Timeout) -> aiohttp.ClientTimeout:
    """httpx's four timeouts as aiohttp's: no total (the caller sets its own deadline)."""
    return aiohttp.ClientTimeout(
        total=None,
        connect=timeout.pool,  # waiting for a pooled connection, and opening it
        sock_connect=timeout.connect,
        sock_read=timeout.read,
    )


@dataclass(frozen=True, slots=True)
class Fetched:
    """A whole response, read: what a JSON call needs, without httpx's models around it."""

    status_code: int
    headers: tuple[tuple[bytes, bytes], ...]
    content: bytes

    def as_httpx(self) -> httpx.Response:
        """The response as httpx's (the error paths read its headers and body)."""
        return httpx.Response(self.status_code, headers=self.headers, content=self.content)


@contextlib.contextmanager
def _as_httpx() -> Iterator[None]:
    """aiohttp's errors raised as httpx's; the message is the error's type only, since
    aiohttp's text can quote the URL."""
    try:
        yield
    except aiohttp.ClientError as exc:
        for theirs, ours in _ERRORS:
            if isinstance(exc, theirs):
                raise ours(type(exc).__name__) from exc
        raise  # pragma: no cover - ClientError is the last row


class _Body(httpx.AsyncByteStream):
    """A response's body as aiohttp hands it over; closing it before the end closes the
    connection (the upstream sees the client leave: vLLM aborts the generation)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx():
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        if self._response.content.is_eof():
            self._response.release()  # the connection goes back to the pool
        else:
            self._response.close()


class AiohttpTransport:
    """Up to ``max_connections`` pooled keep-alive connections (HTTP/1.1), opened in the event
    loop of the first call; ``tls``: the upstream is ``https`` (httpx's certificate store, as
    ``httpx.AsyncHTTPTransport`` would use). No cookies, no redirects, no decompression (httpx
    decodes a compressed body itself) and no headers of aiohttp's own: the request goes out with
    the caller's headers only."""

    def __init__(self, max_connections: int, *, tls: bool = False) -> None:
        self._max_connections = max_connections
        self._tls = tls
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE_S,
            ssl=httpx.create_ssl_context() if self._tls else True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return self._session

    def _url(self, text: str) -> URL:
        parsed = self._urls.get(text)
        if parsed is None:
            parsed = URL(text, encoded=True)
            if len(self._urls) < _URL_CACHE_SIZE:
                self._urls[text] = parsed
        return parsed

    async def fetch(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        content: bytes | None,
        timeouts: aiohttp.ClientTimeout,
    ) -> Fetched:
        """One call, its whole answer read, without an httpx response around it (the JSON
        calls: httpx's request and response models were about a third of a call's CPU)."""
        session = self._session if self._session is not None else self._open()
        with _as_httpx():
            async with session.request(
                method,
                self._url(url),
                headers=headers,
                data=content,
                allow_redirects=False,
                timeout=timeouts,
            ) as response:
                return Fetched(response.status, response.raw_headers, await response.read())

    async def open(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        content: bytes | None,
        timeouts: aiohttp.ClientTimeout,
    ) -> httpx.Response:
        """One call's response, its body unread (a stream): close it to end the call."""
        session = self._session if self._session is not None else self._open()
        with _as_httpx():
            response = await session.request(
                method,
                self._url(url),
                headers=headers,
                data=content,
                allow_redirects=False,
                timeout=timeouts,
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
