"""What one request used and cost (an entity, mapped imperatively by the persistence adapter)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["UsageRecord"]


@dataclass(eq=False)
class UsageRecord:
    request_id: str
    tenant_id: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    cost_micros: int
    latency_ms: int
    finish_reason: str
    created_at: datetime
    conversation_id: str | None = None
    user_id: str | None = None  # the principal's user
    api_key_id: str | None = None  # set when the principal called with an API key
