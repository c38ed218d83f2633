"""IngestTurns and SearchMemory on in-memory fakes of their ports."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from application.memory import IngestTurns, SearchMemory, TurnInput
from application.memory.ingest import extract_entities
from application.memory.search import approximate_tokens, vector_filter
from domain.errors import InvalidRequest
from domain.memory.ranking import MemoryFilter
from domain.memory.tiers import Tier
from domain.memory.vectors import Eq, In, Range
from tests.unit.memory_app.fakes import FakeMemoryRepository, FakeVectorStore
from tests.unit.memory_app.hashing import HashEmbedder

NOW = 1_760_000_000.0
DAY = 86400.0


class Clock:
    def now(self) -> datetime:
        return datetime.fromtimestamp(NOW, UTC)

    def monotonic(self) -> float:
        return 0.0


class Ids:
    def __init__(self) -> None:
        self._n = itertools.count(1)

    def new_id(self) -> str:
        return f"id{next(self._n):04d}"


TURNS = [
    TurnInput("alice", "We spent the summer in Lisbon with Maria.", NOW - 5 * DAY, "D1:1"),
    TurnInput("bob", "My daughter started violin lessons.", NOW - 5 * DAY + 60, "D1:2"),
    TurnInput("alice", "The violin teacher is very patient.", NOW - 5 * DAY + 120, "D1:3"),
]


@pytest.fixture
def parts() -> tuple[IngestTurns, SearchMemory, FakeMemoryRepository, FakeVectorStore]:
    repo, store, embedder = FakeMemoryRepository(), FakeVectorStore(), HashEmbedder()
    return IngestTurns(repo, store, embedder, Ids()), SearchMemory(repo, store, embedder, Clock()), repo, store


async def test_ingest_stores_memories_vectors_topics_and_edges(parts) -> None:
    ingest, _, repo, store = parts
    stored = await ingest("t1", "u1", "c1", TURNS)

    assert [m.source_id for m in stored] == ["D1:1", "D1:2", "D1:3"]
    assert all(m.tier is Tier.EPISODIC and m.tenant_id == "t1" for m in stored)
    assert {("t1", m.id) for m in stored} == set(store.records)
    assert store.records[("t1", stored[0].id)].metadata["user_id"] == "u1"
    kinds = {(e.source, e.kind, e.target) for e in repo.edges.values()}
    assert (stored[1].id, "follows", stored[0].id) in kinds
    assert (stored[2].id, "follows", stored[1].id) in kinds
    assert (stored[0].id, "mentions", "entity:maria") in kinds
    assert all((m.id, "about", m.topic_id) in kinds for m in stored)
    topics = await repo.topics("t1", "u1")
    assert sum(t.size for t in topics) == 3

    # A later ingest in the same conversation follows on from the last memory.
    (later,) = await ingest("t1", "u1", "c1", [TurnInput("bob", "Thanks!", NOW - DAY)])
    assert (later.id, "follows", stored[2].id) in {(e.source, e.kind, e.target) for e in repo.edges.values()}


async def test_search_ranks_the_matching_turn_first_and_stays_in_the_tenant(parts) -> None:
    ingest, search, _, _ = parts
    await ingest("t1", "u1", "c1", TURNS)
    await ingest("t2", "u1", "c1", [TurnInput("eve", "Lisbon summer with Maria again.", NOW - DAY)])

    response = await search("t1", "u1", "where did alice spend the summer?", k=2)
    top = response.results[0]  # the best context window: the turn, or a neighbour showing it
    assert "D1:1" in {top.source_id, *(c.source_id for c in (*top.before, *top.after))}
    assert "Lisbon" in top.passage and top.explanation.fulltext_rank is not None
    assert all(r.conversation_id == "c1" for r in response.results)
    other = await search("t2", "u1", "Lisbon", k=5)
    assert [r.text for r in other.results] == ["eve: Lisbon summer with Maria again."]


async def test_search_packs_into_the_budget_and_applies_tier_filters(parts) -> None:
    ingest, search, _, _ = parts
    await ingest("t1", "u1", "c1", TURNS)
    tight = await search("t1", "u1", "violin lessons teacher", k=3, token_budget=15)
    assert tight.results and tight.tokens_used <= 15 and tight.skipped_ids
    none = await search("t1", "u1", "violin", k=3, filters=MemoryFilter(tiers=frozenset({Tier.SEMANTIC})))
    assert none.results == ()


async def test_bad_input_is_rejected(parts) -> None:
    ingest, search, _, _ = parts
    with pytest.raises(InvalidRequest):
        await search("bad tenant!", "u1", "x")
    with pytest.raises(InvalidRequest):
        await ingest("t1", "u1", "c1", [TurnInput("a", "hi", NOW, id="topic:x")])
    assert (await search("t1", "u1", "   ")).results == ()


def test_vector_filter_translates_tiers_time_and_topics() -> None:
    f = vector_filter("u1", MemoryFilter(tiers=frozenset({Tier.SEMANTIC}), start=1.0, end=2.0, topics=frozenset({"topic:a"})))
    assert f.conditions == (
        Eq("user_id", "u1"), In("tier", ("semantic",)), Range("at", gte=1.0, lt=2.0), In("topic_id", ("topic:a",))
    )


def test_entities_skip_sentence_starts_and_include_the_speaker() -> None:
    assert extract_entities("Yesterday I met Maria in Lisbon. She loved it.", "Bob") == ("bob", "lisbon", "maria")


def test_token_approximation() -> None:
    assert approximate_tokens("one two three") == 4
    assert approximate_tokens("") == 0
