"""JetStreamBus and the pull consumer against a real NATS JetStream server (the harness's)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from nats.js.api import StorageType

from adapters.embedded.process import free_port
from adapters.events_codec import encode_event
from adapters.nats import BusConfigError, BusUnavailable, JetStreamBus, consume
from domain.events import DomainEvent
from tests.harness.events import chat_completed
from tests.harness.jetstream import JetStreamNames


@asynccontextmanager
async def bus_for(nats_url: str, names: JetStreamNames, stream: str | None = None) -> AsyncIterator[JetStreamBus]:
    bus = await JetStreamBus.connect(nats_url, stream=stream or names.stream, subjects=names.subjects)
    try:
        yield bus
    finally:
        await bus.close()


async def stored(bus: JetStreamBus) -> int:
    return (await bus.js.stream_info(bus.stream)).state.messages


async def test_publish_stores_the_event_with_msg_id_and_trace_headers(nats_url: str, js_names: JetStreamNames) -> None:
    event = chat_completed(js_names.tenant, 1)
    message = encode_event(event, headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    async with bus_for(nats_url, js_names) as bus:
        await bus.publish(message)

        raw = await bus.js.get_last_msg(bus.stream, js_names.subject())
        info = await bus.js.stream_info(bus.stream)

    assert raw.data == message.payload
    assert raw.headers is not None
    assert raw.headers["Nats-Msg-Id"] == event.event_id
    assert raw.headers["traceparent"].startswith("00-0af7651916cd43dd")
    assert info.config.duplicate_window == 120.0
    assert StorageType(info.config.storage) is StorageType.FILE


async def test_republishing_an_event_id_within_the_window_is_stored_once(
    nats_url: str, js_names: JetStreamNames
) -> None:
    first, second = chat_completed(js_names.tenant, 1), chat_completed(js_names.tenant, 2)
    async with bus_for(nats_url, js_names) as bus:
        for message in (encode_event(first), encode_event(first), encode_event(second), encode_event(first)):
            await bus.publish(message)
        assert await stored(bus) == 2

        # Same payload under a different msg id is a different message to JetStream.
        await bus.js.publish(js_names.subject(), encode_event(first).payload, headers={"Nats-Msg-Id": "other-id"})
        assert await stored(bus) == 3


async def test_connect_is_idempotent_and_keeps_the_stream(nats_url: str, js_names: JetStreamNames) -> None:
    async with bus_for(nats_url, js_names) as bus:
        await bus.publish(encode_event(chat_completed(js_names.tenant, 1)))
    async with bus_for(nats_url, js_names) as again:
        assert await stored(again) == 1


async def test_a_stream_overlapping_another_is_a_config_error(nats_url: str, js_names: JetStreamNames) -> None:
    async with bus_for(nats_url, js_names):
        with pytest.raises(BusConfigError, match="JetStream refused stream"):
            await JetStreamBus.connect(nats_url, stream=js_names.another_stream(), subjects=js_names.subjects)


async def test_unreachable_server_is_bus_unavailable() -> None:
    with pytest.raises(BusUnavailable, match="cannot connect to NATS"):
        await JetStreamBus.connect(f"nats://127.0.0.1:{free_port()}", connect_deadline=1.0)


async def run_consumer(
    bus: JetStreamBus,
    names: JetStreamNames,
    handler,  # type: ignore[no-untyped-def]
    *,
    until: asyncio.Event,
    durable: str = "test",
    timeout: float = 10.0,
) -> None:
    """Run ``consume`` until ``until`` is set (or fail after ``timeout``), then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        consume(
            bus.js,
            durable=durable,
            filter_subject=names.subject(),
            handler=handler,
            stop=stop,
            stream=bus.stream,
            fetch_timeout=0.2,
            nak_delay=0.1,
        )
    )
    try:
        await asyncio.wait_for(until.wait(), timeout)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_consumer_decodes_and_acks_each_event_once(nats_url: str, js_names: JetStreamNames) -> None:
    events = [chat_completed(js_names.tenant, n) for n in range(1, 6)]
    seen: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def handler(event: DomainEvent, subject: str) -> None:
        seen.append((event.event_id, subject))
        if len(seen) == len(events):
            done.set()

    async with bus_for(nats_url, js_names) as bus:
        for event in events:
            await bus.publish(encode_event(event))
        await run_consumer(bus, js_names, handler, until=done)

        info = await bus.js.consumer_info(bus.stream, "test")
        assert info.num_ack_pending == 0
        assert info.num_pending == 0
        # A new run of the same durable consumer gets nothing: everything was acked.
        again = asyncio.Event()
        with pytest.raises(TimeoutError):
            await run_consumer(bus, js_names, handler, until=again, timeout=1.0)

    assert seen == [(e.event_id, js_names.subject()) for e in events]
    assert events[0] == chat_completed(js_names.tenant, 1, event_id=events[0].event_id)


async def test_a_failing_handler_gets_the_event_again(nats_url: str, js_names: JetStreamNames) -> None:
    events = [chat_completed(js_names.tenant, n) for n in range(1, 4)]
    attempts: dict[str, int] = {}
    done = asyncio.Event()

    async def flaky(event: DomainEvent, subject: str) -> None:
        attempts[event.event_id] = attempts.get(event.event_id, 0) + 1
        if event.event_id == events[1].event_id and attempts[event.event_id] < 3:
            raise RuntimeError("database briefly unavailable")
        if len(attempts) == 3 and attempts[events[1].event_id] == 3:
            done.set()

    async with bus_for(nats_url, js_names) as bus:
        for event in events:
            await bus.publish(encode_event(event))
        await run_consumer(bus, js_names, flaky, until=done)
        info = await bus.js.consumer_info(bus.stream, "test")

    assert attempts == {events[0].event_id: 1, events[1].event_id: 3, events[2].event_id: 1}
    assert info.num_ack_pending == 0
    assert info.num_redelivered == 0  # nothing left waiting for a redelivery


async def test_an_undecodable_message_is_terminated_and_does_not_block_others(
    nats_url: str, js_names: JetStreamNames
) -> None:
    good = chat_completed(js_names.tenant, 1)
    seen: list[str] = []
    done = asyncio.Event()

    async def handler(event: DomainEvent, subject: str) -> None:
        seen.append(event.event_id)
        done.set()

    async with bus_for(nats_url, js_names) as bus:
        await bus.js.publish(js_names.subject(), b"\xff\xfenot an envelope", headers={"Nats-Msg-Id": "poison"})
        await bus.publish(encode_event(good))
        await run_consumer(bus, js_names, handler, until=done)
        await asyncio.sleep(0.3)  # a nak'ed poison message would come back within this time
        info = await bus.js.consumer_info(bus.stream, "test")

    assert seen == [good.event_id]
    assert info.num_ack_pending == 0
    assert info.delivered.stream_seq == 2
