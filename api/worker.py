"""``lumina worker``'s loops: the outbox relay, the JetStream consumers (spend roll-ups for now)
and, when SMTP is configured, the mail relay (identity's mail outbox, e.g. password reset links);
with memory on, the memory consumers (``ChatTurnCompleted`` -> ingest + consolidation,
``MemoryIngested`` -> consolidation) and the consolidation sweep (every user, with decay).

``Worker`` takes dependencies that are already built (the composition root reads settings and
builds them) and runs until ``stop`` is set. Each loop survives infrastructure failures: it logs,
waits and tries again, so a database or NATS restart does not end the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog

from adapters.nats import BusError, JetStreamBus, consume
from adapters.nats.registry_listener import listen_registry_changes
from application.outbox import RelayOutbox
from application.ports import UnitOfWorkFactory
from application.spend import SPEND_CONSUMER, RecordSpend
from domain.errors import InvalidRequest
from domain.events import ChatCompleted, ChatTurnCompleted, DomainEvent, MemoryIngested

if TYPE_CHECKING:
    from api.memory import MemoryModule

__all__ = ["MEMORY_INGESTED_SUBJECT", "MEMORY_TURN_SUBJECT", "SPEND_SUBJECT", "Worker"]

SPEND_SUBJECT = "lumina.*.chat.completed"
MEMORY_TURN_SUBJECT = "lumina.*.chat.turn_completed"
MEMORY_INGESTED_SUBJECT = "lumina.*.memory.ingested"
MEMORY_TURN_CONSUMER = "memory-turns"
MEMORY_INGESTED_CONSUMER = "memory-ingested"

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
        deliver_mail: Callable[[], Awaitable[int]] | None = None,
        mail_interval: float = 2.0,
        memory: MemoryModule | None = None,
        memory_subjects: tuple[str, str] = (MEMORY_TURN_SUBJECT, MEMORY_INGESTED_SUBJECT),
        memory_sweep_interval: float = 3600.0,
    ) -> None:
        self._relay = RelayOutbox(uow_factory, bus)
        self._record_spend = RecordSpend(uow_factory)
        self._bus = bus
        self._poll_interval = poll_interval
        self._relay_batch = relay_batch
        self._spend_subject = spend_subject
        self._retry_delay = retry_delay
        self._deliver_mail = deliver_mail  # application.identity.DeliverMail; None: mail stays queued
        self._mail_interval = mail_interval
        self._memory = memory  # None: memory off (its events stay in the stream)
        self._memory_subjects = memory_subjects
        self._memory_sweep_interval = memory_sweep_interval  # 0: no sweep
        self.registry_listening = asyncio.Event()  # set once memory's registry follows RegistryChanged

    async def run(self, stop: asyncio.Event) -> None:
        """Relay the outbox and run the consumers until ``stop`` is set."""
        _log.info("worker started", spend_subject=self._spend_subject, stream=self._bus.stream)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._relay_loop(stop), name="outbox-relay")
            group.create_task(self._spend_loop(stop), name="spend-consumer")
            if self._deliver_mail is not None:
                group.create_task(self._mail_loop(stop, self._deliver_mail), name="mail-delivery")
            if self._memory is not None:
                turns, ingested = self._memory_subjects
                group.create_task(self._memory_loop(stop, MEMORY_TURN_CONSUMER, turns), name="memory-turns")
                group.create_task(self._memory_loop(stop, MEMORY_INGESTED_CONSUMER, ingested), name="memory-ingested")
                if self._memory_sweep_interval > 0:
                    group.create_task(self._memory_sweep_loop(stop), name="memory-sweep")
                if self._memory.registry is not None:
                    group.create_task(self._registry_loop(stop), name="memory-registry")
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

    async def _mail_loop(self, stop: asyncio.Event, deliver: Callable[[], Awaitable[int]]) -> None:
        while not stop.is_set():
            try:
                sent = await deliver()
            except Exception as exc:  # noqa: BLE001 - SMTP or database down: log (no content) and retry
                _log.warning("mail delivery failed; will retry", error=_describe(exc))
                await _wait(stop, max(self._retry_delay, self._mail_interval))
                continue
            if sent:
                _log.info("mail delivered", count=sent)
            else:
                await _wait(stop, self._mail_interval)

    async def _memory_loop(self, stop: asyncio.Event, durable: str, subject: str) -> None:
        while not stop.is_set():
            try:
                await consume(
                    self._bus.js, durable=durable, filter_subject=subject, handler=self._on_memory_event,
                    stop=stop, stream=self._bus.stream,
                )
            except BusError as exc:
                _log.warning("memory consumer failed; will restart", consumer=durable, error=_describe(exc))
                await _wait(stop, self._retry_delay)

    async def _on_memory_event(self, event: DomainEvent, subject: str) -> None:
        """Consolidate the event's user; a failure that cannot heal (bad input) is logged and
        acked, anything else is redelivered (the handler is idempotent)."""
        memory = self._memory
        assert memory is not None
        try:
            match event:
                case ChatTurnCompleted():
                    report = await memory.remember(event)
                case MemoryIngested():
                    report = await memory.consolidate(event.tenant_id, event.user_id)
                case _:
                    return
        except InvalidRequest as exc:
            _log.error("memory event dropped", event_id=event.event_id, error=exc.message)
            return
        if report is not None:
            _log.info(
                "memory consolidated", event_id=event.event_id, tenant=report.tenant_id, turns=report.turns,
                added=report.count("add"), updated=report.count("update"), deleted=report.count("delete"),
                noop=report.count("noop"),
            )

    async def _registry_loop(self, stop: asyncio.Event) -> None:
        """Keep memory's provider registry current: reload it on every ``RegistryChanged`` of its
        tenant (a replica-private consumer of new messages, as the backend's replicas have)."""
        memory = self._memory
        assert memory is not None and memory.registry is not None
        registry = memory.registry
        while not stop.is_set():
            try:
                await listen_registry_changes(
                    self._bus.js, tenant_id=registry.tenant_id, on_change=registry.reload.on_event, stop=stop,
                    stream=self._bus.stream, ready=self.registry_listening,
                )
            except BusError as exc:
                _log.warning("registry listener failed; will restart", error=_describe(exc))
                await _wait(stop, self._retry_delay)

    async def _memory_sweep_loop(self, stop: asyncio.Event) -> None:
        memory = self._memory
        assert memory is not None
        while not stop.is_set():
            await _wait(stop, self._memory_sweep_interval)
            if stop.is_set():
                return
            try:
                if memory.registry is not None:
                    await memory.registry.reload()
                reports = await memory.sweep()
            except Exception as exc:  # noqa: BLE001 - database down: log and try at the next interval
                _log.warning("memory sweep failed; will retry", error=_describe(exc))
                continue
            _log.info(
                "memory sweep", users=len(reports), failed=len(memory.sweep.failures),
                decayed=sum(r.decayed for r in reports), turns=sum(r.turns for r in reports),
            )

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
