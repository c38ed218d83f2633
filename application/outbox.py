"""``RelayOutbox``: move committed outbox messages to the event bus, at least once, in order.

One run claims a batch of unsent messages in a unit of work (locked against concurrent relays),
publishes each in insertion order awaiting the bus's acknowledgement, marks them sent and commits.
A crash after a publish and before the commit leaves the messages unsent, so the next run publishes
them again: the bus de-duplicates on the event id within its window and consumers de-duplicate on
it for good. Nothing is marked sent that was not acknowledged by the bus.
"""

from __future__ import annotations

from application.ports import EventPublisher, UnitOfWorkFactory

__all__ = ["RelayOutbox"]


class RelayOutbox:
    def __init__(self, uow_factory: UnitOfWorkFactory, publisher: EventPublisher) -> None:
        self._uow_factory = uow_factory
        self._publisher = publisher

    async def run_once(self, limit: int = 100) -> int:
        """Relay up to ``limit`` messages; return how many were published and marked sent.

        If publishing fails part-way, the messages already acknowledged are marked sent and
        committed, then the publisher's error is raised; the rest stay unsent for the next run.
        """
        async with self._uow_factory() as uow:
            messages = await uow.outbox.claim_unsent(limit)
            if not messages:
                return 0
            sent: list[str] = []
            try:
                for message in messages:
                    await self._publisher.publish(message)
                    sent.append(message.event_id)
            finally:
                if sent:
                    await uow.outbox.mark_sent(sent)
                    await uow.commit()
        return len(sent)
