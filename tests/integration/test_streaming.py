"""Streaming through the real backend (Postgres, the OpenAI SDK adapter, the simulator over HTTP):
a client that stops reading pauses the upstream read, and a client that goes away closes the
upstream request within 100 ms, over gRPC and over the OpenAI-compatible REST edge."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import grpc
import httpx
import pytest
from lumina.v1 import chat_pb2 as pb
from lumina.v1 import chat_pb2_grpc

from adapters.providers.openai import OpenAIProvider
from api.bootstrap import SIMULATOR, Backend, build_backend
from api.settings import load_settings
from tools.provider_sim.stats import RequestRecord, StatsSnapshot
from tools.provider_sim.testing import fetch_stats, reset_stats, running_simulator
from tests.unit.auth_fakes import METADATA, authenticator, bearer

pytestmark = pytest.mark.timeout(90)

Start = Callable[[dict[str, str]], Awaitable[Backend]]


@pytest.fixture
def sim() -> Iterator[str]:
    # its own thread and event loop: a stream it keeps writing must not starve the backend's loop
    with running_simulator() as base_url:
        yield base_url


@pytest.fixture
async def lumina(database_url: str, sim: str) -> AsyncIterator[Start]:
    backends: list[Backend] = []

    async def start(sim_headers: dict[str, str]) -> Backend:
        provider = OpenAIProvider(SIMULATOR, api_key="sim-key", base_url=sim, default_headers=sim_headers)
        backend = build_backend(load_settings({}, database_url=database_url, tenant_id="streaming"), providers=[provider],
                                authenticator=authenticator("streaming"))
        await backend.start(grpc_port=0, http_port=0)
        backends.append(backend)
        return backend

    yield start
    for b in backends:
        await b.stop()


def stream_request() -> pb.StreamCompleteRequest:
    return pb.StreamCompleteRequest(
        parameters=pb.ChatParameters(model="sim-small", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="tell me")])
    )


async def stats(sim: str) -> StatsSnapshot:
    return await asyncio.to_thread(fetch_stats, sim)


async def disconnect_record(sim: str, timeout: float = 5.0) -> RequestRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = await stats(sim)
        gone = [r for r in snap.recent if r.disconnected]
        if gone:
            return gone[-1]
        await asyncio.sleep(0.02)
    raise AssertionError("the simulator recorded no disconnect")


async def test_a_client_that_stops_reading_pauses_the_upstream_read(lumina: Start, sim: str) -> None:
    total = 200_000  # ~38 MB of SSE: far more than the kernel's socket buffers can hide
    backend = await lumina({"x-sim-tokens": str(total), "x-sim-chunks": str(total)})
    # a client with a fixed HTTP/2 window (no BDP auto-tuning), so only the backend could buffer
    options = [("grpc.http2.bdp_probe", 0)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{backend.grpc_port}", options=options) as channel:
        call = chat_pb2_grpc.ChatServiceStub(channel).StreamComplete(stream_request(), metadata=METADATA)
        first = await call.read()
        assert first.WhichOneof("chunk") == "text_delta"
        # the client reads nothing more: the simulator's sent count must level off well before the end
        previous, still_since = -1, time.monotonic()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            sent = (await stats(sim)).chunks_sent
            if sent != previous:
                previous, still_since = sent, time.monotonic()
            elif time.monotonic() - still_since > 1.5:
                break
        assert previous < total * 0.6, f"upstream kept being read: {previous} of {total} chunks sent"
        # reading again resumes the upstream (once the socket buffers in between have drained)
        resumed = False
        for _ in range(100):
            for _ in range(1000):
                await call.read()
            if (await stats(sim)).chunks_sent > previous:
                resumed = True
                break
        assert resumed, "the upstream read did not resume"
        call.cancel()


async def test_grpc_cancel_closes_the_upstream_request_within_100ms(lumina: Start, sim: str) -> None:
    backend = await lumina({"x-sim-tokens": "4000", "x-sim-chunks": "400", "x-sim-chunk-delay-ms": "10"})
    reset_stats(sim)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{backend.grpc_port}") as channel:
        call = chat_pb2_grpc.ChatServiceStub(channel).StreamComplete(stream_request(), metadata=METADATA)
        for _ in range(3):
            assert (await call.read()).WhichOneof("chunk") == "text_delta"
        cancelled_at = time.time()
        call.cancel()
    record = await disconnect_record(sim)
    gap = record.ended_at - cancelled_at
    assert 0 <= gap < 0.1, f"upstream closed {gap * 1000:.1f} ms after the cancel"


async def test_http_disconnect_closes_the_upstream_request_within_100ms(lumina: Start, sim: str) -> None:
    backend = await lumina({"x-sim-tokens": "4000", "x-sim-chunks": "400", "x-sim-chunk-delay-ms": "10"})
    reset_stats(sim)
    body = {"model": "sim-small", "stream": True, "messages": [{"role": "user", "content": "tell me"}]}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{backend.http_port}", headers=bearer()) as client:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            seen = 0
            while seen < 3:
                if (await anext(lines)).startswith("data: {"):
                    seen += 1
            closed_at = time.time()
    record = await disconnect_record(sim)
    gap = record.ended_at - closed_at
    assert 0 <= gap < 0.1, f"upstream closed {gap * 1000:.1f} ms after the client left"
