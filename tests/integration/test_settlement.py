"""Group-committed settlement (adapters.postgres.settlement) against a real, migrated Postgres:
every caller's usage row and outbox event are committed together before ``settle`` returns,
concurrent callers share transactions, and a failed batch fails its callers and writes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.events_codec import decode_event
from adapters.postgres import DatabaseUnavailable, create_engine
from adapters.postgres.settlement import PostgresSettlements
from domain.events import ChatCompleted
from domain.usage import UsageRecord

NOW = datetime(2025, 6, 1, 12, 30, tzinfo=UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=3)
    yield engine
    await engine.dispose()


@pytest.fixture(autouse=True)
async def _leave_no_events(engine: AsyncEngine) -> AsyncIterator[None]:
    """Other tests run outbox relays on this database: take our messages away afterwards."""
    yield
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM outbox WHERE event_id LIKE 'evt-req-%'"))


def _pair(request_id: str, *, conversation: str | None = "conv-1") -> tuple[UsageRecord, ChatCompleted]:
    record = UsageRecord(
        request_id=request_id, tenant_id="acme", provider="sim", model="sim-small", input_tokens=10,
        output_tokens=16, cached_input_tokens=2, reasoning_tokens=1, cost_micros=7, latency_ms=3,
        finish_reason="stop", created_at=NOW, conversation_id=conversation,
    )
    event = ChatCompleted(
        event_id=f"evt-{request_id}", tenant_id="acme", occurred_at=NOW, request_id=request_id, provider="sim",
        model="sim-small", input_tokens=10, output_tokens=16, cost_micros=7, latency_ms=3, finish_reason="stop",
        conversation_id=conversation or "",
    )
    return record, event


async def _rows(engine: AsyncEngine, ids: list[str]) -> tuple[dict[str, sa.Row], dict[str, sa.Row]]:
    async with engine.connect() as conn:
        usage = (await conn.execute(
            sa.text("SELECT * FROM usage_records WHERE request_id = ANY(:ids)"), {"ids": ids}
        )).all()
        outbox = (await conn.execute(
            sa.text("SELECT event_id, subject, payload, headers FROM outbox WHERE event_id = ANY(:ids)"),
            {"ids": [f"evt-{i}" for i in ids]},
        )).all()
    return {r.request_id: r for r in usage}, {r.event_id: r for r in outbox}


async def test_concurrent_settles_are_all_committed_in_fewer_transactions(engine: AsyncEngine) -> None:
    settlements = PostgresSettlements(engine)
    ids = [f"req-{uuid.uuid4().hex}" for _ in range(60)]
    try:
        await asyncio.gather(*(settlements.settle(*_pair(i, conversation=None if n % 2 else "c")) for n, i in enumerate(ids)))
        usage, outbox = await _rows(engine, ids)  # read right after settle returned: committed
        assert set(usage) == set(ids)
        assert set(outbox) == {f"evt-{i}" for i in ids}
        assert 1 <= settlements.batches < len(ids)  # transactions were shared
        row = usage[ids[0]]
        assert (row.tenant_id, row.input_tokens, row.output_tokens, row.cached_input_tokens, row.reasoning_tokens,
                row.cost_micros, row.latency_ms, row.finish_reason, row.created_at, row.conversation_id) == (
                "acme", 10, 16, 2, 1, 7, 3, "stop", NOW, "c")
        assert usage[ids[1]].conversation_id is None
        message = outbox[f"evt-{ids[0]}"]
        assert message.subject.startswith("lumina.acme.")
        decoded = decode_event(bytes(message.payload))
        assert isinstance(decoded, ChatCompleted) and decoded.request_id == ids[0]
        assert isinstance(message.headers, dict)
    finally:
        await settlements.aclose()


async def test_text_numbers_times_and_bytes_arrive_exactly(engine: AsyncEngine) -> None:
    """The batch travels as JSON: quotes, backslashes, control characters, non-ASCII, big integers,
    microseconds and the event's protobuf payload (base64) come out of Postgres as they went in."""
    settlements = PostgresSettlements(engine)
    request_id = f"req-{uuid.uuid4().hex}"
    record, event = _pair(request_id, conversation='c "q" \\ ü 🙂')
    at = datetime(2026, 11, 28, 13, 59, 1, 123456, tzinfo=UTC)
    record = dataclasses.replace(record, cost_micros=2**53 + 3, created_at=at, user_id="u\n\t", api_key_id=None)
    try:
        await settlements.settle(record, event)
        usage, outbox = await _rows(engine, [request_id])
        row = usage[request_id]
        assert (row.conversation_id, row.cost_micros, row.created_at, row.user_id, row.api_key_id) == (
            'c "q" \\ ü 🙂', 2**53 + 3, at, "u\n\t", None)
        assert decode_event(bytes(outbox[f"evt-{request_id}"].payload)) == event
    finally:
        await settlements.aclose()


async def test_a_failing_batch_fails_its_callers_and_writes_nothing(engine: AsyncEngine) -> None:
    settlements = PostgresSettlements(engine, max_delay=0.05)  # the three below share one batch
    taken = f"req-{uuid.uuid4().hex}"
    try:
        await settlements.settle(*_pair(taken))
        fresh = [f"req-{uuid.uuid4().hex}" for _ in range(2)]
        results = await asyncio.gather(
            settlements.settle(*_pair(fresh[0])),
            settlements.settle(*_pair(taken)),  # duplicate request_id and event_id: the batch fails
            settlements.settle(*_pair(fresh[1])),
            return_exceptions=True,
        )
        assert all(isinstance(r, DatabaseUnavailable) for r in results), results
        usage, outbox = await _rows(engine, fresh)
        assert usage == {} and outbox == {}  # atomic: neither rows nor events of the failed batch
        again = f"req-{uuid.uuid4().hex}"
        await settlements.settle(*_pair(again))  # the writer recovered (new connection)
        usage, outbox = await _rows(engine, [taken, again])
        assert set(usage) == {taken, again} and len(outbox) == 2  # the original was not duplicated
    finally:
        await settlements.aclose()


async def test_an_unreachable_database_fails_the_settle() -> None:
    engine = create_engine("postgresql://nobody@127.0.0.1:9/none", pool_size=1)
    settlements = PostgresSettlements(engine)
    try:
        with pytest.raises(DatabaseUnavailable):
            await asyncio.wait_for(settlements.settle(*_pair("req-x")), 15)
    finally:
        await settlements.aclose()
        await engine.dispose()


async def test_fast_usage_commit_turns_synchronous_commit_off_on_its_own_connection_only(engine: AsyncEngine) -> None:
    """``usage_commit = "fast"``: the writer's connection commits without waiting for the WAL
    flush; rows still commit, other connections keep the default, and the setting is reset before
    the connection returns to the pool."""
    settlements = PostgresSettlements(engine, synchronous_commit=False)
    request_id = f"req-{uuid.uuid4().hex[:8]}"
    record, event = _pair(request_id)
    await settlements.settle(record, event)
    writer = settlements._conn._conn
    assert writer is not None
    raw = await writer.get_raw_connection()
    assert await raw.driver_connection.fetchval("SHOW synchronous_commit") == "off"  # type: ignore[union-attr]
    async with engine.connect() as other:
        assert (await other.execute(sa.text("SHOW synchronous_commit"))).scalar() == "on"
    usage, outbox = await _rows(engine, [request_id])
    assert request_id in usage and f"evt-{request_id}" in outbox
    await settlements.aclose()
    async with contextlib.AsyncExitStack() as stack:  # every pooled connection at once, the writer's included
        conns = [await stack.enter_async_context(engine.connect()) for _ in range(3)]
        for conn in conns:
            assert (await conn.execute(sa.text("SHOW synchronous_commit"))).scalar() == "on"
