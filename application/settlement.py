"""``UnitOfWorkSettlements``: the ``Settlements`` port over a unit of work, one transaction per
request (the usage row and its events' outbox messages, committed together). The composition root
may install a group-committing adapter instead (``adapters.postgres.settlement``)."""

from __future__ import annotations

from application.ports import UnitOfWorkFactory
from domain.events import DomainEvent
from domain.usage import UsageRecord

__all__ = ["UnitOfWorkSettlements"]


class UnitOfWorkSettlements:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def settle(self, record: UsageRecord, *events: DomainEvent) -> None:
        async with self._uow() as uow:
            await uow.usage.add(record)
            for event in events:
                uow.record(event)
            await uow.commit()
