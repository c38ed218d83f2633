"""What one request used and cost: a value the persistence adapter writes as a ``usage_records`` row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["FINISH_CANCELLED", "FINISH_INTERRUPTED", "UsageRecord"]

FINISH_INTERRUPTED = "interrupted"
"""``finish_reason`` of a usage row whose stream broke off after content (the upstream dropped, an
error chunk, the total timeout): what was produced is billed and recorded."""
FINISH_CANCELLED = "cancelled"
"""``finish_reason`` of a usage row whose client went away mid-answer."""


@dataclass(eq=False, slots=True)
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
    operation: str = "chat"  # what the call was for: chat, or memory.embedding / memory.summary / memory.extraction
