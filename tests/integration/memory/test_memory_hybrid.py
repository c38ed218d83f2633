"""The one-statement hybrid read (``PostgresMemoryRepository.hybrid``) against the real Postgres:
it returns what the separate reads return (full-text, pgvector query, neighbours), so search ranks
alike either way; it never reaches another user or tenant; ``count`` is exact."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.postgres.memory_repository import PostgresMemoryRepository
from adapters.postgres.vector_tables import DEFAULT_COLLECTION
from adapters.system import TimeOrderedIds
from adapters.vectorstores.pgvector import PgVectorStore
from application.memory import IngestTurns, SearchMemory, TurnInput
from application.memory.search import vector_filter
from domain.memory.ranking import MemoryFilter
from domain.memory.tiers import Tier
from tests.integration.memory.conftest import NOW, FixedClock
from tests.unit.memory_app.hashing import HashEmbedder

DAY = 86400.0
LINES = [
    ("alice", "Good morning! How was your weekend?"),
    ("bob", "Great, I went hiking in the Dolomites with my sister Carla."),
    ("alice", "Nice. I finally adopted a golden retriever puppy named Biscuit."),
    ("bob", "Congratulations! My favourite band is Radiohead, by the way."),
    ("alice", "I am learning to play the cello at a community music school."),
    ("bob", "The weather was rainy and cold all week."),
]
QUERIES = ["what is the name of the puppy?", "band music", "hiking with my sister", "weather", "zzz unknown"]


async def _store(engine: AsyncEngine, tenant: str) -> tuple[PostgresMemoryRepository, PgVectorStore, HashEmbedder]:
    repo = PostgresMemoryRepository(engine, search_collection=DEFAULT_COLLECTION)
    store, embedder = PgVectorStore(engine), HashEmbedder()
    ingest = IngestTurns(repo, store, embedder, TimeOrderedIds())
    for n in range(3):  # three conversations, older and older
        turns = [
            TurnInput(role, f"{text} ({n})", NOW - (n * 30 + 10) * DAY + i * 60, f"D{n}:{i}")
            for i, (role, text) in enumerate(LINES)
        ]
        await ingest(tenant, "u1", f"c{n}", turns)
    await ingest(tenant, "u2", "c9", [TurnInput("eve", "Biscuit the puppy and Radiohead music.", NOW - DAY, "X")])
    await ingest(f"{tenant}-other", "u1", "c9", [TurnInput("eve", "Biscuit the puppy band.", NOW - DAY, "Y")])
    return repo, store, embedder


@pytest.mark.parametrize(
    "filters",
    [None, MemoryFilter(start=NOW - 50 * DAY), MemoryFilter(tiers=frozenset({Tier.EPISODIC}), end=NOW - 20 * DAY)],
)
async def test_hybrid_returns_what_the_separate_reads_return(engine: AsyncEngine, tenant: str, filters) -> None:
    repo, store, embedder = await _store(engine, tenant)
    for query in QUERIES:
        (vector,) = await embedder.embed([query])
        one = await repo.hybrid(tenant, "u1", query, vector, 5, filters, vector_filter("u1", filters))
        fulltext = await repo.fulltext(tenant, "u1", query, 5, filters)
        nearest = [h.id for h in await store.query(tenant, vector, 5, vector_filter("u1", filters))]
        rows, follows = await repo.with_neighbours(tenant, {*fulltext, *nearest}, 1)
        assert one.fulltext_ids == fulltext
        assert one.vector_ids == nearest
        assert sorted(m.id for m in one.memories) == sorted(m.id for m in rows)
        assert {(e.source, e.target) for e in one.follows} == {(e.source, e.target) for e in follows}
        assert {m.user_id for m in one.memories} <= {"u1"} and {m.tenant_id for m in one.memories} <= {tenant}


async def test_search_ranks_alike_with_one_statement_or_separate_reads(engine: AsyncEngine, tenant: str) -> None:
    repo, store, embedder = await _store(engine, tenant)
    separate = SearchMemory(repo, store, embedder, FixedClock(NOW))
    one = SearchMemory(repo, store, embedder, FixedClock(NOW), hybrid=repo)
    for query in QUERIES:
        a, b = await separate(tenant, "u1", query, k=5), await one(tenant, "u1", query, k=5)
        assert [(r.id, r.score, r.passage) for r in a.results] == [(r.id, r.score, r.passage) for r in b.results]
    found = await one(tenant, "u1", "what is the name of the puppy?", k=3)
    assert "Biscuit" in found.results[0].passage
    assert all(r.source_id not in ("X", "Y") for r in found.results)


async def test_count_is_exact_per_user_and_tenant(engine: AsyncEngine, tenant: str) -> None:
    repo = PostgresMemoryRepository(engine)
    try:
        assert await repo.count(tenant, "u1") == 0
        await _store(engine, tenant)
        assert await repo.count(tenant, "u1") == 3 * len(LINES)
        assert await repo.count(tenant, "u2") == 1
        assert await repo.count(f"{tenant}-other", "u2") == 0
    finally:
        await repo.aclose()  # the count's kept connections


async def test_hybrid_needs_its_collection(engine: AsyncEngine, tenant: str) -> None:
    with pytest.raises(ValueError, match="search_collection"):
        await PostgresMemoryRepository(engine).hybrid(tenant, "u1", "q", [0.0] * 384, 5, None, vector_filter("u1", None))
