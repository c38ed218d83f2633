"""SearchMemory's cheap paths: a user last seen without memories costs one exact count (shared by
concurrent requests of that user), not a search, and sees a memory as soon as it is stored; at
most ``max_concurrent`` searches reach the repository at once."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime

import pytest

from application.memory import IngestTurns, SearchMemory, TurnInput
from domain.errors import InvalidRequest
from domain.memory.ranking import MemoryFilter
from tests.unit.memory_app.fakes import FakeMemoryRepository, FakeVectorStore
from tests.unit.memory_app.hashing import HashEmbedder

NOW = 1_760_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(NOW, UTC)

    def monotonic(self) -> float:
        return self.t


class Ids:
    def __init__(self) -> None:
        self._n = itertools.count(1)

    def new_id(self) -> str:
        return f"id{next(self._n):04d}"


class CountingRepository(FakeMemoryRepository):
    def __init__(self) -> None:
        super().__init__()
        self.fulltext_calls = 0
        self.count_calls = 0
        self.active = 0
        self.peak = 0

    async def fulltext(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.fulltext_calls += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(0.01)
            return await super().fulltext(*args, **kwargs)
        finally:
            self.active -= 1


    async def count(self, tenant_id: str, user_id: str) -> int:
        self.count_calls += 1
        await asyncio.sleep(0.01)
        return await super().count(tenant_id, user_id)


TURN = TurnInput("alice", "We spent the summer in Lisbon with Maria.", NOW - 60, "D1:1")


@pytest.fixture
def parts() -> tuple[IngestTurns, SearchMemory, CountingRepository, Clock]:
    repo, store, embedder, clock = CountingRepository(), FakeVectorStore(), HashEmbedder(), Clock()
    search = SearchMemory(repo, store, embedder, clock, empty_ttl=10.0, max_concurrent=2)
    return IngestTurns(repo, store, embedder, Ids()), search, repo, clock


async def test_a_user_without_memories_costs_one_count_and_sees_a_new_memory_at_once(parts) -> None:
    ingest, search, repo, _ = parts
    assert (await search("t1", "u1", "Lisbon summer")).results == ()
    assert (repo.fulltext_calls, repo.count_calls) == (1, 0)
    assert (await search("t1", "u1", "anything else")).results == ()
    assert (repo.fulltext_calls, repo.count_calls) == (1, 1)  # a count, not a search

    await ingest("t1", "u1", "c1", [TURN])  # e.g. by the worker, in another process
    found = await search("t1", "u1", "Lisbon summer")
    assert [r.source_id for r in found.results] == ["D1:1"]
    assert (repo.fulltext_calls, repo.count_calls) == (2, 2)
    await search("t1", "u1", "Lisbon summer")
    assert repo.count_calls == 2  # a user with memories is searched straight away


async def test_concurrent_requests_of_an_empty_user_share_one_count(parts) -> None:
    _, search, repo, _ = parts
    await search("t1", "u1", "Lisbon")
    results = await asyncio.gather(*(search("t1", "u1", f"Lisbon {i}") for i in range(16)))
    assert all(r.results == () for r in results)
    assert (repo.fulltext_calls, repo.count_calls) == (1, 1)
    await search("t2", "u1", "Lisbon")  # another scope is searched on its own
    assert repo.fulltext_calls == 2


async def test_the_empty_mark_expires(parts) -> None:
    _, search, repo, clock = parts
    await search("t1", "u1", "Lisbon")
    clock.t += 10.0
    await search("t1", "u1", "Lisbon")
    assert (repo.fulltext_calls, repo.count_calls) == (2, 0)


async def test_a_filtered_search_finding_nothing_does_not_mark_the_user_empty(parts) -> None:
    ingest, search, repo, _ = parts
    await ingest("t1", "u1", "c1", [TURN])
    assert (await search("t1", "u1", "Lisbon", filters=MemoryFilter(start=NOW))).results == ()
    assert [r.source_id for r in (await search("t1", "u1", "Lisbon")).results] == ["D1:1"]
    assert repo.fulltext_calls == 2


async def test_at_most_max_concurrent_searches_reach_the_repository(parts) -> None:
    ingest, search, repo, _ = parts
    await ingest("t1", "u1", "c1", [TURN])
    results = await asyncio.gather(*(search("t1", "u1", f"Lisbon {i}") for i in range(8)))
    assert all(r.results for r in results)
    assert repo.peak == 2


def test_settings_are_validated() -> None:
    repo, store, embedder = FakeMemoryRepository(), FakeVectorStore(), HashEmbedder()
    with pytest.raises(InvalidRequest):
        SearchMemory(repo, store, embedder, Clock(), max_concurrent=0)
    with pytest.raises(InvalidRequest):
        SearchMemory(repo, store, embedder, Clock(), empty_ttl=-1)
