"""Memory through the provider layer, against the real provider simulator (OpenAI wire format) and
real Postgres: ``memory_embedder = "provider:<model>"`` embeds through ``EmbedTexts`` (the
catalogue resolves the model, the OpenAI SDK client calls ``/v1/embeddings``) into a collection
of the model's own size; ``memory_summary_model`` writes session summaries through a chat model,
falling back to the extractive summary when the provider fails. Also: a backend whose local model
was never built fails at start with one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from adapters.postgres.engine import start_mappers
from adapters.providers import OpenAIProvider
from api.auth import StaticAuthenticator
from api.bootstrap import Backend, build_backend
from api.memory import MemoryModelMissing, memory_embedder
from api.settings import load_settings
from application.memory import TurnInput
from application.memory.consolidate import ProviderSummarizer, summary_id
from application.memory.extract import ProviderFactExtractor
from domain.cost import Price
from domain.identity import Principal, PrincipalKind, Role
from domain.registry import ModelRoute, ProviderKind, ProviderSpec
from tools.provider_sim.testing import fetch_stats, running_simulator

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with running_simulator() as base_url:
        yield base_url


def seed() -> tuple[list[ProviderSpec], list[ModelRoute]]:
    return (
        [
            ProviderSpec("sim", ProviderKind.OPENAI_COMPATIBLE, label="simulated"),
            ProviderSpec("sim-broken", ProviderKind.OPENAI_COMPATIBLE, label="simulated"),
        ],
        [
            ModelRoute("m", "sim", "sim-small", Price(1, 2), is_default=True),
            ModelRoute("embed", "sim", "sim-embed", Price(0.02, 0)),
            ModelRoute("broken", "sim-broken", "sim-small", Price(1, 2)),
        ],
    )


@pytest.fixture
async def backend(database_url: str, sim: str) -> AsyncIterator[tuple[Backend, str]]:
    tenant = f"tp-{uuid.uuid4().hex[:8]}"
    providers = [
        OpenAIProvider("sim", api_key="k", base_url=sim, timeout=10),
        OpenAIProvider("sim-broken", api_key="k", base_url=sim, timeout=10, default_headers={"x-sim-fault": "500"}),
    ]
    settings = load_settings(
        {}, database_url=database_url, tenant_id="memprov", memory_embedder="provider:embed", memory_summary_model="m"
    )
    principal = Principal(tenant, "alice", Role.MEMBER, PrincipalKind.API_KEY, "key-alice")
    start_mappers()  # routes made before the mapping starts would not be persistable
    built = build_backend(settings, providers=providers, seed=seed(), authenticator=StaticAuthenticator({"tok": principal}))
    await built.start(grpc_port=0, http_port=0)
    try:
        yield built, tenant
    finally:
        await built.stop()


async def test_provider_embeddings_and_summaries(backend: tuple[Backend, str], sim: str) -> None:
    b, tenant = backend
    memory = b.memory
    assert memory.embedder.model == "provider:embed" and memory.embedder.dimensions == 64  # sim-embed's size
    assert memory.collection == "memory_embed_64"
    before = (await asyncio.to_thread(fetch_stats, sim)).requests
    headers = {"authorization": "Bearer tok"}
    texts = [
        "I adopted a golden retriever puppy named Biscuit.",
        "We talked about the cello lessons on Tuesday.",
        "Biscuit chewed my favourite shoes yesterday.",
        "The community school has a new cello teacher.",
    ]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{b.http_port}", timeout=30) as http:
        for i, text in enumerate(texts):
            r = await http.post(
                "/v1/memory/memories",
                json={"text": text, "role": "user", "conversation_id": "c1", "occurred_at": f"2025-05-01T10:0{i}:00Z"},
                headers=headers,
            )
            assert r.status_code == 201, r.text
        found = (await http.post("/v1/memory/search", json={"query": "Biscuit puppy", "limit": 2}, headers=headers)).json()
    assert found["hits"] and "Biscuit" in found["hits"][0]["passage"]
    assert (await asyncio.to_thread(fetch_stats, sim)).requests > before  # the embeddings went to the simulator
    async with b.engine.connect() as conn:  # type: ignore[union-attr]
        dims = (await conn.execute(
            sa.text("SELECT vector_dims(embedding) FROM vectors_memory_embed_64 WHERE tenant_id = :t"), {"t": tenant}
        )).scalars().all()
    assert dims == [64] * 4

    report = await memory.consolidate(tenant, "alice")
    (summary,) = [o for o in report.outcomes if o.kind == "summary"]
    assert summary.op == "add" and summary.reason.startswith("provider m summary of 4 turns")
    assert summary.memory_id == summary_id("alice", "c1")
    view = await memory.use.get(tenant, "alice", summary.memory_id)
    assert view.kind == "summary" and len(view.memory.text) > len("summary: ")

    turns = await memory.store.conversation_turns(tenant, "alice", "c1", 10)
    fallback = await ProviderSummarizer(b.catalog, b.providers, "broken").summarize(turns, 2)
    assert fallback.via.startswith("extractive (provider broken failed") and fallback.text
    assert set(fallback.source_ids) <= {t.id for t in turns}


def test_a_missing_local_model_fails_with_one_line(tmp_path: Path) -> None:
    settings = load_settings({}, memory_model_dir=str(tmp_path))
    with pytest.raises(MemoryModelMissing) as missing:
        memory_embedder(settings)
    assert "make install" in str(missing.value) and "LUMINA_MEMORY_ENABLED=false" in str(missing.value)
    for command in ("serve", "worker"):
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LUMINA_")},
            "LUMINA_MEMORY_MODEL_DIR": str(tmp_path),
            "LUMINA_DATABASE_URL": "postgresql://lumina@127.0.0.1:1/nowhere",
            "LUMINA_NATS_URL": "nats://127.0.0.1:1",
            "LUMINA_REDIS_URL": "redis://127.0.0.1:1",
            "LUMINA_DATA_DIR": str(tmp_path / "data"),
        }
        done = subprocess.run(
            [sys.executable, "-m", "api.cli", command], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 1, (command, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lumina: memory: embedding model files missing in"), (command, done.stderr)
        assert "make install" in lines[0] and "Traceback" not in done.stderr


def metered_seed() -> tuple[list[ProviderSpec], list[ModelRoute]]:
    return (
        [ProviderSpec("sim", ProviderKind.OPENAI_COMPATIBLE, label="simulated")],
        [
            ModelRoute("m", "sim", "sim-small", Price(3, 5), is_default=True),
            ModelRoute("embed", "sim", "sim-embed", Price(2, 0)),  # micro-dollars per token: costs are visible
        ],
    )


@pytest.fixture
async def metered(database_url: str, redis_url: str, sim: str) -> AsyncIterator[tuple[Backend, str]]:
    tenant = f"tm-{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        {}, database_url=database_url, redis_url=redis_url, tenant_id="memmeter", memory_embedder="provider:embed",
        memory_summary_model="m", memory_extraction_model="m",
    )
    tokens = {
        "tok": Principal(tenant, "alice", Role.MEMBER, PrincipalKind.API_KEY, "key-alice"),
        "adm": Principal(tenant, "root", Role.ADMIN, PrincipalKind.API_KEY, "key-root"),
    }
    start_mappers()
    built = build_backend(
        settings, providers=[OpenAIProvider("sim", api_key="k", base_url=sim, timeout=10)], seed=metered_seed(),
        authenticator=StaticAuthenticator(tokens),
    )
    await built.start(grpc_port=0, http_port=0)
    try:
        yield built, tenant
    finally:
        await built.stop()


async def test_memorys_provider_calls_are_usage_rows_and_budget_charges(metered: tuple[Backend, str]) -> None:
    """Embeddings (memories and queries), the session summary and the fact extraction memory asks
    providers for are each a usage row (tenant, user, provider, model, tokens, cost at the
    registry's price, operation) and are charged to the user's budget through the budget port."""
    b, tenant = metered
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{b.http_port}", timeout=30) as http:
        made = await http.post("/v1/budgets", headers={"authorization": "Bearer adm"}, json={
            "name": "alice", "scope": "user", "scope_id": "alice", "limit_micros": 10**9, "period": "daily"})
        assert made.status_code == 201, made.text
        budget = made.json()["id"]
        for i, text in enumerate([
            "I adopted a golden retriever puppy named Biscuit.", "We talked about the cello lessons on Tuesday.",
            "Biscuit chewed my favourite shoes yesterday.", "The community school has a new cello teacher.",
        ]):
            r = await http.post("/v1/memory/memories", headers={"authorization": "Bearer tok"}, json={
                "text": text, "role": "user", "conversation_id": "c1", "occurred_at": f"2025-05-01T10:0{i}:00Z"})
            assert r.status_code == 201, r.text
        found = await http.post("/v1/memory/search", json={"query": "Biscuit puppy", "limit": 2}, headers={"authorization": "Bearer tok"})
        assert found.status_code == 200
        report = await b.memory.consolidate(tenant, "alice")
        assert [o.reason.split(" of ")[0] for o in report.outcomes if o.kind == "summary"] == ["provider m summary"]

        async with b.engine.connect() as conn:  # type: ignore[union-attr]
            rows = (await conn.execute(sa.text(
                "SELECT operation, user_id, provider, model, input_tokens, output_tokens, cost_micros FROM usage_records "
                "WHERE tenant_id = :t ORDER BY created_at"), {"t": tenant})).all()
        by_op: dict[str, list[sa.Row[tuple[object, ...]]]] = {}
        for row in rows:
            by_op.setdefault(row.operation, []).append(row)
        assert set(by_op) == {"memory.embedding", "memory.summary", "memory.extraction"}, set(by_op)
        assert all(r.user_id == "alice" and r.provider == "sim" for r in rows)
        for r in by_op["memory.embedding"]:  # the four memories, the query, the fact texts
            assert r.model == "embed" and r.input_tokens > 0 and r.output_tokens == 0 and r.cost_micros == 2 * r.input_tokens
        for op in ("memory.summary", "memory.extraction"):
            for r in by_op[op]:
                assert r.model == "m" and r.input_tokens > 0 and r.output_tokens > 0
                assert r.cost_micros == 3 * r.input_tokens + 5 * r.output_tokens
        total = sum(int(r.cost_micros) for r in rows)

        async def charged() -> int:
            status = await http.get(f"/v1/budgets/{budget}/status", headers={"authorization": "Bearer adm"})
            assert status.status_code == 200, status.text
            return int(status.json()["spent_micros"])

        for _ in range(50):  # settled entries reach the ledger at once; the durable copy may trail
            if await charged() == total:
                break
            await asyncio.sleep(0.1)
        assert await charged() == total > 0


async def test_provider_fact_extraction_is_structured_validated_and_falls_back(backend: tuple[Backend, str], sim: str) -> None:
    """The simulator answers the JSON schema deterministically: every fact names a turn in range
    and a known kind, and becomes a statement with that turn as provenance; a provider failure
    falls back to the rules for the batch."""
    b, tenant = backend
    memory = b.memory
    for i, text in enumerate(["I adopted a puppy named Biscuit yesterday.", "I love cello music."]):
        await memory.ingest(tenant, "alice", "cx", [TurnInput("user", text, 1_750_000_000 + 60 * i)])
    turns = await memory.store.conversation_turns(tenant, "alice", "cx", 10)
    extractor = ProviderFactExtractor(b.catalog, b.providers, "m")
    first = await extractor.extract(turns)
    assert first == await extractor.extract(turns)  # deterministic
    assert extractor.fallbacks == 0 and len(first) == 2 and sum(map(len, first)) >= 1
    assert {s.kind for found in first for s in found} <= {"event", "plan", "activity", "preference", "has", "identity", "relation"}
    assert all(s.subject and s.predicate and s.object for found in first for s in found)
    broken = ProviderFactExtractor(b.catalog, b.providers, "broken")
    fallen = await broken.extract(turns)
    assert broken.fallbacks == 1
    assert [[s.text for s in found] for found in fallen] == [
        ["user adopted a puppy named Biscuit on 2025-06-14"], ["user loves cello music"],
    ]
