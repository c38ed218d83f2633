"""``lumina worker``'s loops: the outbox relay and the JetStream consumers (spend roll-ups for now).

``Worker`` takes dependencies that are already built (the composition root reads settings and
builds them) and runs until ``stop`` is set. Each loop survives infrastructure failures: it logs,
waits and tries again, so a database or NATS restart does not end the worker.
"""

from __future__ import annotations

import asyncio

import structlog

from adapters.nats import BusError, JetStreamBus, consume
from application.outbox import RelayOutbox
from application.ports import UnitOfWorkFactory
from application.spend import SPEND_CONSUMER, RecordSpend
from domain.events import ChatCompleted, DomainEvent

__all__ = ["SPEND_SUBJECT", "Worker"]

SPEND_SUBJECT = "lumina.*.chat.completed"

_log = structlog.get_logger(__name__)


class Worker:
    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        bus: JetStreamBus,
        poll_interval: float = 0.5,
        relay_batch: int = 100,
        spend_subject: str = SPEND_SUBJECT,
        retry_delay: float = 1.0,
    ) -> None:
        self._relay = RelayOutbox(uow_factory, bus)
        self._record_spend = RecordSpend(uow_factory)
        self._bus = bus
        self._poll_interval = poll_interval
        self._relay_batch = relay_batch
        self._spend_subject = spend_subject
        self._retry_delay = retry_delay

    async def run(self, stop: asyncio.Event) -> None:
        """Relay the outbox and run the consumers until ``stop`` is set."""
        _log.info("worker started", spend_subject=self._spend_subject, stream=self._bus.stream)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._relay_loop(stop), name="outbox-relay")
            group.create_task(self._spend_loop(stop), name="spend-consumer")
        _log.info("worker stopped")

    async def _relay_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                relayed = await self._relay.run_once(self._relay_batch)
            except Exception as exc:  # noqa: BLE001 - database or bus down: log and retry
                _log.warning("outbox relay failed; will retry", error=_describe(exc))
                await _wait(stop, self._retry_delay)
                continue
            if relayed:
                _log.info("outbox relayed", count=relayed)
            if relayed < self._relay_batch:  # a full batch means more may be waiting
                await _wait(stop, self._poll_interval)

    async def _spend_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await consume(
                    self._bus.js,
                    durable=SPEND_CONSUMER,
                    filter_subject=self._spend_subject,
                    handler=self._on_event,
                    stop=stop,
                    stream=self._bus.stream,
                )
            except BusError as exc:
                _log.warning("spend consumer failed; will restart", error=_describe(exc))
                await _wait(stop, self._retry_delay)

    async def _on_event(self, event: DomainEvent, subject: str) -> None:
        match event:
            case ChatCompleted():
                counted = await self._record_spend(event)
                _log.info("spend recorded" if counted else "spend duplicate skipped", event_id=event.event_id)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stop`` is set, whichever comes first."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
