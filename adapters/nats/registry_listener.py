"""A replica's subscription to registry changes: an ephemeral, replica-private JetStream push
consumer on ``lumina.<tenant>.registry.changed`` delivering only new messages, so each backend
replica hears every change (not one replica per change, as a shared durable would give)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext

from adapters.nats.event_listener import listen_events
from domain.events import DomainEvent, RegistryChanged

__all__ = ["listen_registry_changes"]


async def listen_registry_changes(
    js: JetStreamContext,
    *,
    tenant_id: str,
    on_change: Callable[[DomainEvent], Awaitable[None]],
    stop: asyncio.Event,
    stream: str | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Call ``on_change`` for each ``RegistryChanged`` published from now on, until ``stop``; a
    failed reload is logged and retried by the next change (or the catalogue's TTL)."""

    async def on_event(event: DomainEvent) -> None:
        if isinstance(event, RegistryChanged):
            await on_change(event)

    await listen_events(
        js, subject=f"lumina.{tenant_id}.registry.changed", on_event=on_event, stop=stop, stream=stream, ready=ready
    )
