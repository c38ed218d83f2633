"""``PostgresSettlements``: the ``Settlements`` port with group commit.

Each finished request hands in its usage row and its events (``ChatCompleted``, ``RouteDecided``,
the chat hooks'); concurrent requests' rows and outbox messages go into Postgres together (``adapters.group_commit``): one statement per
batch — a data-modifying CTE inserting the usage rows and the outbox rows from arrays, which
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
from typing import Any

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
_N = len(_USAGE_COLUMNS)
SETTLE_SQL = (
    "WITH usage AS (INSERT INTO usage_records ("
    + ", ".join(name for name, _ in _USAGE_COLUMNS)
    + ") SELECT * FROM unnest("
    + ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(_USAGE_COLUMNS, 1))
    + ")) INSERT INTO outbox (event_id, subject, payload, headers) SELECT e, s, p, h::jsonb FROM unnest("
    + f"${_N + 1}::text[], ${_N + 2}::text[], ${_N + 3}::bytea[], ${_N + 4}::text[]) AS t(e, s, p, h)"
)
"""One batch: usage rows and outbox rows, column arrays as parameters; one atomic statement."""


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
        args: list[Any] = [[getattr(record, name) for record, _ in batch] for name, _ in _USAGE_COLUMNS]
        messages = [m for _, ms in batch for m in ms]
        args += [
            [m.event_id for m in messages],
            [m.subject for m in messages],
            [m.payload for m in messages],
            [_ENCODER.encode(m.headers).decode() for m in messages],
        ]
        # one statement, its own transaction: committed when execute returns
        await self._conn.execute(SETTLE_SQL, *args, what="settle")

    async def aclose(self) -> None:
        """Commit what is queued, then stop the writer and release its connection."""
        await self._group.aclose()
        await self._conn.aclose()
