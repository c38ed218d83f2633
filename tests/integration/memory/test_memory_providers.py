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
from application.memory.consolidate import ProviderSummarizer, summary_id
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
