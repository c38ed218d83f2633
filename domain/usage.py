"""What one request used and cost."""

from __future__ import annotations

from datetime import datetime

import msgspec

__all__ = ["UsageRecord"]


class UsageRecord(msgspec.Struct, frozen=True):
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
