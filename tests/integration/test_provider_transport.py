"""AiohttpTransport (the HTTP layer under the vendors' SDKs) against real loopback servers: the
httpx2 exceptions the SDKs expect, timeouts, bodies both ways, and connection reuse versus drop."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx2
import openai
import pytest
from yarl import URL

from adapters.providers.transport import AiohttpTransport, sdk_http_client

pytestmark = pytest.mark.timeout(60)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[tuple[str, list[float]]]:
    """A raw HTTP server on loopback; yields (base URL, the time each connection was accepted)."""
    accepted: list[float] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(time.monotonic())
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", accepted
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one request with a content-length or chunked body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if length:
        return head, await reader.readexactly(int(length.group(1)))
    body = b""
    if re.search(rb"(?i)\r\ntransfer-encoding: *chunked", head):
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readexactly(2)
    return head, body


def client(**kw: object) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=AiohttpTransport(), **kw)  # type: ignore[arg-type]


async def test_refused_connection_is_a_connect_error_and_the_sdk_says_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        async with client() as http:
            with pytest.raises(httpx2.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/")
        sdk = openai.AsyncOpenAI(
            api_key="k", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0,
            http_client=sdk_http_client(openai.DefaultAsyncHttpxClient),
        )
        async with sdk:
            with pytest.raises(openai.APIConnectionError) as info:
                await sdk.models.list()
    assert not isinstance(info.value, openai.APITimeoutError)  # a refusal is not a timeout


async def test_a_stalled_response_is_a_read_timeout_and_a_cut_body_a_protocol_error() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with serving(stall) as (url, _), client(timeout=httpx2.Timeout(5, read=0.2)) as http:
        started = time.monotonic()
        with pytest.raises(httpx2.ReadTimeout):
            await http.get(url)
        assert time.monotonic() - started < 2

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly a part")
        await writer.drain()

    async with serving(cut) as (url, _), client() as http, http.stream("GET", url) as response:
        assert response.status_code == 200
        with pytest.raises(httpx2.RemoteProtocolError):
            await response.aread()

    async def slow_between_chunks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async with (
        serving(slow_between_chunks) as (url, _),
        client(timeout=httpx2.Timeout(5, read=0.2)) as http,
        http.stream("GET", url) as response,
    ):
        reads = response.aiter_bytes()
        assert await anext(reads) == b"first"
        with pytest.raises(httpx2.ReadTimeout):  # the read timeout holds between chunks too
            await anext(reads)


async def test_bodies_both_ways_headers_and_content_encoding() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            seen.append((head, body))
            payload = gzip.compress(b"echo:" + body)
            writer.write(
                b"HTTP/1.1 201 Created\r\ncontent-encoding: gzip\r\nx-multi: a\r\nx-multi: b\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(payload), payload)
            )
            await writer.drain()

    async def upload() -> AsyncIterator[bytes]:
        for part in (b"one ", b"two ", b"three"):
            yield part

    async with serving(echo) as (url, accepted), client() as http:
        response = await http.post(url + "/p%20q?x=1%2F2", content=b'{"a": 1}', headers={"x-custom": "v"})
        assert (response.status_code, response.reason_phrase) == (201, "Created")
        assert response.content == b'echo:{"a": 1}'  # decoded by httpx2 from gzip
        assert response.headers.get_list("x-multi") == ["a", "b"]
        streamed = await http.post(url, content=upload())
        assert streamed.content == b"echo:one two three"
    head, _ = seen[0]
    assert head.startswith(b"POST /p%20q?x=1%2F2 HTTP/1.1\r\n")  # the URL as httpx2 encoded it, not re-quoted
    assert b"\r\nx-custom: v\r\n" in head.lower()
    assert seen[1][1] == b"one two three"
    assert len(accepted) == 1  # both on one kept-alive connection


async def test_a_whole_read_decodes_the_body_keeps_the_connection_and_maps_failures() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, body = await read_request(reader)
            if body == b"cut":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly a part")
                await writer.drain()
                return
            payload = gzip.compress(b"echo:" + body)
            writer.write(
                b"HTTP/1.1 429 Too Many Requests\r\ncontent-encoding: gzip\r\nretry-after: 3\r\nx-multi: a\r\n"
                b"x-multi: b\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload)
            )
            await writer.drain()

    transport = AiohttpTransport()
    try:
        async with serving(echo) as (url, accepted):
            for body in (b'{"a": 1}', b'{"b": 2}'):
                answer = await transport.post_whole(URL(url), [], body, {})
                response = answer.httpx(httpx2.Request("POST", url, content=body))
                assert (response.status_code, response.reason_phrase) == (429, "Too Many Requests")
                assert response.content == b"echo:" + body  # decoded once, by aiohttp
                assert "content-encoding" not in response.headers and response.headers["retry-after"] == "3"
                assert response.headers.get_list("x-multi") == ["a", "b"]
            assert len(accepted) == 1  # the connection went back to the pool after each read
            with pytest.raises(httpx2.RemoteProtocolError):
                await transport.post_whole(URL(url), [], b"cut", {})
    finally:
        await transport.aclose()


async def test_a_prepared_post_sends_its_head_with_the_length_and_fails_like_a_request() -> None:
    """``post_whole``: the head given (aiohttp adds Content-Length), the answer decoded, the
    connection kept; a stalled answer is the request's read timeout, a cut one a protocol error."""
    heads: list[bytes] = []

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            heads.append(head)
            if body == b"stall":
                await asyncio.sleep(5)
                return
            if body == b"cut":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly a part")
                await writer.drain()
                return
            payload = gzip.compress(b"echo:" + body)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload))
            await writer.drain()

    transport = AiohttpTransport()
    timeout = {"timeout": {"connect": 5.0, "read": 0.3, "pool": 5.0}}
    try:
        async with serving(server) as (url, accepted):
            target = URL(url + "/v1/chat%20completions", encoded=True)
            headers = [("Authorization", "Bearer k"), ("X-Stainless-Lang", "python")]
            for body in (b'{"a": 1}', b'{"b": 22}'):
                answer = await transport.post_whole(target, headers, body, timeout)
                assert (answer.status_code, answer.content) == (200, b"echo:" + body)
                assert all(k.lower() != b"content-encoding" for k, _ in answer.raw_headers)  # decoded
            assert len(accepted) == 1
            head = heads[0].lower()
            assert heads[0].startswith(b"POST /v1/chat%20completions HTTP/1.1\r\n")  # not re-quoted
            assert b"\r\nauthorization: bearer k\r\n" in head and b"\r\ncontent-length: 8\r\n" in head
            assert (await transport.post_whole(target, headers, b"x", timeout)).httpx(
                httpx2.Request("POST", url)
            ).content == b"echo:x"
            started = time.monotonic()
            with pytest.raises(httpx2.ReadTimeout):
                await transport.post_whole(target, headers, b"stall", timeout)
            assert time.monotonic() - started < 2
            with pytest.raises(httpx2.RemoteProtocolError):
                await transport.post_whole(target, headers, b"cut", timeout)
    finally:
        await transport.aclose()


async def test_a_response_read_to_the_end_keeps_its_connection_one_closed_early_drops_it() -> None:
    closed_at: list[float] = []

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head, _ = await read_request(reader)
            except asyncio.IncompleteReadError:
                closed_at.append(time.monotonic())
                return
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            parts = 3 if b"short" in head else 1000
            try:
                for _ in range(parts):
                    writer.write(b"4\r\ndata\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.002)
                    if reader.at_eof():  # the client closed its side
                        raise ConnectionResetError
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            except ConnectionError:
                closed_at.append(time.monotonic())
                return

    async with serving(stream) as (url, accepted), client() as http:
        for _ in range(3):
            response = await http.get(url + "/short")
            assert response.content == b"data" * 3
        assert len(accepted) == 1  # kept alive and reused
        async with http.stream("GET", url + "/long") as response:
            assert await anext(response.aiter_bytes())
            left_at = time.monotonic()
        for _ in range(50):
            if closed_at:
                break
            await asyncio.sleep(0.01)
        assert closed_at and closed_at[0] - left_at < 0.1  # the server saw the client leave at once
        assert (await http.get(url + "/short")).content == b"data" * 3
        assert len(accepted) == 2  # a new connection after the dropped one


async def test_one_transport_serves_requests_from_a_second_event_loop() -> None:
    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    transport = AiohttpTransport()
    async with serving(ok) as (url, _):
        http = httpx2.AsyncClient(transport=transport)
        assert (await http.get(url)).text == "ok"

        def other_loop() -> str:
            async def go() -> str:
                return (await http.get(url)).text

            return asyncio.run(go())  # the session of the first loop cannot serve this one

        assert await asyncio.to_thread(other_loop) == "ok"
        assert (await http.get(url)).text == "ok"
        await http.aclose()


async def test_environment_proxies_are_mounted_beside_the_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            lines.append(head.split(b"\r\n", 1)[0])
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nproxied")
            await writer.drain()

    async def direct(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\ndirect")
        await writer.drain()

    async with serving(proxy) as (proxy_url, _), serving(direct) as (direct_url, _):
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with sdk_http_client(openai.DefaultAsyncHttpxClient) as http:
            assert isinstance(http._transport, AiohttpTransport)
            assert (await http.get("http://upstream.invalid/v1/models")).text == "proxied"
            assert (await http.get(direct_url)).text == "direct"  # NO_PROXY: this transport
        async with sdk_http_client(openai.DefaultAsyncHttpxClient, trust_env=False) as http:
            with pytest.raises(httpx2.ConnectError):  # no proxy: the name does not resolve
                await http.get("http://upstream.invalid/v1/models")
    assert lines == [b"GET http://upstream.invalid/v1/models HTTP/1.1"]


async def test_connections_carry_tcp_keepalive_probes() -> None:
    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read()

    transport = AiohttpTransport()
    async with serving(ok) as (url, _), httpx2.AsyncClient(transport=transport) as http:
        assert (await http.get(url)).text == "ok"
        [(protocol, _)] = [c for conns in transport._session.connector._conns.values() for c in conns]  # type: ignore[union-attr]
        sock = protocol.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60
