"""The OpenAI adapter sends what the SDK sends: ``OpenAIProvider._post`` reuses a request head the
SDK built once (URL, auth and SDK headers, timeout), and a loopback server sees the same request as
from ``AsyncOpenAI.post``; status errors are the SDK's classes, a client with per-request
credentials keeps the SDK's full path."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp.web
import httpx2
import openai
import pytest

from adapters.providers.openai import _AUTH, OpenAIProvider

pytestmark = pytest.mark.asyncio

_VARYING = {"content-length"}


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[tuple[str, str, dict[str, str], bytes]]]]:
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    async def record(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append((request.method, request.path_qs, {k.lower(): v for k, v in request.headers.items()}, await request.read()))
        if request.headers.get("x-fail") == "429":
            return aiohttp.web.json_response(
                {"error": {"message": "slow down", "type": "rate_limit_error"}}, status=429, headers={"retry-after": "3"}
            )
        return aiohttp.web.json_response({"ok": True})

    app = aiohttp.web.Application()
    app.router.add_post("/v1/{tail:.*}", record)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1", seen
    finally:
        await runner.cleanup()


async def test_the_reused_head_matches_the_sdks_own_request(server) -> None:
    base_url, seen = server
    provider = OpenAIProvider("p", api_key="sk-test", base_url=base_url, default_headers={"x-team": "blue"})
    try:
        sdk = provider._client
        await sdk.post("/chat/completions", cast_to=httpx2.Response, content=b'{"a":1}', options=_AUTH)
        await provider._post("/chat/completions", b'{"a":1}')
        await provider._post("/chat/completions", b'{"b":2}')  # the cached head, a second time
    finally:
        await provider.aclose()
    (m1, p1, h1, b1), (m2, p2, h2, b2), (_, _, h3, b3) = seen
    assert (m1, p1, b1) == (m2, p2, b2) == ("POST", "/v1/chat/completions", b'{"a":1}')
    assert h1["authorization"] == "Bearer sk-test" and h1["x-team"] == "blue"
    assert any(k.startswith("x-stainless-") for k in h1)
    same = {k: v for k, v in h1.items() if k not in _VARYING}
    assert {k: v for k, v in h2.items() if k not in _VARYING} == same
    assert {k: v for k, v in h3.items() if k not in _VARYING} == same and b3 == b'{"b":2}'


async def test_a_status_error_is_the_sdks_class_with_its_headers(server) -> None:
    base_url, _ = server
    provider = OpenAIProvider("p", api_key="sk-test", base_url=base_url, default_headers={"x-fail": "429"})
    try:
        with pytest.raises(openai.RateLimitError) as caught:
            await provider._post("/chat/completions", b"{}")
    finally:
        await provider.aclose()
    assert caught.value.response.headers["retry-after"] == "3"
    assert "slow down" in str(caught.value)


async def test_a_refused_connection_is_the_sdks_connection_error() -> None:
    provider = OpenAIProvider("p", api_key="sk-test", base_url="http://127.0.0.1:9/v1")  # discard port: nothing listens
    try:
        with pytest.raises(openai.APIConnectionError):
            await provider._post("/chat/completions", b"{}")
    finally:
        await provider.aclose()


async def test_a_client_with_per_request_credentials_keeps_the_sdks_full_path(server) -> None:
    base_url, seen = server
    provider = OpenAIProvider("p", api_key="sk-test", base_url=base_url)
    provider._client._idempotency_header = "Idempotency-Key"  # the SDK adds a fresh key to every request
    try:
        await provider._post("/chat/completions", b"{}")
        await provider._post("/chat/completions", b"{}")
    finally:
        await provider.aclose()
    keys = [headers["idempotency-key"] for _, _, headers, _ in seen]
    assert len(set(keys)) == 2


class _Counting(httpx2.AsyncBaseTransport):
    """A real HTTP transport that counts the requests it carries."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.sent = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.sent += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_transport_is_the_one_the_sdks_client_mounts_for_the_url(server) -> None:
    base_url, seen = server
    mounted, default = _Counting(), _Counting()
    http = httpx2.AsyncClient(transport=default, mounts={"http://127.0.0.1": mounted})
    provider = OpenAIProvider("p", api_key="sk-test", base_url=base_url, http_client=http)
    try:
        response = await provider._post("/chat/completions", b'{"a":1}')
        await provider._post("/chat/completions", b'{"a":2}')
    finally:
        await provider.aclose()
    assert (mounted.sent, default.sent) == (2, 0)  # e.g. a proxy mounted for the provider's host
    assert response.json() == {"ok": True} and len(seen) == 2
