"""The outbox relay and the spend consumer against real Postgres and NATS JetStream.

THE crash test: events are committed through the Postgres unit of work; a relay process is killed
right after JetStream acknowledged its first publish and before it marked anything sent; a new
relay publishes everything again; JetStream drops the re-published event (same Nats-Msg-Id), the
stream is then given a real duplicate (same event, another msg id) and the consumer crashes once
after counting an event but before acking it, so JetStream redelivers it. The spend roll-up must
still equal the sum of the events, with every event id processed exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats.js.errors
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.events_codec import encode_event
from adapters.nats import JetStreamBus, consume
from adapters.postgres import SqlAlchemyUnitOfWorkFactory, create_engine
from adapters.postgres.migrate import upgrade
from api.worker import Worker
from application.outbox import RelayOutbox
from application.spend import SPEND_CONSUMER, RecordSpend
from domain.events import ChatCompleted, DomainEvent
from tests.harness.events import chat_completed
from tests.harness.jetstream import JetStreamNames
from tests.harness.relay_child import DIED_EXIT_CODE
from tests.harness.services import TestServices

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def relay_database_url(services: TestServices) -> Iterator[str]:
    """A migrated database of this module's own: the relay claims every unsent outbox row, so it
    must not see rows other test modules leave behind."""
    url = services.create_database("lumina_relay")
    upgrade(url)
    yield url
    services.drop_database(url)


@asynccontextmanager
async def database(url: str) -> AsyncIterator[tuple[AsyncEngine, SqlAlchemyUnitOfWorkFactory]]:
    engine = create_engine(url, pool_size=4)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("TRUNCATE outbox, processed_events, spend_daily"))
        yield engine, SqlAlchemyUnitOfWorkFactory(engine)
    finally:
        await engine.dispose()


@asynccontextmanager
async def bus_for(nats_url: str, names: JetStreamNames) -> AsyncIterator[JetStreamBus]:
    bus = await JetStreamBus.connect(nats_url, stream=names.stream, subjects=names.subjects)
    try:
        yield bus
    finally:
        await bus.close()


async def commit_events(uows: SqlAlchemyUnitOfWorkFactory, events: list[ChatCompleted]) -> None:
    """Commit the events through the real unit of work, two per transaction."""
    for i in range(0, len(events), 2):
        async with uows() as uow:
            for event in events[i : i + 2]:
                uow.record(event)
            await uow.commit()


async def scalar(engine: AsyncEngine, sql: str, **params: object) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.text(sql), params)).scalar_one())


async def processed_ids(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT event_id FROM processed_events WHERE consumer = :c ORDER BY event_id"),
            {"c": SPEND_CONSUMER},
        )
        return [r.event_id for r in rows]


async def spend_totals(engine: AsyncEngine, tenant: str) -> tuple[int, int]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT coalesce(sum(cost_micros), 0) AS cost, coalesce(sum(tokens), 0) AS tokens"
                    " FROM spend_daily WHERE tenant_id = :t"
                ),
                {"t": tenant},
            )
        ).one()
        return int(row.cost), int(row.tokens)


async def unsent(engine: AsyncEngine) -> int:
    return await scalar(engine, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")


async def stored(bus: JetStreamBus) -> int:
    return (await bus.js.stream_info(bus.stream)).state.messages


def run_relay_process(db_url: str, nats_url: str, names: JetStreamNames, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "tests.harness.relay_child", "--database-url", db_url, "--nats-url", nats_url]
    argv += ["--stream", names.stream, "--subjects", *names.subjects, *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)


async def wait_for(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_relay_killed_between_publish_and_mark_sent_loses_and_invents_nothing(
    relay_database_url: str, nats_url: str, js_names: JetStreamNames
) -> None:
    events = [chat_completed(js_names.tenant, n) for n in range(1, 6)]
    async with database(relay_database_url) as (engine, uows), bus_for(nats_url, js_names) as bus:
        await commit_events(uows, events)
        assert await unsent(engine) == 5

        # 1. The relay dies right after the first PubAck, before marking anything sent.
        crashed = await asyncio.to_thread(
            run_relay_process, relay_database_url, nats_url, js_names, "--die-after-acks", "1"
        )
        assert crashed.returncode == DIED_EXIT_CODE, crashed.stderr[-2000:]
        assert await stored(bus) == 1
        assert await unsent(engine) == 5  # its transaction died with it

        # 2. A new relay publishes all five again; JetStream drops the re-published first one.
        restarted = await asyncio.to_thread(run_relay_process, relay_database_url, nats_url, js_names)
        assert restarted.returncode == 0, restarted.stderr[-2000:]
        assert json.loads(restarted.stdout.strip().splitlines()[-1]) == {"relayed": 5}
        assert await unsent(engine) == 0
        assert await stored(bus) == 5

        # 3. A real duplicate in the stream: the same event under another msg id.
        await bus.js.publish(
            events[1].subject, encode_event(events[1]).payload, headers={"Nats-Msg-Id": "sneaky-copy"}
        )
        assert await stored(bus) == 6

        # 4. The spend consumer; its first attempt at event 3 dies after committing, before the ack.
        record = RecordSpend(uows)
        outcomes: list[tuple[str, bool]] = []
        crashed_once: set[str] = set()

        async def handler(event: DomainEvent, subject: str) -> None:
            counted = await record(event)
            outcomes.append((event.event_id, counted))
            if event.event_id == events[2].event_id and not crashed_once:
                crashed_once.add(event.event_id)
                raise RuntimeError("consumer died before acking")

        stop = asyncio.Event()
        consumer = asyncio.create_task(
            consume(
                bus.js,
                durable=SPEND_CONSUMER,
                filter_subject=js_names.subject(),
                handler=handler,
                stop=stop,
                stream=bus.stream,
                fetch_timeout=0.2,
                nak_delay=0.2,
            )
        )

        async def settled() -> bool:
            return len(outcomes) >= 7 and await _no_pending(bus)

        try:
            await wait_for(settled)
        finally:
            stop.set()
            await asyncio.wait_for(consumer, 5)

        # Seven deliveries (five events, the stream's duplicate, one redelivery), five counted.
        assert len(outcomes) == 7
        assert sorted(eid for eid, counted in outcomes if counted) == sorted(e.event_id for e in events)
        assert sorted(eid for eid, counted in outcomes if not counted) == sorted(
            [events[1].event_id, events[2].event_id]
        )
        assert await processed_ids(engine) == sorted(e.event_id for e in events)
        expected = (sum(e.cost_micros for e in events), sum(e.input_tokens + e.output_tokens for e in events))
        assert expected == (15_000, 165)
        assert await spend_totals(engine, js_names.tenant) == expected


async def test_worker_relays_and_rolls_up_spend_exactly_once(
    relay_database_url: str, nats_url: str, js_names: JetStreamNames
) -> None:
    events = [chat_completed(js_names.tenant, n, model=f"m{n % 2}") for n in range(1, 8)]
    async with database(relay_database_url) as (engine, uows), bus_for(nats_url, js_names) as bus:
        await commit_events(uows, events[:4])
        worker = Worker(
            uow_factory=uows, bus=bus, poll_interval=0.05, relay_batch=3, spend_subject=js_names.subject()
        )
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        try:
            # Events committed while the worker runs are picked up by its next poll.
            await commit_events(uows, events[4:])
            await bus.js.publish(
                events[0].subject, encode_event(events[0]).payload, headers={"Nats-Msg-Id": "dup-of-first"}
            )

            async def all_counted() -> bool:
                return len(await processed_ids(engine)) == len(events) and await unsent(engine) == 0

            await wait_for(all_counted)
            await wait_for(lambda: _no_pending(bus))
        finally:
            stop.set()
            await asyncio.wait_for(running, 10)

        assert await stored(bus) == len(events) + 1
        assert await processed_ids(engine) == sorted(e.event_id for e in events)
        assert await spend_totals(engine, js_names.tenant) == (
            sum(e.cost_micros for e in events),
            sum(e.input_tokens + e.output_tokens for e in events),
        )
        per_model = await scalar(engine, "SELECT count(*) FROM spend_daily WHERE tenant_id = :t", t=js_names.tenant)
        assert per_model == 2


async def _no_pending(bus: JetStreamBus) -> bool:
    try:
        info = await bus.js.consumer_info(bus.stream, SPEND_CONSUMER)
    except nats.js.errors.NotFoundError:  # the consumer task has not created it yet
        return False
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_concurrent_relays_publish_each_event_once(
    relay_database_url: str, nats_url: str, js_names: JetStreamNames
) -> None:
    events = [chat_completed(js_names.tenant, n) for n in range(1, 41)]
    async with database(relay_database_url) as (engine, uows), bus_for(nats_url, js_names) as bus:
        await commit_events(uows, events)
        relays = [RelayOutbox(uows, bus) for _ in range(3)]

        async def drain(relay: RelayOutbox) -> int:
            total = 0
            while relayed := await relay.run_once(limit=4):
                total += relayed
            return total

        counts = await asyncio.gather(*(drain(r) for r in relays))

        assert sum(counts) == len(events)  # SKIP LOCKED: no event claimed by two relays
        assert await unsent(engine) == 0
        assert await stored(bus) == len(events)
