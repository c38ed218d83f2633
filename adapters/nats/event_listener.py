"""A replica's subscription to events on a subject: an ephemeral, replica-private JetStream push
consumer delivering only new messages (every replica hears every event, as the registry listener
does), decoded and handed to ``on_event`` until ``stop``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from adapters.events_codec import EventDecodeError, decode_event
from adapters.nats.errors import BusUnavailable
from domain.events import DomainEvent

__all__ = ["listen_events"]

_log = structlog.get_logger(__name__)


async def listen_events(
    js: JetStreamContext,
    *,
    subject: str,
    on_event: Callable[[DomainEvent], Awaitable[None]],
    stop: asyncio.Event,
    stream: str | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.NEW, inactive_threshold=60.0)
    try:
        sub = await js.subscribe(subject, stream=stream, config=config, ordered_consumer=False)
    except (nats.errors.Error, OSError) as exc:
        raise BusUnavailable(f"cannot subscribe to {subject}: {exc or type(exc).__name__}") from exc
    if ready is not None:
        ready.set()
    try:
        while not stop.is_set():
            try:
                msg = await sub.next_msg(timeout=0.5)
            except TimeoutError:  # nats' own (a subclass), or a bare one from its client under load
                continue
            try:
                event = decode_event(msg.data)
            except EventDecodeError as exc:
                _log.warning("undecodable event ignored", subject=subject, error=str(exc))
                continue
            try:
                await on_event(event)
            except Exception as exc:  # noqa: BLE001 - one bad handling must not end the subscription
                _log.warning("event handling failed", subject=subject, error=str(exc) or type(exc).__name__)
    finally:
        try:
            await sub.unsubscribe()
        except (nats.errors.Error, OSError):
            pass
