"""The spend journal: closing the window between the live settlement (Redis) and the durable
ledger entry (Postgres).

``Settle`` hands the live ledger the encoded ``LedgerEntry`` with the settlement; the Lua script
that moves the counters also keeps the entry in the tenant's journal, in the same atomic step. Once
the entry has committed in Postgres, ``Settle`` has it forgotten (batched, off the request path).
A process that dies in between leaves the entry in the journal; ``DrainSpendJournal`` — run when
a backend starts, then every ``interval`` seconds for entries older than that — writes what is
left through the same ``SpendRecorder`` (an insert that skips a reservation id already in the
ledger, and adds to the per-bucket spend only what it inserted), then forgets it. An entry is
therefore in Postgres exactly once, however often it is drained, and forgotten only after its
commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec

from application.budgets.context import BudgetContext
from application.budgets.ports import LedgerEntry, SpendJournal

__all__ = ["DrainSpendJournal", "JournalDrainer", "JournalEntry", "decode_journal_entry", "encode_journal_entry"]

log = logging.getLogger("lumina.budgets")


class JournalEntry(msgspec.Struct, frozen=True, array_like=True):
    """A settled ledger entry and the (budget id, ledger bucket) lines it adds to."""

    entry: LedgerEntry
    buckets: tuple[tuple[str, datetime], ...]


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(JournalEntry)


def encode_journal_entry(entry: LedgerEntry, buckets: Sequence[tuple[str, datetime]]) -> bytes:
    return _ENCODER.encode(JournalEntry(entry, tuple(buckets)))


def decode_journal_entry(payload: bytes) -> JournalEntry:
    return _DECODER.decode(payload)


class DrainSpendJournal:
    """Write the journal's leftovers to the durable ledger, idempotently, then forget them."""

    def __init__(self, ctx: BudgetContext, journal: SpendJournal, *, batch: int = 500) -> None:
        self._ctx = ctx
        self._journal = journal
        self._batch = batch

    async def __call__(self, *, older_than_s: float = 0.0) -> int:
        """Entries settled more than ``older_than_s`` ago (younger ones are most likely being
        written by the replica that settled them right now): written and forgotten. Returns how
        many; raises ``Unavailable`` when Redis or Postgres is."""
        cutoff = self._ctx.clock.now() - timedelta(seconds=older_than_s)
        done = 0
        seen: set[str] = set()
        while True:
            found = [decode_journal_entry(p) for p in await self._journal.pending(self._batch + len(seen))]
            todo = [j for j in found if j.entry.reservation_id not in seen and j.entry.settled_at <= cutoff]
            if not todo:
                return done
            recorder = self._ctx.spend_recorder
            await asyncio.gather(*(recorder.record(j.entry, j.buckets) for j in todo))  # one group commit
            per_tenant: dict[str, list[str]] = {}
            for j in todo:
                per_tenant.setdefault(j.entry.tenant_id, []).append(j.entry.reservation_id)
                seen.add(j.entry.reservation_id)
            for tenant, ids in per_tenant.items():
                await self._journal.forget(tenant, ids)
            done += len(todo)


class JournalDrainer:
    """``DrainSpendJournal`` at start (entries settled more than ``start_older_than_s`` ago: the
    replicas still running are writing younger ones themselves) and then every ``interval``
    seconds (what is older than that), in the background until ``aclose``. A failed drain is
    logged and tried again at the next interval: it never stops the process."""

    def __init__(self, drain: DrainSpendJournal, *, interval: float = 30.0, start_older_than_s: float = 10.0) -> None:
        self._drain = drain
        self._interval = interval
        self._start_older = start_older_than_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Drain what an earlier process left; then keep draining in the background."""
        try:
            count = await self._drain(older_than_s=self._start_older)
        except Exception as exc:  # noqa: BLE001 - logged; the periodic drain tries again
            log.warning("budget journal not drained at start: %r", exc)
            count = 0
        if count:
            log.info("budget journal: %d settled entries written to the ledger at start", count)
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return count

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._drain(older_than_s=self._interval)
            except Exception as exc:  # noqa: BLE001 - logged; tried again at the next interval
                log.warning("budget journal not drained: %r", exc)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
