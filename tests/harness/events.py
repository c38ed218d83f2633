"""Building test events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from domain.events import ChatCompleted

__all__ = ["chat_completed"]


def chat_completed(
    tenant: str,
    n: int,
    *,
    cost_micros: int | None = None,
    model: str = "gpt-test",
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> ChatCompleted:
    """The ``n``-th ChatCompleted of a test: cost ``1000*n`` micros and ``11*n`` tokens by default."""
    return ChatCompleted(
        event_id=event_id or f"{tenant}-{n:04d}-{uuid.uuid4().hex[:6]}",
        tenant_id=tenant,
        occurred_at=occurred_at or datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
        request_id=f"req-{tenant}-{n}",
        provider="openai",
        model=model,
        input_tokens=10 * n,
        output_tokens=n,
        cost_micros=1_000 * n if cost_micros is None else cost_micros,
        latency_ms=7,
        finish_reason="stop",
    )
