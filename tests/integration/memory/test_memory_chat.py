"""Long-term memory in the chat path, end to end: one production backend (``build_backend``: Postgres,
Redis, the registry pointing at the provider simulator, the local ONNX embedder) and one worker
(outbox relay and memory consumers on real NATS JetStream). A user says something in conversation
A through the OpenAI-compatible edge; the worker remembers it; in conversation B the request the
SIMULATOR receives carries it, as one system message after the caller's own. Off for the request
(header, body member, gRPC field), off for the tenant, another tenant, another user: it does not."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import grpc
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.nats import JetStreamBus
from adapters.postgres import SqlAlchemyUnitOfWorkFactory
from adapters.postgres.migrate import upgrade_async
from adapters.postgres.tenant_policies import PostgresTenantPolicies
from adapters.system import SystemClock, TimeOrderedIds
from api.bootstrap import Backend, build_backend
from api.identity import create_key, first_start
from api.memory import open_worker_memory
from api.settings import load_settings
from api.worker import Worker
from application.identity import RegisterUser
from application.memory.chat_hook import OPEN_TAG
from domain.identity import Role, TenantPolicy
from lumina.v1 import chat_pb2 as pb
from lumina.v1 import chat_pb2_grpc
from tests.harness.jetstream import delete_streams, new_run_prefix
from tests.harness.services import TestServices
from tools.provider_sim.stats import RequestRecord
from tools.provider_sim.testing import fetch_stats, running_simulator

pytestmark = pytest.mark.timeout(240)

FACT = "My sister's name is Clara and she teaches piano in Porto."
QUESTION = "What is my sister's name?"


def new_key() -> str:
    return f"lum_{secrets.token_hex(6)}_{secrets.token_urlsafe(24)}"


@dataclass
class Platform:
    backend: Backend
    engine: AsyncEngine
    sim_url: str
    tenant: str
    other_tenant: str
    key: str  # tenant's administrator
    other_key: str  # other tenant's administrator
    colleague_key: str  # another user of ``tenant``

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.backend.http_port}"

    async def scalar(self, sql: str, **params: object) -> Any:
        async with self.engine.connect() as conn:
            return await conn.scalar(sa.text(sql), params)


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with running_simulator() as base_url:
        yield base_url


@pytest.fixture(scope="module")
async def platform(
    services: TestServices, redis_url: str, nats_url: str, sim_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    database_url = services.create_database("lumina_memchat")  # its own: the worker relays every outbox row
    await upgrade_async(database_url)
    tenant, other = f"m{uuid.uuid4().hex[:10]}", f"o{uuid.uuid4().hex[:10]}"
    key, other_key = new_key(), new_key()
    sim_port = int(sim_url.rsplit(":", 1)[1].split("/")[0])
    common: dict[str, Any] = {
        "database_url": database_url, "redis_url": redis_url, "sim_port": sim_port,
        "data_dir": str(tmp_path_factory.mktemp("memory-chat")),
        "memory_tenant_cache_seconds": 0,  # a tenant's switch applies at once (the test flips it)
        "memory_chat_timeout_ms": 3000,  # a loaded 2-core machine: recall times in docs/memory.md
        "memory_consolidation_interval": 0,
    }
    settings = load_settings({}, tenant_id=tenant, bootstrap_api_key=key, **common)
    await first_start(settings, database_url)
    await first_start(load_settings({}, tenant_id=other, bootstrap_api_key=other_key, **common), database_url)
    backend = build_backend(settings)
    await backend.start(grpc_port=0, http_port=0)
    await RegisterUser(backend.identity.ctx)(tenant, "colleague@example.com", "Col", None, Role.MEMBER)
    colleague_key = await create_key(settings, database_url, name="c", email="colleague@example.com", tenant_id=tenant)

    stream = f"{new_run_prefix()}_MEMCHAT"
    bus = await JetStreamBus.connect(nats_url, stream=stream, subjects=(f"lumina.{tenant}.>", f"lumina.{other}.>"))
    worker_engine = create_async_engine(database_url)
    uow = SqlAlchemyUnitOfWorkFactory(worker_engine)
    memory = await open_worker_memory(settings, worker_engine, uow, clock=SystemClock(), ids=TimeOrderedIds())
    worker = Worker(uow_factory=uow, bus=bus, poll_interval=0.05, memory=memory, memory_sweep_interval=0)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    engine = create_async_engine(database_url)
    try:
        yield Platform(backend, engine, sim_url, tenant, other, key, other_key, colleague_key)
    finally:
        stop.set()
        await asyncio.wait_for(running, 20)
        await bus.close()
        await memory.aclose()
        await worker_engine.dispose()
        await backend.stop()
        await engine.dispose()
        delete_streams(nats_url, [stream])
        services.drop_database(database_url)


async def openai_chat(platform: Platform, key: str, text: str, *, conversation: str | None = None,
                      headers: dict[str, str] | None = None, lumina: dict[str, Any] | None = None,
                      system: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "sim-small", "messages": [{"role": "user", "content": text}]}
    if system is not None:
        body["messages"].insert(0, {"role": "system", "content": system})
    options = dict(lumina or {})
    if conversation is not None:
        options["conversation_id"] = conversation
    if options:
        body["lumina"] = options
    async with httpx.AsyncClient(base_url=platform.http, timeout=30) as http:
        response = await http.post("/v1/chat/completions", json=body,
                                   headers={"authorization": f"Bearer {key}", **(headers or {})})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def upstream(platform: Platform, last_text: str) -> RequestRecord:
    """The last request the simulator received whose last message is ``last_text``."""
    stats = await asyncio.to_thread(fetch_stats, platform.sim_url)
    records = [r for r in stats.recent if r.messages and r.messages[-1] == ("user", last_text)]
    assert records, "the simulator received no such request"
    return records[-1]


def remembered(record: RequestRecord) -> list[str]:
    return [text for role, text in record.messages if role == "system" and text.startswith(OPEN_TAG)]


async def wait_for_memory(platform: Platform, tenant: str, needle: str, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    sql = "SELECT count(*) FROM memories WHERE tenant_id = :t AND text LIKE :n"
    while not await platform.scalar(sql, t=tenant, n=f"%{needle}%"):
        assert asyncio.get_running_loop().time() < deadline, "the worker did not remember the turn in time"
        await asyncio.sleep(0.1)


async def turn_events(platform: Platform, tenant: str) -> int:
    return int(await platform.scalar(
        "SELECT count(*) FROM outbox WHERE subject = :s", s=f"lumina.{tenant}.chat.turn_completed"))


@pytest.fixture(scope="module")
async def told(platform: Platform) -> dict[str, Any]:
    """Turn 1, conversation A: the user tells the fact; the worker remembers it."""
    first = await openai_chat(platform, platform.key, FACT, conversation="conv-a")
    await wait_for_memory(platform, platform.tenant, "Clara")
    return first


async def test_a_fact_from_conversation_a_reaches_the_provider_in_conversation_b(
    platform: Platform, told: dict[str, Any]
) -> None:
    assert told["choices"][0]["message"]["content"]
    assert told["lumina"]["route"]["notes"]["memory_skipped"] == "none_found"  # nothing remembered yet
    conversation = await platform.scalar(
        "SELECT conversation_id FROM memories WHERE tenant_id = :t AND text = :x", t=platform.tenant, x=f"user: {FACT}")
    assert conversation == "conv-a"

    second = await openai_chat(platform, platform.key, QUESTION, conversation="conv-b", system="You are terse.")
    notes = second["lumina"]["route"]["notes"]
    assert int(notes["memories"]) >= 1 and 0 < int(notes["memory_tokens"]) <= 1000

    record = await upstream(platform, QUESTION)
    roles = [role for role, _ in record.messages]
    assert roles == ["system", "system", "user"]  # the caller's system message, then the memories, then the question
    assert record.messages[0] == ("system", "You are terse.")
    [block] = remembered(record)
    assert FACT in block and "another conversation" in block and block.rstrip().endswith("</remembered_context>")


async def test_memory_off_for_the_request_on_every_edge(platform: Platform, told: dict[str, Any]) -> None:
    before = await turn_events(platform, platform.tenant)

    q1 = f"{QUESTION} (header {uuid.uuid4().hex[:6]})"
    answer = await openai_chat(platform, platform.key, q1, headers={"x-lumina-memory": "off"})
    assert remembered(await upstream(platform, q1)) == []
    assert answer["lumina"]["route"]["notes"] == {"memory_skipped": "off_request"}

    q2 = f"{QUESTION} (body {uuid.uuid4().hex[:6]})"
    await openai_chat(platform, platform.key, q2, lumina={"memory": False})
    assert remembered(await upstream(platform, q2)) == []

    q3 = f"{QUESTION} (anthropic {uuid.uuid4().hex[:6]})"
    client = anthropic.AsyncAnthropic(api_key=platform.key, base_url=platform.http, max_retries=0)
    await client.messages.create(model="sim-small", max_tokens=64, messages=[{"role": "user", "content": q3}],
                                 extra_headers={"x-lumina-memory": "off"})
    assert remembered(await upstream(platform, q3)) == []

    q4 = f"{QUESTION} (grpc {uuid.uuid4().hex[:6]})"
    off = await grpc_complete(platform, q4, memory=False)
    assert remembered(await upstream(platform, q4)) == []
    assert dict(off.metadata.notes) == {"memory_skipped": "off_request"}

    # none of these turns is remembered
    await asyncio.sleep(0.5)
    assert await turn_events(platform, platform.tenant) == before

    # the same edges with memory on (the default) do recall it
    q5 = f"{QUESTION} (anthropic on {uuid.uuid4().hex[:6]})"
    await client.messages.create(model="sim-small", max_tokens=64, messages=[{"role": "user", "content": q5}])
    assert FACT in remembered(await upstream(platform, q5))[0]
    q6 = f"{QUESTION} (grpc on {uuid.uuid4().hex[:6]})"
    on = await grpc_complete(platform, q6, memory=None)
    assert FACT in remembered(await upstream(platform, q6))[0]
    assert int(on.metadata.notes["memories"]) >= 1 and float(on.metadata.notes["memory_ms"]) > 0


async def grpc_complete(platform: Platform, text: str, *, memory: bool | None) -> pb.CompleteResponse:
    params = pb.ChatParameters(model="sim-small", messages=[pb.ChatMessage(role=pb.ROLE_USER, content=text)])
    if memory is not None:
        params.memory = memory
    async with grpc.aio.insecure_channel(f"127.0.0.1:{platform.backend.grpc_port}") as channel:
        return await chat_pb2_grpc.ChatServiceStub(channel).Complete(  # type: ignore[no-any-return]
            pb.CompleteRequest(parameters=params), metadata=(("authorization", f"Bearer {platform.key}"),), timeout=30
        )


async def test_another_tenant_and_another_user_never_receive_it(platform: Platform, told: dict[str, Any]) -> None:
    for key, label in ((platform.other_key, "tenant"), (platform.colleague_key, "colleague")):
        q = f"{QUESTION} ({label} {uuid.uuid4().hex[:6]})"
        await openai_chat(platform, key, q, conversation="conv-a")
        record = await upstream(platform, q)
        assert all("Clara" not in text for _, text in record.messages), label


async def test_memory_off_for_the_tenant(platform: Platform, told: dict[str, Any]) -> None:
    set_switch = "UPDATE tenants SET memory_enabled = :on WHERE id = :t"
    async with platform.engine.begin() as conn:
        await conn.execute(sa.text(set_switch), {"on": False, "t": platform.tenant})
    try:
        before = await turn_events(platform, platform.tenant)
        q = f"{QUESTION} (tenant off {uuid.uuid4().hex[:6]})"
        answer = await openai_chat(platform, platform.key, q, lumina={"memory": True})  # a request cannot override it
        assert remembered(await upstream(platform, q)) == []
        assert answer["lumina"]["route"]["notes"] == {"memory_skipped": "off_tenant"}
        assert await turn_events(platform, platform.tenant) == before
    finally:
        async with platform.engine.begin() as conn:
            await conn.execute(sa.text(set_switch), {"on": True, "t": platform.tenant})
    q = f"{QUESTION} (tenant on {uuid.uuid4().hex[:6]})"
    await openai_chat(platform, platform.key, q)
    assert FACT in remembered(await upstream(platform, q))[0]


async def test_bad_switch_values_are_rejected_at_the_edge(platform: Platform) -> None:
    async with httpx.AsyncClient(base_url=platform.http, timeout=30) as http:
        response = await http.post(
            "/v1/chat/completions", json={"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {platform.key}", "x-lumina-memory": "maybe"},
        )
    assert response.status_code in (400, 422) and "x-lumina-memory" in response.text



async def test_the_tenant_switch_is_stored_with_the_tenant_policy(platform: Platform) -> None:
    """``TenantPolicy.memory_enabled`` through the identity repository, read back by the hook's
    lookup (``PostgresTenantPolicies``); an unknown tenant has no row."""
    ctx = platform.backend.identity.ctx
    lookup = PostgresTenantPolicies(platform.engine)
    other = platform.other_tenant
    assert (await lookup.policy(other)) == TenantPolicy()
    async with ctx.uow() as uow:
        await uow.tenants.set_policy(other, TenantPolicy(require_mfa=True, memory_enabled=False))
        await uow.commit()
    try:
        assert (await lookup.policy(other)) == TenantPolicy(require_mfa=True, memory_enabled=False)
        async with ctx.uow() as uow:
            tenant = await uow.tenants.get(other)
        assert tenant is not None and tenant.policy.memory_enabled is False
    finally:
        async with ctx.uow() as uow:
            await uow.tenants.set_policy(other, TenantPolicy())
            await uow.commit()
    assert await lookup.policy("no-such-tenant") is None
