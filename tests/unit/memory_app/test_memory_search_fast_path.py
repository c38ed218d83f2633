"""SearchMemory's cheap paths: a user last seen without memories costs one exact count (shared by
concurrent requests of that user), not a search, and sees a memory as soon as it is stored; with a
write watch up, such a user costs nothing until a write of theirs is reported (and a mark read while
a write was reported, or under a watch since dropped, is not trusted); at most ``max_concurrent``
searches reach the repository at once."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime

import pytest

from application.memory import IngestTurns, SearchMemory, TurnInput
from application.memory.search import _Mark, _Writes
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


async def test_a_watched_user_without_memories_costs_nothing_until_a_write_of_theirs_is_reported(parts) -> None:
    ingest, search, repo, _ = parts
    search.watching(True)
    assert (await search("t1", "u1", "Lisbon summer")).results == ()
    for query in ("anything", "else", "at all"):
        assert (await search("t1", "u1", query)).results == ()
    assert (repo.fulltext_calls, repo.count_calls) == (1, 0)  # no count, no search

    await ingest("t1", "u2", "c1", [TURN])  # another user's write leaves u1's mark alone
    search.written("t1", "u2")
    assert (await search("t1", "u1", "Lisbon summer")).results == ()
    assert (repo.fulltext_calls, repo.count_calls) == (1, 0)

    await ingest("t1", "u1", "c1", [TURN])
    search.written("t1", "u1")  # what the watch reports once the write committed
    found = await search("t1", "u1", "Lisbon summer")
    assert [r.source_id for r in found.results] == ["D1:1"]
    assert repo.fulltext_calls == 2


async def test_a_write_reported_while_the_search_ran_leaves_the_user_to_the_count(parts) -> None:
    _, search, repo, _ = parts
    search.watching(True)
    running = asyncio.ensure_future(search("t1", "u1", "Lisbon"))
    await asyncio.sleep(0.002)  # the full-text read is in flight (it takes 10 ms)
    assert repo.active == 1
    search.written("t1", "u1")  # committed after the search's snapshot, perhaps
    assert (await running).results == ()
    await search("t1", "u1", "Lisbon")
    assert (repo.fulltext_calls, repo.count_calls) == (1, 1)  # not trusted: counted
    await search("t1", "u1", "Lisbon")
    assert repo.count_calls == 1  # the count found none with no write reported meanwhile: trusted now

    await search("t1", "u2", "Lisbon")  # u2 marked empty under this watch
    search.watching(False)
    search.watching(True)  # a new watch: u2's mark needs a count
    counting = asyncio.ensure_future(search("t1", "u2", "Lisbon"))
    await asyncio.sleep(0.002)
    assert repo.count_calls == 2
    search.written("t1", "u2")  # reported while the count ran
    assert (await counting).results == ()
    await search("t1", "u2", "Lisbon")
    assert (repo.fulltext_calls, repo.count_calls) == (3, 2)  # the mark is gone: u2 is searched again


async def test_a_watch_that_drops_or_loses_track_sends_users_back_to_the_count(parts) -> None:
    _, search, repo, _ = parts
    search.watching(True)
    await search("t1", "u1", "Lisbon")
    search.watching(False)
    await search("t1", "u1", "Lisbon")
    await search("t1", "u1", "Lisbon")
    assert (repo.fulltext_calls, repo.count_calls) == (1, 2)  # no watch: a count each time

    search.watching(True)  # a new watch does not vouch for what was read before it
    await search("t1", "u1", "Lisbon")
    await search("t1", "u1", "Lisbon")
    assert repo.count_calls == 3

    search.written_somewhere()  # a write of no one in particular
    await search("t1", "u1", "Lisbon")
    await search("t1", "u1", "Lisbon")
    assert repo.count_calls == 4


def test_the_write_table_is_bounded_and_what_it_dropped_is_not_vouched_for() -> None:
    writes = _Writes(max_entries=2)
    writes.restart(True)
    start = writes.mark()
    writes.written(("t", "a"))
    assert writes.trusted_epoch(("t", "b"), start) == start.epoch
    assert writes.trusted_epoch(("t", "a"), start) is None
    writes.written(("t", "b"))
    writes.written(("t", "c"))  # drops ("t", "a") from the table
    assert writes.trusted_epoch(("t", "d"), start) is None  # it may have been any scope
    later = writes.mark()
    assert writes.trusted_epoch(("t", "a"), later) == later.epoch
    writes.restart(False)
    assert writes.trusted_epoch(("t", "a"), later) is None
    assert writes.mark() == _Mark(None, 3)


def test_settings_are_validated() -> None:
    repo, store, embedder = FakeMemoryRepository(), FakeVectorStore(), HashEmbedder()
    with pytest.raises(InvalidRequest):
        SearchMemory(repo, store, embedder, Clock(), max_concurrent=0)
    with pytest.raises(InvalidRequest):
        SearchMemory(repo, store, embedder, Clock(), empty_ttl=-1)
