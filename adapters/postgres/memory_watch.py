"""``MemoryWriteWatch``: PostgreSQL tells this process of every committed write of memories.

Revision 0014 makes each statement that inserts memories (or moves them to another user) notify
channel ``lumina_memories_written`` with ``["<tenant>", "<user>"]`` per user it wrote, or ``*``.
PostgreSQL delivers a notification after its transaction committed, to every session LISTENing
then, whichever process wrote.

The watch keeps one connection of the engine LISTENing and reports to a ``MemoryWrites``
(``SearchMemory``): ``watching(True)`` once LISTEN is in place and a probe arrived, ``written`` or
``written_somewhere`` for each announcement, and ``watching(False)`` as soon as it may miss one:
the connection closed, or a probe did not arrive within ``ping_timeout``. A probe (at the start,
then every ``ping_every`` seconds) is a notification on the same channel sent from another
connection of the pool, so it checks the whole path an announcement takes: behind a pooler that
does not keep LISTEN's session (PgBouncer in transaction mode) none arrives and the watch never
comes up. The probe's statement also checks that revision 0014's triggers are there and enabled
(a database not migrated yet, or triggers disabled): if not, the watch is down. After a failure it connects again after ``retry`` seconds, doubling up to
``max_retry`` while it cannot come up. The connection is never given back to the pool: it is
closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any, Protocol

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.postgres.autocommit import open_autocommit, throw_away
from application.memory.ports import MemoryWrites

__all__ = ["CHANNEL", "MemoryWriteWatch"]

CHANNEL = "lumina_memories_written"

_SCOPE = msgspec.json.Decoder(tuple[str, str])
_PROBE = "~probe "  # announcements are JSON arrays or '*': a probe is told apart by its first character


# the probe's notification, and how many of the triggers that announce writes are there and enabled
_TRIGGERS = ("memories_notify_insert", "memories_notify_update")
_PROBE_SQL = sa.text(
    "SELECT count(*) FROM pg_notify(:channel, :token), pg_trigger WHERE tgrelid = 'memories'::regclass"
    f" AND tgname IN ({', '.join(repr(t) for t in _TRIGGERS)}) AND tgenabled <> 'D'"
)


class NotAnnounced(Exception):
    """Writes of memories are not announced in this database (the watch stays down)."""


class Log(Protocol):
    def warning(self, event: str, **fields: object) -> None: ...


class MemoryWriteWatch:
    def __init__(
        self,
        engine: AsyncEngine,
        target: MemoryWrites,
        *,
        ping_every: float = 5.0,
        ping_timeout: float = 2.0,
        retry: float = 0.5,
        max_retry: float = 30.0,
        log: Log | None = None,
    ) -> None:
        self._engine = engine
        self._target = target
        self._ping_every = ping_every
        self._ping_timeout = ping_timeout
        self._retry = retry
        self._max_retry = max_retry
        self._log = log
        self._came_up = False
        self.server_pid: int | None = None  # the listening session's backend process, while it listens
        self._probing: tuple[str, asyncio.Future[None]] | None = None

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Watch until ``stop``; ``ready`` is set each time LISTEN is in place."""
        failed = 0  # attempts in a row that never came up
        while not stop.is_set():
            self._came_up = False
            try:
                await self._watch(stop, ready)
            except Exception as exc:  # noqa: BLE001 - the watch reconnects; reads count meanwhile
                failed = 0 if self._came_up else failed + 1
                delay = min(self._max_retry, self._retry * 2 ** max(0, failed - 1))
                if self._log is not None:
                    self._log.warning(
                        "memory write watch down; users without memories are counted again until it is back",
                        error=str(exc) if isinstance(exc, NotAnnounced) else type(exc).__name__, retry_s=delay,
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def _watch(self, stop: asyncio.Event, ready: asyncio.Event | None) -> None:
        """One connection's watch, until ``stop`` or a failure (raised)."""
        conn, driver = await open_autocommit(self._engine)
        lost = asyncio.Event()
        stopping = asyncio.ensure_future(stop.wait())
        losing = asyncio.ensure_future(lost.wait())
        try:
            driver.add_termination_listener(lambda _c: lost.set())
            await driver.add_listener(CHANNEL, self._notified)
            await self._probe()  # the channel delivers here (not so behind a transaction-mode pooler)
            self._target.watching(True)
            self._came_up = True
            self.server_pid = driver.get_server_pid()
            if ready is not None:
                ready.set()
            while True:
                done, _ = await asyncio.wait(
                    (stopping, losing), timeout=self._ping_every, return_when=asyncio.FIRST_COMPLETED
                )
                if stopping in done:
                    return
                if losing in done:
                    raise ConnectionError("the listening connection closed")
                await self._probe()
        finally:
            self.server_pid = None
            if self._came_up:
                self._target.watching(False)  # before anything can be missed
            stopping.cancel()
            losing.cancel()
            self._probing = None
            await throw_away(conn)

    async def _probe(self) -> None:
        """A notification sent from another connection of the pool arrives on the listening one
        within ``ping_timeout`` (else ``TimeoutError``): the whole path a write's announcement takes."""
        token = f"{_PROBE}{secrets.token_hex(8)}"
        arrived = asyncio.get_running_loop().create_future()
        self._probing = (token, arrived)
        async with asyncio.timeout(self._ping_timeout):
            async with self._engine.begin() as conn:
                announcing = (await conn.execute(_PROBE_SQL, {"channel": CHANNEL, "token": token})).scalar_one()
            if announcing != len(_TRIGGERS):
                raise NotAnnounced("the triggers of revision 0014 on memories are missing or disabled")
            await arrived
        self._probing = None

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload.startswith(_PROBE):  # a watch's probe: this one's, or another process's
            probing = self._probing
            if probing is not None and payload == probing[0] and not probing[1].done():
                probing[1].set_result(None)
            return
        try:
            tenant, user = _SCOPE.decode(payload)
        except msgspec.DecodeError:  # '*' (or anything else): a write of no one in particular
            self._target.written_somewhere()
            return
        self._target.written(tenant, user)
