"""``MemoryWriteWatch`` on the real Postgres: the database announces each committed write of
memories (revision 0014) to the listening connection, a rolled-back write is never announced, a
statement writing many users is announced once as a wildcard, pings keep a healthy watch up, and a
dropped connection is reported at once and replaced. End to end, a search that found a user empty costs no query until another
connection writes that user's memories, and then finds them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.postgres.engine import create_engine
from adapters.postgres.memory_repository import PostgresMemoryRepository
from adapters.postgres.memory_watch import MemoryWriteWatch
from adapters.system import TimeOrderedIds
from adapters.vectorstores.pgvector import PgVectorStore
from application.memory import IngestTurns, SearchMemory, TurnInput
from tests.integration.memory.conftest import NOW, FixedClock
from tests.unit.memory_app.hashing import HashEmbedder


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.changed = asyncio.Event()

    def watching(self, up: bool) -> None:
        self._note(("up",) if up else ("down",))

    def written(self, tenant: str, user: str) -> None:
        self._note(("written", tenant, user))

    def written_somewhere(self) -> None:
        self._note(("somewhere",))

    def _note(self, call: tuple[str, ...]) -> None:
        self.calls.append(call)
        self.changed.set()

    def of(self, tenant: str) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c[0] == "written" and c[1] == tenant]

    async def until(self, predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def watching(engine: AsyncEngine, target: object, **options: float) -> AsyncIterator[tuple[MemoryWriteWatch, asyncio.Event]]:
    stop, ready = asyncio.Event(), asyncio.Event()
    watch = MemoryWriteWatch(engine, target, **options)  # type: ignore[arg-type]
    task = asyncio.create_task(watch.run(stop, ready))
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        yield watch, ready
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


_INSERT = text(
    "INSERT INTO memories (tenant_id, id, user_id, conversation_id, text, occurred_at, tier, importance)"
    " SELECT :t, :t || '-' || g, :u || (g % :users), 'c1', 'hello', now(), 'episodic', 0.5"
    " FROM generate_series(1, :n) AS g"
)


async def test_committed_writes_are_announced_per_user_and_rollbacks_never(engine: AsyncEngine, tenant: str) -> None:
    seen = Recorder()
    async with watching(engine, seen):
        async with engine.begin() as conn:  # two users in one statement: one notification each
            await conn.execute(_INSERT, {"t": tenant, "u": "u", "users": 2, "n": 4})
        await seen.until(lambda: len(seen.of(tenant)) == 2)
        assert sorted(seen.of(tenant)) == [("written", tenant, "u0"), ("written", tenant, "u1")]

        async with engine.connect() as conn:  # rolled back: not announced
            await conn.execute(_INSERT, {"t": tenant + "x", "u": "r", "users": 1, "n": 1})
            await conn.rollback()
        async with engine.begin() as conn:  # a move to another user is a write of that user; other updates are not
            await conn.execute(text("UPDATE memories SET user_id = 'moved' WHERE tenant_id = :t AND id = :t || '-1'"),
                               {"t": tenant})
            await conn.execute(text("UPDATE memories SET importance = 0.9 WHERE tenant_id = :t"), {"t": tenant})
        await seen.until(lambda: len(seen.of(tenant)) == 3)
        assert seen.of(tenant)[2] == ("written", tenant, "moved")
        assert seen.of(tenant + "x") == []

        async with engine.begin() as conn:  # more than 100 users in one statement: one wildcard
            await conn.execute(_INSERT, {"t": tenant + "-bulk", "u": "b", "users": 150, "n": 150})
        await seen.until(lambda: ("somewhere",) in seen.calls)
        assert seen.of(tenant + "-bulk") == []
        assert len(seen.of(tenant)) == 3  # delivered in commit order: the importance update sent nothing
    assert seen.calls[0] == ("up",)
    assert seen.calls[-1] == ("down",)  # stopping reports the watch down


async def test_a_dropped_listening_connection_is_reported_at_once_and_replaced(engine: AsyncEngine, tenant: str) -> None:
    seen = Recorder()
    async with watching(engine, seen, retry=0.05, ping_every=0.05) as (watch, ready):
        await asyncio.sleep(0.3)  # a few pings: the watch stays up
        assert seen.calls == [("up",)]
        ready.clear()
        first = watch.server_pid
        async with engine.connect() as conn:
            dropped = await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            assert dropped.scalar_one() is True
        await seen.until(lambda: seen.calls[-1] == ("up",) and len(seen.calls) >= 3)
        assert seen.calls[:3] == [("up",), ("down",), ("up",)]
        assert ready.is_set()
        assert watch.server_pid not in (None, first)
        async with engine.begin() as conn:  # the new connection hears writes
            await conn.execute(_INSERT, {"t": tenant, "u": "u", "users": 1, "n": 1})
        await seen.until(lambda: ("written", tenant, "u0") in seen.calls)


class CountingRepository(PostgresMemoryRepository):
    counts = 0

    async def count(self, tenant_id: str, user_id: str) -> int:
        self.counts += 1
        return await super().count(tenant_id, user_id)


async def test_an_empty_user_costs_no_query_until_another_process_writes_their_memories(
    engine: AsyncEngine, database_url: str, tenant: str
) -> None:
    repo = CountingRepository(engine)
    embedder = HashEmbedder()
    search = SearchMemory(repo, PgVectorStore(engine), embedder, FixedClock(NOW))
    other = create_engine(database_url, pool_size=1)  # the worker's, say
    ingest = IngestTurns(PostgresMemoryRepository(other), PgVectorStore(other), embedder, TimeOrderedIds())
    try:
        async with watching(engine, search):
            assert (await search(tenant, "alice", "Lisbon summer")).results == ()
            for _ in range(5):
                assert (await search(tenant, "alice", "Lisbon summer")).results == ()
            assert repo.counts == 0  # no count: the watch vouches for alice
            await ingest(tenant, "alice", "c1", [TurnInput("alice", "We spent the summer in Lisbon.", NOW - 60, "D1:1")])
            async with asyncio.timeout(5):  # the notification arrives within milliseconds
                while not (found := await search(tenant, "alice", "Lisbon summer")).results:
                    await asyncio.sleep(0.01)
            assert [r.source_id for r in found.results] == ["D1:1"]
        assert (await search(tenant, "bob", "Lisbon")).results == ()  # no watch: bob's mark needs a count
        assert (await search(tenant, "bob", "Lisbon")).results == ()
        assert repo.counts == 1
    finally:
        await repo.aclose()
        await other.dispose()


class Log:
    def __init__(self) -> None:
        self.warnings: list[dict[str, object]] = []

    def warning(self, event: str, **fields: object) -> None:
        self.warnings.append({"event": event, **fields})


async def test_a_watch_whose_probe_does_not_arrive_never_comes_up_and_backs_off(engine: AsyncEngine, tenant: str) -> None:
    seen, log = Recorder(), Log()
    stop = asyncio.Event()
    # no probe can arrive within a microsecond: as behind a pooler that drops LISTEN's session
    watch = MemoryWriteWatch(engine, seen, ping_timeout=1e-6, retry=0.01, max_retry=0.04, log=log)  # type: ignore[arg-type]
    task = asyncio.create_task(watch.run(stop))
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert seen.calls == []  # never reported up: every empty user is counted
    assert len(log.warnings) >= 3
    assert {w["error"] for w in log.warnings} == {"TimeoutError"}
    assert [w["retry_s"] for w in log.warnings[:4]] == [0.01, 0.02, 0.04, 0.04][: len(log.warnings[:4])]


async def test_other_watches_probes_are_not_writes(engine: AsyncEngine, tenant: str) -> None:
    seen = Recorder()
    async with watching(engine, seen):
        async with engine.begin() as conn:
            await conn.execute(text("SELECT pg_notify('lumina_memories_written', '~probe someone-else')"))
            await conn.execute(_INSERT, {"t": tenant, "u": "u", "users": 1, "n": 1})
        await seen.until(lambda: seen.of(tenant) != [])
        assert seen.calls == [("up",), ("written", tenant, "u0")]


async def test_a_database_whose_triggers_do_not_announce_writes_keeps_the_watch_down(engine: AsyncEngine) -> None:
    seen, log = Recorder(), Log()
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE memories DISABLE TRIGGER memories_notify_insert"))
    try:
        stop = asyncio.Event()
        task = asyncio.create_task(MemoryWriteWatch(engine, seen, retry=0.01, max_retry=0.02, log=log).run(stop))  # type: ignore[arg-type]
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(task, 10)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE memories ENABLE TRIGGER memories_notify_insert"))
    assert seen.calls == []
    assert log.warnings and {w["error"] for w in log.warnings} == {
        "the triggers of revision 0014 on memories are missing or disabled"
    }
    async with watching(engine, seen):  # enabled again: the watch comes up
        assert seen.calls == [("up",)]
