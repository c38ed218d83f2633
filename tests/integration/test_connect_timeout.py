"""``timeouts.connect_s`` on the real path: a provider whose TCP connect hangs (a loopback listener
whose accept backlog is full and that never accepts: Linux drops further SYNs, so ``connect()``
neither succeeds nor fails) is abandoned after ``connect_s`` with a retryable ``upstream_timeout``
and the request falls back to the next candidate, well before the first-token timeout.

Providers are built by the composition root from the registry (``ProviderClientFactory`` with the
routing settings' connect timeout), so the vendor SDK sends through ``AiohttpTransport``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from adapters.postgres.mappers import start_mappers
from adapters.providers.transport import AiohttpTransport
from api.auth import StaticAuthenticator
from api.bootstrap import Backend, build_backend
from api.settings import load_settings
from domain.chat import ChatMessage, ChatRequest, Role
from domain.cost import Price
from domain.identity import Principal, PrincipalKind
from domain.identity import Role as UserRole
from domain.registry import ModelRoute, ProviderKind, ProviderSpec
from tools.provider_sim.testing import running_simulator

pytestmark = pytest.mark.timeout(60)

CONNECT_S = 0.4
FIRST_TOKEN_S = 8.0
CALLER = Principal("ct", "user-c", UserRole.MEMBER, PrincipalKind.API_KEY, "key-c")


@contextlib.contextmanager
def hanging_listener() -> Iterator[int]:
    """A loopback port whose TCP connects hang: ``listen(0)`` and never ``accept``, with the
    backlog filled by a few connects of our own first."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", port))
            fillers.append(sock)
        time.sleep(0.1)
        yield port
    finally:
        for sock in fillers:
            sock.close()
        server.close()


async def _connects(port: int, within: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), within)
    except TimeoutError:
        return False
    writer.close()
    return True


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with running_simulator(tokens=8) as url:
        yield url


@pytest.fixture
def blackhole() -> Iterator[int]:
    with hanging_listener() as port:
        yield port


@pytest.fixture
async def backend(database_url: str, sim: str, blackhole: int, tmp_path: Path) -> AsyncIterator[Backend]:
    tag = uuid.uuid4().hex[:6]
    start_mappers()
    providers = [
        ProviderSpec(f"hang-{tag}", ProviderKind.OPENAI_COMPATIBLE, base_url=f"http://127.0.0.1:{blackhole}/v1"),
        ProviderSpec(f"good-{tag}", ProviderKind.OPENAI_COMPATIBLE, base_url=sim),
    ]
    models = [
        ModelRoute(f"mhang-{tag}", f"hang-{tag}", "sim-small", Price(1, 2)),
        ModelRoute(f"mgood-{tag}", f"good-{tag}", "sim-small", Price(1, 2)),
    ]
    routing = {
        "fallbacks": {f"mhang-{tag}": [f"mgood-{tag}"]},
        "retry": {"max_attempts": 1},
        "timeouts": {"connect_s": CONNECT_S, "first_token_s": FIRST_TOKEN_S, "total_s": 30},
    }
    settings = load_settings(
        {}, database_url=database_url, tenant_id="ct", data_dir=str(tmp_path), memory_enabled=False,
        routing=routing,
    )
    built = build_backend(settings, seed=(providers, models), authenticator=StaticAuthenticator({"k": CALLER}))
    built.keys = {}
    await built.start(grpc_port=0, http_port=0)
    try:
        yield built
    finally:
        await built.stop()


async def test_the_hanging_listener_really_hangs(blackhole: int) -> None:
    assert not await _connects(blackhole, 1.0)


async def test_a_connect_that_hangs_falls_back_to_the_next_candidate_within_connect_s(backend: Backend) -> None:
    caller = CALLER
    model = next(r.name for r in await backend.catalog.routes() if r.name.startswith("mhang-"))
    request = ChatRequest(model=model, messages=(ChatMessage(Role.USER, "hello"),), max_tokens=8)
    began = time.monotonic()
    answer = await backend.complete_chat(caller, request)
    elapsed = time.monotonic() - began
    meta = answer.finish.metadata
    assert meta is not None
    assert meta.model.startswith("mgood-") and meta.fallbacks_tried == (model,)
    assert answer.text
    # connect_s and a little; without the connect timeout this waits for the first-token timeout
    assert CONNECT_S <= elapsed < CONNECT_S + 1.5, elapsed


async def test_the_transport_raises_connect_timeout_within_its_cap(blackhole: int) -> None:
    import httpx2

    transport = AiohttpTransport(connect_timeout=0.3)
    try:
        async with httpx2.AsyncClient(transport=transport, timeout=10) as client:
            began = time.monotonic()
            with pytest.raises(httpx2.ConnectTimeout):
                await client.get(f"http://127.0.0.1:{blackhole}/v1/models")
            assert time.monotonic() - began < 1.5
    finally:
        await transport.aclose()
