"""The HTTP transport under the vendors' SDKs: an ``httpx2`` transport that sends through aiohttp.

The ``openai`` and ``anthropic`` SDKs (and ``google-genai``) build every request as an
``httpx2.Request`` and hand it to their ``httpx2.AsyncClient``; the client's transport does the
HTTP. The default transport (httpcore2 + h11 + anyio) was most of ``OpenAIProvider.stream``'s CPU
(py-spy), a socket poll of every idle pooled connection whenever a request starts or ends
included. ``AiohttpTransport`` keeps the SDKs, their
request building, auth, timeouts and error classes, and replaces only that layer with aiohttp's
(C-accelerated HTTP parser, a pool that learns of closed idle connections from the event loop
instead of polling them). ``sdk_http_client(DefaultAsyncHttpxClient)`` builds the SDK's own
client class with it; ``aiohttp_client_args()`` are the ``httpx2.AsyncClient`` arguments for
clients an SDK builds itself (google-genai's ``async_client_args``).

Behaviour kept from the default transport:

- errors are ``httpx2`` exceptions, so the SDKs raise their own classes as before: connect
  failures -> ``ConnectError``, connect/pool timeouts -> ``ConnectTimeout``, read timeouts ->
  ``ReadTimeout``, a server that disconnects or sends a broken response -> ``RemoteProtocolError``,
  other socket errors -> ``ReadError``;
- timeouts per request from the request's ``timeout`` extension (connect, read between chunks,
  pool), the connect part capped by the transport's ``connect_timeout`` when one is set (the
  routing settings' ``timeouts.connect_s``: a provider that does not accept the connection fails
  with ``ConnectTimeout`` within it, whatever the SDK's overall timeout); the body is decoded by ``httpx2`` (``auto_decompress`` off here), cookies are the
  ``httpx2`` client's (aiohttp's jar is a dummy), redirects are the ``httpx2`` client's;
- proxies: ``HTTP(S)_PROXY``/``ALL_PROXY``/``NO_PROXY`` become ``httpx2`` proxy mounts (httpcore2)
  beside this transport, as ``httpx2`` and the anthropic SDK mount them for their own default
  transports (``httpx2`` ignores the environment for a client given ``transport=``);
- TCP keep-alive probes on every connection (idle 60 s, every 60 s, 5 probes), as the anthropic
  SDK sets them on its sockets: a dead peer under a long stream is noticed;
- closing a response whose body is not read to the end closes its connection at once (the
  upstream sees the disconnect: cancellation), a body read to the end returns it to the pool.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

import aiohttp
import httpx2
from httpx2._utils import get_environment_proxies
from yarl import URL

__all__ = [
    "KEEPALIVE_SECONDS", "MAX_CONNECTIONS", "AiohttpTransport", "WholeResponse", "aiohttp_client_args", "load_trust_store",
    "sdk_http_client",
]

MAX_CONNECTIONS = 1000  # per transport (the SDKs' default limit for their own pools)
KEEPALIVE_SECONDS = 5.0  # idle keep-alive connections are closed after this (the SDKs' default)
_SOCKET_OPTIONS = [
    (level, option, value)
    for level, name, value in (
        (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
        (socket.IPPROTO_TCP, "TCP_KEEPIDLE", 60),
        (socket.IPPROTO_TCP, "TCP_KEEPINTVL", 60),
        (socket.IPPROTO_TCP, "TCP_KEEPCNT", 5),
    )
    if (option := getattr(socket, name, None)) is not None
]
_MAX_HEAD_LINE = 16 * 1024  # a response's status line or header (h11's limit is 16 KiB for the head)

ClientT = TypeVar("ClientT", bound=httpx2.AsyncClient)


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """The default transport's TLS settings (system trust store, ``SSL_CERT_FILE``/``SSL_CERT_DIR``),
    built once per process: loading the trust store takes ~0.2 s here."""
    return httpx2.create_ssl_context(verify=True)


def load_trust_store() -> None:
    """Load the default TLS settings now (call it in a thread at start-up), so that the first
    provider client, built when its provider is first asked for, does not pay for it."""
    _default_ssl_context()


def _mapped(exc: BaseException, *, reading: bool) -> httpx2.TransportError | None:
    """The ``httpx2`` exception the default transport raises for a failure like ``exc``."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx2.ConnectTimeout(message)
    if isinstance(exc, (aiohttp.ServerTimeoutError, TimeoutError)):  # SocketTimeoutError: a read
        return httpx2.ReadTimeout(message)
    if isinstance(exc, (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError)):
        return httpx2.ProxyError(message)
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS handshake and certificates
        return httpx2.ConnectError(message)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError)):
        return httpx2.RemoteProtocolError(message)
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return httpx2.UnsupportedProtocol(message)
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return httpx2.ReadError(message) if reading else httpx2.ConnectError(message)
    return None


def _extensions(response: aiohttp.ClientResponse) -> dict[str, Any]:
    extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
    if response.reason:
        extensions["reason_phrase"] = response.reason.encode("ascii", "replace")
    return extensions


class WholeResponse:
    """A response read whole (``AiohttpTransport.post_whole``): status, decoded content and head."""

    __slots__ = ("content", "extensions", "raw_headers", "status_code")

    def __init__(
        self, status_code: int, content: bytes, raw_headers: Sequence[tuple[bytes, bytes]], extensions: dict[str, Any]
    ) -> None:
        self.status_code = status_code
        self.content = content
        self.raw_headers = raw_headers
        self.extensions = extensions

    def httpx(self, request: httpx2.Request) -> httpx2.Response:
        """The same response as ``httpx2`` has it (the SDKs' error classes take one)."""
        return httpx2.Response(
            status_code=self.status_code, headers=self.raw_headers, content=self.content, request=request,
            extensions=self.extensions,
        )


async def _read_whole(response: aiohttp.ClientResponse) -> WholeResponse:
    """``response``'s body read to the end (the connection back to the pool), decoded by aiohttp."""
    try:
        body = await response.read()
    except (aiohttp.ClientError, OSError) as exc:
        response.close()
        mapped = _mapped(exc, reading=True)
        if mapped is None:  # pragma: no cover - every listed class maps
            raise
        raise mapped from exc
    response.release()
    headers: Sequence[tuple[bytes, bytes]] = response.raw_headers
    if response.headers.get("content-encoding"):  # decoded: the head must not say otherwise
        headers = tuple((k, v) for k, v in headers if k.lower() not in (b"content-encoding", b"content-length"))
    return WholeResponse(response.status, body, headers, _extensions(response))


class _Body(httpx2.AsyncByteStream):
    """A response body as ``httpx2`` reads it: chunks as they arrive."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            mapped = _mapped(exc, reading=True)
            if mapped is None:  # pragma: no cover - every listed class maps
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        response = self._response
        if response.content.is_eof():
            response.release()  # read to the end: the connection goes back to the pool
        else:
            response.close()  # closed early: drop the connection now, the upstream sees it


def _keepalive_socket(addr_info: Any) -> socket.socket:
    """aiohttp's socket factory: a plain socket with ``_SOCKET_OPTIONS`` set."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    for level, option, value in _SOCKET_OPTIONS:
        sock.setsockopt(level, option, value)
    return sock


async def _request_body(stream: httpx2.AsyncByteStream) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield chunk


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """An ``httpx2`` transport over one ``aiohttp.ClientSession`` (one connection pool), opened
    on the first request in the running event loop (and again if a later request comes from
    another loop) and closed by ``aclose``. The TLS context is built here, as the default
    transport does, not on the first request."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        max_connections: int = MAX_CONNECTIONS,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        connect_timeout: float | None = None,
    ) -> None:
        if connect_timeout is not None and not connect_timeout > 0:
            raise ValueError("connect_timeout must be positive")
        self._connect_cap = connect_timeout
        self._ssl = _default_ssl_context() if verify is True else httpx2.create_ssl_context(verify=verify)
        self._max_connections = max_connections
        self._keepalive = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeouts: dict[tuple[Any, Any, Any], aiohttp.ClientTimeout] = {}

    def _open(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0, keepalive_timeout=self._keepalive, ssl=self._ssl,
            socket_factory=_keepalive_socket,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # httpx2 decodes by the content-encoding header
            trust_env=False,  # proxies are the httpx2 client's mounts
            timeout=aiohttp.ClientTimeout(total=None),
            max_line_size=_MAX_HEAD_LINE,
            max_field_size=_MAX_HEAD_LINE,
        )
        self._loop = loop
        return self._session

    def _timeout(self, extension: dict[str, Any]) -> aiohttp.ClientTimeout:
        key = (extension.get("connect"), extension.get("read"), extension.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            connect, read, pool = key
            cap = self._connect_cap
            if cap is not None:
                connect = cap if connect is None else min(connect, cap)
            acquire = None if connect is None or pool is None else connect + pool  # wait for a slot, then connect
            timeout = aiohttp.ClientTimeout(total=None, connect=acquire, sock_connect=connect, sock_read=read)
            if len(self._timeouts) < 64:
                self._timeouts[key] = timeout
        return timeout

    async def _send(self, request: httpx2.Request, *, decompress: bool = False) -> aiohttp.ClientResponse:
        """Send ``request``; the response once its head has arrived (failures as ``httpx2``'s)."""
        headers = request.headers.multi_items()
        data: bytes | AsyncIterator[bytes] | None
        try:
            data = request.content or None
        except httpx2.RequestNotRead:  # a streamed upload: aiohttp chunks it itself
            data = _request_body(request.stream)  # type: ignore[arg-type]
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        # the URL is percent-encoded already by httpx2
        return await self._request(request.method, URL(str(request.url), encoded=True), headers, data, request.extensions, decompress)

    async def _request(
        self,
        method: str,
        url: URL,
        headers: Sequence[tuple[str, str]],
        data: bytes | AsyncIterator[bytes] | None,
        extensions: Mapping[str, Any],
        decompress: bool,
    ) -> aiohttp.ClientResponse:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or self._loop is not loop or session.closed:
            session = self._open(loop)
        sni = extensions.get("sni_hostname")
        try:
            return await session.request(
                method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=self._timeout(extensions.get("timeout") or {}),
                server_hostname=sni if isinstance(sni, str) else None,
                auto_decompress=decompress,
            )
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            mapped = _mapped(exc, reading=False)
            if mapped is None:  # pragma: no cover - every listed class maps
                raise
            raise mapped from exc

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._send(request)
        return httpx2.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            request=request,
            extensions=_extensions(response),
        )

    async def post_whole(
        self, url: URL, headers: Sequence[tuple[str, str]], body: bytes, extensions: Mapping[str, Any]
    ) -> WholeResponse:
        """POST ``body`` to ``url`` (percent-encoded already) with ``headers`` (aiohttp adds
        ``Content-Length``) and a request's ``extensions`` (``timeout``, ``sni_hostname``), and read
        the whole answer at once: the connection goes back to the pool, and the content is decoded
        by aiohttp (the head no longer says ``content-encoding``). For a caller that reads the whole
        answer anyway and sends a head it built once: no ``httpx2`` request or response is built
        (their header normalisation was a fifth of a whole answer's HTTP cost), and no decoder
        runs per chunk. Failures are ``httpx2``'s, as for ``handle_async_request``."""
        response = await self._request("POST", url, headers, body, extensions, True)
        return await _read_whole(response)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is asyncio.get_running_loop():
            await session.close()


def aiohttp_client_args(*, trust_env: bool = True, connect_timeout: float | None = None) -> dict[str, Any]:
    """``httpx2.AsyncClient`` arguments: an ``AiohttpTransport`` (connects capped at
    ``connect_timeout`` seconds) and, with ``trust_env``, the environment's proxies as ``mounts``
    (``None`` for ``NO_PROXY`` patterns: this transport)."""
    mounts: dict[str, httpx2.AsyncBaseTransport | None] = {}
    if trust_env:  # what httpx2 mounts beside its own default transport
        for pattern, url in get_environment_proxies().items():
            mounts[pattern] = None if url is None else httpx2.AsyncHTTPTransport(proxy=url)
    return {"transport": AiohttpTransport(connect_timeout=connect_timeout), "mounts": mounts}


def sdk_http_client(
    client_class: Callable[..., ClientT], *, connect_timeout: float | None = None, **kwargs: Any
) -> ClientT:
    """``client_class`` (an SDK's ``DefaultAsyncHttpxClient``: its timeout, limits and redirect
    defaults) over an ``AiohttpTransport`` (connects capped at ``connect_timeout`` seconds), with
    the environment's proxies mounted unless ``kwargs`` (for the client) say ``trust_env=False``
    or give a ``proxy``."""
    env = kwargs.get("trust_env", True) and kwargs.get("proxy") is None
    return client_class(**aiohttp_client_args(trust_env=env, connect_timeout=connect_timeout), **kwargs)
