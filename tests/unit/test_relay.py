"""RelayOutbox and RecordSpend against the in-memory fakes of the unit of work and publisher."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from application.outbox import RelayOutbox
from application.spend import SPEND_CONSUMER, RecordSpend
from domain.events import ChatCompleted
from tests.unit.fakes import (
    FakePublisher,
    FakeUnitOfWorkFactory,
    IntegrityViolation,
    PublishFailed,
)


def completed(n: int, *, tenant: str = "acme", cost: int = 1_000, when: datetime | None = None) -> ChatCompleted:
    return ChatCompleted(
        event_id=f"evt-{n:04d}",
        tenant_id=tenant,
        occurred_at=when or datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        request_id=f"req-{n}",
        provider="openai",
        model="gpt-test",
        input_tokens=10 * n,
        output_tokens=n,
        cost_micros=cost * n,
        latency_ms=5,
        finish_reason="stop",
    )


async def write_events(uows: FakeUnitOfWorkFactory, events: list[ChatCompleted]) -> None:
    async with uows() as uow:
        for event in events:
            uow.record(event)
        await uow.commit()


# --- RelayOutbox -------------------------------------------------------------------------------


async def test_relay_publishes_in_order_and_marks_sent() -> None:
    uows, publisher = FakeUnitOfWorkFactory(), FakePublisher()
    events = [completed(n) for n in range(1, 6)]
    await write_events(uows, events)

    relayed = await RelayOutbox(uows, publisher).run_once(limit=100)

    assert relayed == 5
    assert publisher.event_ids == [e.event_id for e in events]
    assert [m.subject for m in publisher.published] == ["lumina.acme.chat.completed"] * 5
    assert uows.db.unsent() == []
    assert await RelayOutbox(uows, publisher).run_once() == 0
    assert publisher.calls == 5


async def test_relay_respects_limit_and_continues_where_it_stopped() -> None:
    uows, publisher = FakeUnitOfWorkFactory(), FakePublisher()
    await write_events(uows, [completed(n) for n in range(1, 8)])
    relay = RelayOutbox(uows, publisher)

    assert await relay.run_once(limit=3) == 3
    assert await relay.run_once(limit=3) == 3
    assert await relay.run_once(limit=3) == 1
    assert publisher.event_ids == [f"evt-{n:04d}" for n in range(1, 8)]


async def test_relay_failure_keeps_unpublished_messages_and_marks_acknowledged_ones() -> None:
    uows, publisher = FakeUnitOfWorkFactory(), FakePublisher(fail_on_call=3)
    await write_events(uows, [completed(n) for n in range(1, 6)])
    relay = RelayOutbox(uows, publisher)

    with pytest.raises(PublishFailed):
        await relay.run_once()

    assert [m.event_id for m in uows.db.sent()] == ["evt-0001", "evt-0002"]
    assert [m.event_id for m in uows.db.unsent()] == ["evt-0003", "evt-0004", "evt-0005"]
    assert await relay.run_once() == 3
    assert publisher.event_ids == [f"evt-{n:04d}" for n in range(1, 6)]
    assert publisher.duplicates == 0


async def test_relay_crash_before_commit_republishes_and_publisher_dedupes() -> None:
    """A relay that dies after publishing but before marking sent leaves the rows unsent."""
    uows, publisher = FakeUnitOfWorkFactory(), FakePublisher()
    await write_events(uows, [completed(n) for n in range(1, 4)])

    class DiesAfterFirstAck:
        async def publish(self, message):  # type: ignore[no-untyped-def]
            await publisher.publish(message)
            raise asyncio.CancelledError  # the process goes away here

    with pytest.raises(asyncio.CancelledError):
        await RelayOutbox(uows, DiesAfterFirstAck()).run_once()
    # Published (acknowledged) but never marked sent: all three rows are still unsent.
    assert len(uows.db.unsent()) == 3
    assert publisher.event_ids == ["evt-0001"]

    assert await RelayOutbox(uows, publisher).run_once() == 3
    assert publisher.event_ids == ["evt-0001", "evt-0002", "evt-0003"]
    assert publisher.duplicates == 1
    assert uows.db.unsent() == []


async def test_two_relays_do_not_claim_the_same_messages() -> None:
    uows = FakeUnitOfWorkFactory()
    await write_events(uows, [completed(n) for n in range(1, 5)])
    first, second = FakePublisher(), FakePublisher()
    gate = asyncio.Event()

    class Slow:
        async def publish(self, message):  # type: ignore[no-untyped-def]
            await gate.wait()
            await first.publish(message)

    slow = asyncio.create_task(RelayOutbox(uows, Slow()).run_once(limit=2))
    await asyncio.sleep(0)  # the slow relay has claimed its two rows
    assert await RelayOutbox(uows, second).run_once(limit=10) == 2
    gate.set()
    assert await slow == 2
    assert first.event_ids == ["evt-0001", "evt-0002"]
    assert second.event_ids == ["evt-0003", "evt-0004"]
    assert uows.db.unsent() == []


async def test_events_recorded_in_a_rolled_back_unit_of_work_never_reach_the_outbox() -> None:
    uows, publisher = FakeUnitOfWorkFactory(), FakePublisher()
    async with uows() as uow:
        uow.record(completed(1))
    with pytest.raises(RuntimeError):
        async with uows() as uow:
            uow.record(completed(2))
            raise RuntimeError("use case failed")

    assert await RelayOutbox(uows, publisher).run_once() == 0
    assert publisher.published == []


async def test_same_event_id_twice_in_the_outbox_is_an_integrity_violation() -> None:
    uows = FakeUnitOfWorkFactory()
    await write_events(uows, [completed(1)])
    with pytest.raises(IntegrityViolation):
        await write_events(uows, [completed(1)])
    assert len(uows.db.outbox) == 1


# --- RecordSpend -------------------------------------------------------------------------------


async def test_record_spend_adds_cost_and_tokens_to_the_daily_rollup() -> None:
    uows = FakeUnitOfWorkFactory()
    record = RecordSpend(uows)

    assert await record(completed(1)) is True
    assert await record(completed(2)) is True

    assert uows.db.spend == {("acme", "2025-03-01", "gpt-test"): (3_000, 33)}
    assert uows.db.processed == {(SPEND_CONSUMER, "evt-0001"), (SPEND_CONSUMER, "evt-0002")}


async def test_record_spend_is_idempotent_on_event_id() -> None:
    uows = FakeUnitOfWorkFactory()
    record = RecordSpend(uows)
    event = completed(7)

    results = [await record(event) for _ in range(3)]

    assert results == [True, False, False]
    assert uows.db.spend_total() == (7_000, 77)
    assert uows.db.commits == 1


async def test_record_spend_counts_a_redelivered_event_once_among_others() -> None:
    uows = FakeUnitOfWorkFactory()
    record = RecordSpend(uows)
    deliveries = [completed(1), completed(2), completed(1), completed(3), completed(2)]

    outcomes = [await record(e) for e in deliveries]

    assert outcomes == [True, True, False, True, False]
    assert uows.db.spend_total("acme") == (6_000, 66)


async def test_record_spend_uses_the_utc_day() -> None:
    uows = FakeUnitOfWorkFactory()
    late_evening_in_new_york = datetime(2025, 3, 1, 22, 30, tzinfo=timezone(timedelta(hours=-5)))

    await RecordSpend(uows)(completed(1, when=late_evening_in_new_york))

    assert list(uows.db.spend) == [("acme", "2025-03-02", "gpt-test")]


async def test_record_spend_failure_leaves_no_trace_so_a_retry_counts_it() -> None:
    uows = FakeUnitOfWorkFactory()

    class Boom(Exception):
        pass

    uows.db.fail_next_commit = Boom()
    with pytest.raises(Boom):
        await RecordSpend(uows)(completed(4))
    assert uows.db.processed == set()

    assert await RecordSpend(uows)(completed(4)) is True
    assert uows.db.spend_total() == (4_000, 44)
