"""``PostgresSettlements``: the ``Settlements`` port with group commit.

Each finished request hands in its usage row and its events (``ChatCompleted``, ``RouteDecided``,
the chat hooks'); concurrent requests' rows and outbox messages go into Postgres together (``adapters.group_commit``): one statement per
batch — a data-modifying CTE inserting the usage rows and the outbox rows from two JSON arrays, which
Postgres runs atomically as its own transaction — in one round trip on a connection the writer
keeps, and ``settle`` returns once that statement has committed. Durability is
that of the unit of work: the row and the event commit atomically, and a caller that returned from
``settle`` can rely on both. A failed batch fails all of its callers with ``DatabaseUnavailable``
(an ``Unavailable``); nothing is retried, so nothing is written twice (``request_id`` and
``event_id`` are unique besides).

The event's outbox message (and its W3C trace headers) is encoded in the caller's context, so the
trace of the request travels with its event exactly as through ``UnitOfWork.record``.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.events_codec import encode_event
from adapters.group_commit import GroupCommit, GroupCommitFailed
from adapters.postgres.autocommit import AutocommitConnection
from adapters.postgres.errors import DatabaseUnavailable
from adapters.telemetry.tracing import inject_headers
from application.ports import OutboxMessage
from domain.events import DomainEvent
from domain.usage import UsageRecord

__all__ = ["SETTLE_SQL", "PostgresSettlements"]

_ENCODER = msgspec.json.Encoder()

_USAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("request_id", "text"), ("tenant_id", "text"), ("provider", "text"), ("model", "text"),
    ("input_tokens", "int"), ("output_tokens", "int"), ("cached_input_tokens", "int"),
    ("reasoning_tokens", "int"), ("cost_micros", "bigint"), ("latency_ms", "int"),
    ("finish_reason", "text"), ("created_at", "timestamptz"), ("conversation_id", "text"),
    ("user_id", "text"), ("api_key_id", "text"),
)
_NAMES = ", ".join(name for name, _ in _USAGE_COLUMNS)
SETTLE_SQL = (
    f"WITH usage AS (INSERT INTO usage_records ({_NAMES}) SELECT {_NAMES} FROM json_to_recordset($1::json) AS r("
    + ", ".join(f"{name} {kind}" for name, kind in _USAGE_COLUMNS)
    + ")) INSERT INTO outbox (event_id, subject, payload, headers)"
    " SELECT event_id, subject, decode(payload, 'base64'), headers"
    " FROM json_to_recordset($2::json) AS t(event_id text, subject text, payload text, headers jsonb)"
)
"""One batch: the usage rows and the outbox rows as two JSON arrays (msgspec encodes the records,
the payloads in base64); one atomic statement. Two text parameters cost the driver far less than a
typed array per column (each element of each array was type-checked and encoded on its own)."""


class PostgresSettlements:
    def __init__(
        self, engine: AsyncEngine, *, max_batch: int = 256, max_delay: float = 0.0, synchronous_commit: bool = True
    ) -> None:
        """``synchronous_commit=False``: see ``AutocommitConnection`` (settings ``usage_commit = "fast"``)."""
        self._group: GroupCommit[tuple[UsageRecord, tuple[OutboxMessage, ...]]] = GroupCommit(
            self._write, max_batch=max_batch, max_delay=max_delay
        )
        self._conn = AutocommitConnection(engine, synchronous_commit=synchronous_commit)

    @property
    def batches(self) -> int:
        """Transactions committed or attempted so far."""
        return self._group.batches

    async def settle(self, record: UsageRecord, *events: DomainEvent) -> None:
        headers = inject_headers()
        messages = tuple(encode_event(event, headers) for event in events)
        try:
            await self._group.submit((record, messages))
        except GroupCommitFailed as exc:
            cause = exc.__cause__
            if isinstance(cause, DatabaseUnavailable):
                raise DatabaseUnavailable(cause.message) from cause
            raise DatabaseUnavailable(f"usage could not be recorded: {exc}") from cause

    async def _write(self, batch: Sequence[tuple[UsageRecord, tuple[OutboxMessage, ...]]]) -> None:
        records = _ENCODER.encode([record for record, _ in batch]).decode()
        messages = _ENCODER.encode([m for _, ms in batch for m in ms]).decode()
        # one statement, its own transaction: committed when execute returns
        await self._conn.execute(SETTLE_SQL, records, messages, what="settle")

    async def aclose(self) -> None:
        """Commit what is queued, then stop the writer and release its connection."""
        await self._group.aclose()
        await self._conn.aclose()
