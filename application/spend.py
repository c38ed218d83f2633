"""``RecordSpend``: the spend roll-up consumer, idempotent on the event id.

The check-and-record of the event id and the roll-up update share one transaction, so an event
delivered twice (a relay re-publish, a redelivery after a crash before the ack) is counted once.
"""

from __future__ import annotations

from datetime import UTC

from application.ports import UnitOfWorkFactory
from domain.events import ChatCompleted

__all__ = ["SPEND_CONSUMER", "RecordSpend"]

SPEND_CONSUMER = "spend"


class RecordSpend:
    def __init__(self, uow_factory: UnitOfWorkFactory) -> None:
        self._uow_factory = uow_factory

    async def __call__(self, event: ChatCompleted) -> bool:
        """Add the event's cost and tokens to its tenant's daily roll-up; False for a duplicate."""
        occurred = event.occurred_at
        day = (occurred.astimezone(UTC) if occurred.tzinfo else occurred).date().isoformat()
        async with self._uow_factory() as uow:
            if not await uow.processed.first_time(SPEND_CONSUMER, event.event_id):
                return False
            await uow.spend.add_spend(
                event.tenant_id,
                day,
                event.model,
                event.cost_micros,
                event.input_tokens + event.output_tokens,
            )
            await uow.commit()
        return True
