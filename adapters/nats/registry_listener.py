"""A replica's subscription to registry changes: an ephemeral, replica-private JetStream push
consumer on ``lumina.<tenant>.registry.changed`` delivering only new messages, so each backend
replica hears every change (not one replica per change, as a shared durable would give)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from adapters.events_codec import EventDecodeError, decode_event
from adapters.nats.errors import BusUnavailable
from domain.events import DomainEvent, RegistryChanged

__all__ = ["listen_registry_changes"]

_log = structlog.get_logger(__name__)


async def listen_registry_changes(
    js: JetStreamContext,
    *,
    tenant_id: str,
    on_change: Callable[[DomainEvent], Awaitable[None]],
    stop: asyncio.Event,
    stream: str | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Call ``on_change`` for each ``RegistryChanged`` published from now on, until ``stop``."""
    subject = f"lumina.{tenant_id}.registry.changed"
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
            except nats.errors.TimeoutError:
                continue
            try:
                event = decode_event(msg.data)
            except EventDecodeError as exc:
                _log.warning("undecodable registry event ignored", error=str(exc))
                continue
            if isinstance(event, RegistryChanged):
                try:
                    await on_change(event)
                except Exception as exc:  # noqa: BLE001 - a failed reload is retried by the next change / TTL
                    _log.warning("registry reload failed", error=str(exc) or type(exc).__name__)
    finally:
        try:
            await sub.unsubscribe()
        except (nats.errors.Error, OSError):
            pass
