"""Domain events. Aggregates record them; the unit of work writes them to the outbox."""

from __future__ import annotations

from datetime import datetime

import msgspec

__all__ = ["ChatCompleted", "DomainEvent"]


class ChatCompleted(msgspec.Struct, frozen=True, tag="chat_completed"):
    event_id: str
    tenant_id: str
    occurred_at: datetime
    request_id: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_micros: int
    latency_ms: int
    finish_reason: str
    conversation_id: str = ""

    aggregate = "chat"
    event_type = "completed"

    @property
    def aggregate_id(self) -> str:
        return self.request_id

    @property
    def subject(self) -> str:
        return f"lumina.{self.tenant_id}.{self.aggregate}.{self.event_type}"


DomainEvent = ChatCompleted
