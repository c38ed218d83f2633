"""The crash window between the live settlement (Redis) and the durable ledger entry (Postgres) is
closed: the settle script keeps the entry in the tenant's journal in the same atomic step, and a
drain — at the next start — writes what a dead writer left, exactly once, then trims it.

The writer is abandoned for real: its ``SpendRecorder`` blocks, and the settling task is cancelled
after the live ledger has settled and before anything reached Postgres (as if the process died).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime

import sqlalchemy as sa

from adapters.postgres import create_engine
from application.budgets import (
    BudgetDraft,
    BudgetGuard,
    DrainSpendJournal,
    JournalDrainer,
)
from application.budgets.ports import LedgerEntry
from domain.budgets import BudgetScope, BudgetSubject, Period
from tests.integration.budgets.conftest import Replica, Scope


class StuckRecorder:
    """A durable writer that never gets to write (the process is about to die)."""

    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def record(self, entry: LedgerEntry, buckets: Sequence[tuple[str, datetime]]) -> None:
        self.called.set()
        await asyncio.Event().wait()


async def _ledger(scope: Scope, budget_id: str) -> tuple[list[tuple[str, int]], int]:
    engine = create_engine(scope.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            entries = (await conn.execute(sa.text(
                "SELECT reservation_id, actual_micros FROM budget_ledger WHERE tenant_id = :t"), {"t": scope.tenant})).all()
            spent = (await conn.execute(sa.text(
                "SELECT coalesce(sum(spent_micros), 0) FROM budget_spend WHERE budget_id = :b"), {"b": budget_id})).scalar()
    finally:
        await engine.dispose()
    return [tuple(e) for e in entries], int(spent or 0)  # type: ignore[misc]


async def test_spend_settled_by_a_writer_that_died_reaches_postgres_exactly_once(
    scope: Scope, replicas: Callable[..., Replica], create_budget
) -> None:  # type: ignore[no-untyped-def]
    first = replicas()
    budget = await create_budget(first, BudgetDraft(
        name="daily", scope=BudgetScope.TENANT, scope_id=scope.tenant, limit_micros=1_000_000, period=Period.daily()))
    subject = BudgetSubject(scope.tenant, user_id="u1")
    hold = await first.guard.reserve(subject, 5_000)

    stuck = StuckRecorder()
    dying = BudgetGuard(dataclasses.replace(first.ctx, recorder=stuck))
    settling = asyncio.ensure_future(dying.settle(hold, 4_321))
    await asyncio.wait_for(stuck.called.wait(), 10)  # Redis has settled; Postgres has not been written
    settling.cancel()  # the process dies here
    await asyncio.gather(settling, return_exceptions=True)
    (status,) = await first.guard.statuses(subject)
    assert (status.spent_micros, status.held_micros) == (4_321, 0)  # the live ledger charged it
    assert await _ledger(scope, budget.id) == ([], 0)  # the durable one never heard of it
    assert len(await first.ledger.pending()) >= 1

    # a new process starts: what the journal holds is written, once, and trimmed after the commit
    second = replicas()
    drainer = JournalDrainer(DrainSpendJournal(second.ctx, second.ledger), interval=3600, start_older_than_s=0)
    try:
        assert await drainer.start() >= 1
    finally:
        await drainer.aclose()
    assert await _ledger(scope, budget.id) == ([(hold.id, 4_321)], 4_321)
    assert [p for p in await second.ledger.pending() if hold.id.encode() in p] == []

    # drained again (say the trim was lost): still once, and the bucket's spend is not added twice
    await second.guard.settle(hold, 4_321)  # a retried settle is a duplicate: nothing moves
    again = await second.ledger.pending()
    assert [p for p in again if hold.id.encode() in p] == []


async def test_a_drain_of_an_entry_already_in_postgres_writes_nothing_twice(
    scope: Scope, replicas: Callable[..., Replica], create_budget
) -> None:  # type: ignore[no-untyped-def]
    from application.budgets.journal import encode_journal_entry
    from domain.budgets import counter_for

    replica = replicas()
    budget = await create_budget(replica, BudgetDraft(
        name="daily", scope=BudgetScope.TENANT, scope_id=scope.tenant, limit_micros=1_000_000, period=Period.daily()))
    subject = BudgetSubject(scope.tenant, user_id="u1")
    hold = await replica.guard.reserve(subject, 2_000)
    await replica.guard.settle(hold, 1_500)
    await replica.ledger.flush()
    assert [p for p in await replica.ledger.pending() if hold.id.encode() in p] == []  # trimmed after the commit
    assert await _ledger(scope, budget.id) == ([(hold.id, 1_500)], 1_500)
    # the trim lost (a crash after the commit): the entry is back in the journal
    counter = counter_for(budget, hold.reserved_at)
    entry = LedgerEntry(reservation_id=hold.id, tenant_id=scope.tenant, reserved_micros=2_000, actual_micros=1_500,
                        reserved_at=hold.reserved_at, settled_at=hold.reserved_at, budget_ids=(budget.id,))
    await replica.redis.hset(replica.ledger._journal_key(scope.tenant), hold.id, encode_journal_entry(  # type: ignore[attr-defined]
        entry, [(budget.id, counter.ledger_bucket)]))
    assert await DrainSpendJournal(replica.ctx, replica.ledger)() == 1
    assert await _ledger(scope, budget.id) == ([(hold.id, 1_500)], 1_500)
    assert await replica.ledger.pending() == []
