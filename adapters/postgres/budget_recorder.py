"""``PostgresSpendRecorder``: the ``SpendRecorder`` port with group commit (``adapters.group_commit``).

Concurrent settlements go into Postgres together: one statement per batch — a data-modifying CTE
that inserts the ledger entries from arrays (``ON CONFLICT DO NOTHING``: a retried settlement is
written once) and adds the cost of the entries it did insert to each budget's bucket, summed per
(budget, bucket), so a batch of N settlements of the same budget takes that budget's row lock
once instead of N times (the hot rows of a busy tenant otherwise serialize every settlement on
its commit). It runs in autocommit on a connection the writer keeps; ``record`` returns once the
statement has committed. A failed batch fails all of its callers with ``DatabaseUnavailable`` (an
``Unavailable``), retrying nothing, so nothing is written twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.group_commit import GroupCommit, GroupCommitFailed
from adapters.postgres.autocommit import AutocommitConnection
from adapters.postgres.errors import DatabaseUnavailable
from application.budgets.ports import LedgerEntry

__all__ = ["RECORD_SQL", "PostgresSpendRecorder"]

_ENTRY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("reservation_id", "text"), ("tenant_id", "text"), ("request_id", "text"), ("user_id", "text"),
    ("api_key_id", "text"), ("provider", "text"), ("model", "text"), ("task", "text"),
    ("reserved_micros", "bigint"), ("actual_micros", "bigint"), ("input_tokens", "int"), ("output_tokens", "int"),
    ("budget_ids", "text"), ("reserved_at", "timestamptz"), ("settled_at", "timestamptz"),
)
_N = len(_ENTRY_COLUMNS)
_SEP = "\x1f"  # budget ids travel joined (arrays of arrays do not unnest per row)

RECORD_SQL = (
    "WITH entry AS (INSERT INTO budget_ledger ("
    + ", ".join(name for name, _ in _ENTRY_COLUMNS)
    + ") SELECT "
    + ", ".join(f"string_to_array(c{i}, E'\\x1f')" if name == "budget_ids" else f"c{i}" for i, (name, _) in enumerate(_ENTRY_COLUMNS))
    + " FROM unnest("
    + ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(_ENTRY_COLUMNS, 1))
    + ") AS x("
    + ", ".join(f"c{i}" for i in range(_N))
    + ") ON CONFLICT (reservation_id) DO NOTHING RETURNING reservation_id, actual_micros), "
    + f"lines AS (SELECT l.budget_id, l.bucket_start, entry.actual_micros FROM unnest(${_N + 1}::text[], "
    + f"${_N + 2}::text[], ${_N + 3}::timestamptz[]) AS l(reservation_id, budget_id, bucket_start) "
    + "JOIN entry USING (reservation_id) JOIN budgets ON budgets.id = l.budget_id) "
    + "INSERT INTO budget_spend AS s (budget_id, bucket_start, spent_micros, requests) "
    + "SELECT budget_id, bucket_start, sum(actual_micros), count(*) FROM lines GROUP BY budget_id, bucket_start "
    + "ORDER BY budget_id, bucket_start "
    + "ON CONFLICT (budget_id, bucket_start) DO UPDATE SET spent_micros = s.spent_micros + EXCLUDED.spent_micros, "
    + "requests = s.requests + EXCLUDED.requests"
)
"""One batch: entry columns as arrays, then (reservation id, budget id, bucket) line arrays."""

_Item = tuple[LedgerEntry, Sequence[tuple[str, datetime]]]


class PostgresSpendRecorder:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = 256, max_delay: float = 0.0) -> None:
        self._group: GroupCommit[_Item] = GroupCommit(self._write, max_batch=max_batch, max_delay=max_delay)
        self._conn = AutocommitConnection(engine)

    @property
    def batches(self) -> int:
        return self._group.batches

    async def record(self, entry: LedgerEntry, buckets: Sequence[tuple[str, datetime]]) -> None:
        try:
            await self._group.submit((entry, tuple(buckets)))
        except GroupCommitFailed as exc:
            cause = exc.__cause__
            if isinstance(cause, DatabaseUnavailable):
                raise DatabaseUnavailable(cause.message) from cause
            raise DatabaseUnavailable(f"budget ledger entry could not be recorded: {exc}") from cause

    async def _write(self, batch: Sequence[_Item]) -> None:
        unique: dict[str, _Item] = {}
        for item in batch:  # a settlement retried within one batch: once (the insert skips it anyway)
            unique.setdefault(item[0].reservation_id, item)
        items = list(unique.values())
        args: list[Any] = []
        for name, _ in _ENTRY_COLUMNS:
            if name == "budget_ids":
                args.append([_SEP.join(e.budget_ids) for e, _ in items])
            else:
                args.append([getattr(e, name) for e, _ in items])
        lines = [(e.reservation_id, budget_id, at) for e, buckets in items for budget_id, at in buckets]
        args += [[x[0] for x in lines], [x[1] for x in lines], [x[2] for x in lines]]
        # one statement, its own transaction: committed when execute returns
        await self._conn.execute(RECORD_SQL, *args, what="record budget spend")

    async def aclose(self) -> None:
        """Write what is queued, then stop the writer and release its connection."""
        await self._group.aclose()
        await self._conn.aclose()
