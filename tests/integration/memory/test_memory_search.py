"""IngestTurns + SearchMemory against the real Postgres: full-text + pgvector + graph, tenant
scoping, tier/time filters, and one run with the real all-MiniLM-L6-v2 ONNX embedder."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.onnx import DEFAULT_MODEL_DIR, OnnxEmbedder
from adapters.postgres.memory_repository import PostgresMemoryRepository
from adapters.postgres.vector_tables import DEFAULT_COLLECTION
from adapters.system import TimeOrderedIds
from adapters.vectorstores.pgvector import PgVectorStore
from application.memory import IngestTurns, SearchMemory, StoredMemory, TurnInput
from domain.memory.ranking import MemoryFilter, RankingWeights
from domain.memory.tiers import Tier
from tests.integration.memory.conftest import NOW, FixedClock
from tests.unit.memory_app.hashing import HashEmbedder

DAY = 86400.0

CONVERSATION = [
    ("alice", "Good morning! How was your weekend?"),
    ("bob", "Great, I went hiking in the Dolomites with my sister Carla."),
    ("alice", "Nice. I finally adopted a golden retriever puppy named Biscuit."),
    ("bob", "Congratulations! My favourite band is Radiohead, by the way."),
    ("alice", "I am learning to play the cello at a community music school."),
    ("bob", "The weather was rainy and cold all week."),
]

Memories = tuple[IngestTurns, SearchMemory, PostgresMemoryRepository]


def _turns(start: float = NOW - 10 * DAY) -> list[TurnInput]:
    return [
        TurnInput(role=role, text=text, at=start + i * 60, source_id=f"D1:{i + 1}")
        for i, (role, text) in enumerate(CONVERSATION)
    ]


async def test_the_relevant_turn_ranks_first_and_explains_its_score(memory: Memories, tenant: str) -> None:
    ingest, search, repo = memory
    stored = await ingest(tenant, "u1", "c1", _turns())
    assert len(stored) == len(CONVERSATION)

    response = await search(tenant, "u1", "what is the name of alice's dog puppy?", k=3)

    top = response.results[0]  # the best context window: the turn itself or a neighbour showing it
    assert "D1:3" in {top.source_id, *(c.source_id for c in (*top.before, *top.after))}
    assert "Biscuit" in top.passage
    assert top.explanation.fulltext_rank is not None and top.explanation.vector_rank is not None
    assert top.score == pytest.approx(top.explanation.score)
    assert response.tokens_used <= 2000
    # Neighbouring turns are reachable through ``follows`` edges.
    edges = await repo.edges_touching(tenant, [top.id], ["follows"])
    assert {e.kind for e in edges} == {"follows"} and len(edges) == 2


async def test_graph_expansion_brings_in_the_turn_before_a_hit(engine: AsyncEngine, tenant: str) -> None:
    repo, store, embedder = PostgresMemoryRepository(engine), PgVectorStore(engine), HashEmbedder()
    ingest = IngestTurns(repo, store, embedder, TimeOrderedIds(), window=0)  # single turns
    await ingest(tenant, "u1", "c1", _turns())
    filler = [TurnInput("zed", f"A band plays tune number {i}.", NOW - 200 * DAY + i) for i in range(30)]
    await ingest(tenant, "u1", "c2", filler)
    # Shallow candidate lists: the turn before the hit is reachable only through the graph.
    # Older turns sharing the query's words fill both lists; a strong graph weight lifts the neighbour.
    weights = RankingWeights(edge_kinds=frozenset({"follows"}), depth=1, seeds=1, graph=1.0, decay=0.9)
    search = SearchMemory(repo, store, embedder, FixedClock(NOW), candidates=1, weights=weights, window=0)
    response = await search(tenant, "u1", "Radiohead band", k=3)
    by_source = {r.source_id: r for r in response.results}
    assert response.results[0].source_id == "D1:4"
    assert "D1:3" in by_source
    explanation = by_source["D1:3"].explanation
    assert explanation.graph_hops == 1 and explanation.graph > 0
    assert explanation.fulltext_rank is None and explanation.vector_rank is None


async def test_search_never_returns_another_tenants_or_users_memories(memory: Memories, tenant: str) -> None:
    ingest, search, repo = memory
    other = tenant + "-other"
    await ingest(tenant, "u1", "c1", _turns())
    await ingest(other, "u1", "c9", [TurnInput("eve", "My puppy Biscuit loves the park.", NOW - DAY)])
    await ingest(tenant, "u2", "c2", [TurnInput("mallory", "Biscuit the puppy chewed my shoes.", NOW - DAY)])

    mine = await search(tenant, "u1", "puppy Biscuit", k=10)
    assert mine.results and {r.conversation_id for r in mine.results} == {"c1"}
    theirs = await search(other, "u1", "puppy Biscuit", k=10)
    assert [r.conversation_id for r in theirs.results] == ["c9"]
    assert await repo.fulltext(other, "u1", "cello", 10) == []
    assert await repo.get_many(other, [r.id for r in mine.results]) == []


async def test_filters_by_tier_and_time(memory: Memories, tenant: str) -> None:
    ingest, search, repo = memory
    await ingest(tenant, "u1", "old", [TurnInput("bob", "I play the cello on Sundays.", NOW - 100 * DAY)])
    await ingest(tenant, "u1", "new", [TurnInput("bob", "I sold my cello last week.", NOW - 2 * DAY)])
    fact = StoredMemory(
        id="fact-1", tenant_id=tenant, user_id="u1", conversation_id="new", tier=Tier.SEMANTIC,
        text="bob owns a cello", at=NOW - DAY,
    )
    await repo.add(tenant, [fact])

    recent = await search(tenant, "u1", "cello", k=10, filters=MemoryFilter(start=NOW - 10 * DAY))
    assert {r.conversation_id for r in recent.results} == {"new"}
    old = await search(tenant, "u1", "cello", k=10, filters=MemoryFilter(end=NOW - 10 * DAY))
    assert [r.conversation_id for r in old.results] == ["old"]
    semantic = await search(tenant, "u1", "cello", k=10, filters=MemoryFilter(tiers=frozenset({Tier.SEMANTIC})))
    assert [r.id for r in semantic.results] == ["fact-1"]
    episodic = await search(tenant, "u1", "cello", k=10, filters=MemoryFilter(tiers=frozenset({Tier.EPISODIC})))
    assert len(episodic.results) == 2 and all(r.tier is Tier.EPISODIC for r in episodic.results)


async def test_results_are_packed_into_the_token_budget(memory: Memories, tenant: str) -> None:
    ingest, search, _ = memory
    await ingest(tenant, "u1", "c1", _turns())
    response = await search(tenant, "u1", "hiking puppy cello band weather", k=6, token_budget=40)
    assert response.results
    assert response.tokens_used <= 40
    assert response.skipped_ids


async def test_topics_and_entities_are_recorded(memory: Memories, tenant: str) -> None:
    ingest, _, repo = memory
    stored = await ingest(tenant, "u1", "c1", _turns())
    topics = await repo.topics(tenant, "u1")
    assert topics and sum(t.size for t in topics) == len(CONVERSATION)
    assert {m.topic_id for m in stored} <= {t.id for t in topics}
    carla = next(m for m in stored if m.source_id == "D1:2")
    assert "carla" in carla.entities and "dolomites" in carla.entities
    mentions = await repo.edges_touching(tenant, ["entity:carla"], ["mentions"])
    assert [e.source for e in mentions] == [carla.id]


async def test_with_the_real_onnx_embedder(engine: AsyncEngine, tenant: str) -> None:
    embedder = OnnxEmbedder(DEFAULT_MODEL_DIR)
    repo, store = PostgresMemoryRepository(engine), PgVectorStore(engine)
    ingest = IngestTurns(repo, store, embedder, TimeOrderedIds())
    search = SearchMemory(repo, store, embedder, FixedClock(NOW))
    await ingest(tenant, "u1", "c1", _turns())

    # Paraphrase: no shared content word with the turn, so only the dense side can find it.
    response = await search(tenant, "u1", "which musical instrument is alice studying?", k=3)
    top = response.results[0]  # the best context window: the turn itself or a neighbour showing it
    assert "D1:5" in {top.source_id, *(c.source_id for c in (*top.before, *top.after))}
    assert "cello" in top.passage and top.explanation.vector_rank is not None


async def test_get_many_reads_the_embeddings_and_mmr_penalises_a_duplicate_by_cosine(
    engine: AsyncEngine, tenant: str
) -> None:
    repo = PostgresMemoryRepository(engine, vector_collection=DEFAULT_COLLECTION)
    store, embedder = PgVectorStore(engine), HashEmbedder()
    ingest = IngestTurns(repo, store, embedder, TimeOrderedIds(), window=0)  # vectors of single turns
    stored = await ingest(tenant, "u1", "c1", _turns())
    loaded = {m.id: m for m in await repo.get_many(tenant, [m.id for m in stored])}
    (expected,) = await embedder.embed([loaded[stored[2].id].text])
    vector = loaded[stored[2].id].vector
    assert vector is not None and vector == pytest.approx(expected, abs=1e-6)
    assert all(m.vector is None for m in await PostgresMemoryRepository(engine).get_many(tenant, loaded))

    # The same turn said twice, in another conversation: MMR's penalty for the second copy is
    # (1 - lambda) * cosine = 0.3 * 1.0 (token Jaccard would give the same here, so the vector is
    # checked above and the penalty pins the arithmetic).
    await ingest(tenant, "u1", "c2", [TurnInput("alice", CONVERSATION[2][1], NOW - 5 * DAY, source_id="D2:1")])
    search = SearchMemory(repo, store, embedder, FixedClock(NOW), window=0)
    response = await search(tenant, "u1", "golden retriever puppy Biscuit", k=6)
    copies = [r for r in response.results if r.source_id in ("D1:3", "D2:1")]
    assert len(copies) == 2 and response.results[0] is copies[0]
    assert copies[0].explanation.mmr_penalty == 0.0
    assert copies[1].explanation.mmr_penalty == pytest.approx(0.3, abs=1e-6)


async def test_bm25_weighs_a_rare_word_over_one_every_memory_has(engine: AsyncEngine, tenant: str) -> None:
    repo, store, embedder = PostgresMemoryRepository(engine), PgVectorStore(engine), HashEmbedder()
    ingest = IngestTurns(repo, store, embedder, TimeOrderedIds(), window=0)
    texts = [f"Dana said the garden looks lovely, day {i}." for i in range(12)]
    texts[5] = "The oboe recital was moved to Friday."
    turns = [TurnInput("dana", t, NOW - DAY + i, source_id=f"D1:{i}") for i, t in enumerate(texts)]
    stored = {m.source_id: m.id for m in await ingest(tenant, "u1", "c1", turns)}
    # "dana" (every memory, as the speaker) and "garden" (11 of 12) say little; "oboe" one memory.
    ranked = await repo.fulltext(tenant, "u1", "dana garden oboe", 12)
    assert ranked[0] == stored["D1:5"] and len(ranked) == 12
    assert len(await PostgresMemoryRepository(engine, scoring="ts_rank").fulltext(tenant, "u1", "dana garden oboe", 12)) == 12
    # Common words alone still find memories (no word is selective: all of them are used).
    assert len(await repo.fulltext(tenant, "u1", "garden", 20)) == 11
    assert await repo.fulltext(tenant, "u1", "zeppelin", 5) == []


async def test_a_turn_is_found_by_the_words_of_the_turn_it_answers(engine: AsyncEngine, tenant: str) -> None:
    turns = [
        TurnInput("ann", "Which instrument did your son pick in the end?", NOW - 300, "D1:1"),
        TurnInput("ben", "He chose the trombone, loud as it is.", NOW - 240, "D1:2"),
        TurnInput("ann", "Any plans for the holidays?", NOW - 180, "D1:3"),
        TurnInput("ben", "We might visit my aunt in Galway.", NOW - 120, "D1:4"),
    ]
    repo, store, embedder = PostgresMemoryRepository(engine), PgVectorStore(engine), HashEmbedder()
    plain = IngestTurns(repo, store, embedder, TimeOrderedIds(), window=0)
    stored = await plain(tenant, "u1", "c1", turns)
    assert stored[1].id not in await repo.fulltext(tenant, "u1", "instrument son", 10)
    windowed = IngestTurns(repo, store, embedder, TimeOrderedIds())
    assert await windowed.reindex(tenant, [m.id for m in stored]) == 4
    found = await repo.fulltext(tenant, "u1", "instrument son", 10)
    assert stored[1].id in found and stored[3].id not in found  # D1:2's window holds the question
    search = SearchMemory(repo, store, embedder, FixedClock(NOW))
    response = await search(tenant, "u1", "which instrument did the son pick?", k=1)
    assert "trombone" in response.results[0].passage and "instrument" in response.results[0].passage


async def test_bm25_statistics_follow_every_write(engine: AsyncEngine, tenant: str) -> None:
    repo = PostgresMemoryRepository(engine)

    async def stats() -> tuple[int, int, int]:
        async with engine.connect() as conn:
            docs, lexemes = (
                await conn.execute(
                    sa.text("SELECT docs, lexemes FROM memory_search_stats WHERE tenant_id = :t AND user_id = 'u1'"),
                    {"t": tenant},
                )
            ).one()
            df = await conn.scalar(
                sa.text("SELECT df FROM memory_lexemes WHERE tenant_id = :t AND user_id = 'u1' AND lexeme = 'kayak'"),
                {"t": tenant},
            )
        return docs, lexemes, df or 0

    def memory(mid: str, text: str) -> StoredMemory:
        return StoredMemory(id=mid, tenant_id=tenant, user_id="u1", conversation_id="c", tier=Tier.EPISODIC, text=text, at=NOW)

    await repo.add(tenant, [memory("m1", "my kayak is red"), memory("m2", "the kayak club meets"), memory("m3", "rain")])
    assert await stats() == (3, 2 + 3 + 1, 2)  # lexemes: kayak red / kayak club meet / rain
    await repo.set_windows(tenant, {"m3": "rain\nmy kayak is red"})
    assert await stats() == (3, 2 + 3 + 3, 3)
    await repo.set_windows(tenant, {"m3": ""})  # back to its own text
    assert await stats() == (3, 6, 2)
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE memories SET importance = 0.9 WHERE tenant_id = :t"), {"t": tenant})
        await conn.execute(sa.text("DELETE FROM memories WHERE tenant_id = :t AND id = 'm1'"), {"t": tenant})
    assert await stats() == (2, 4, 1)
