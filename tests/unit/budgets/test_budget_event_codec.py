"""``BudgetThresholdCrossed`` through the outbox wire format (lumina.v1.EventEnvelope) and back."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.events_codec import decode_event, encode_event
from domain.events import BudgetThresholdCrossed
from lumina.v1 import events_pb2


def test_threshold_event_round_trips_with_its_subject() -> None:
    event = BudgetThresholdCrossed(
        event_id="e1", tenant_id="acme", occurred_at=datetime(2026, 3, 10, 12, tzinfo=UTC), budget_id="b1",
        budget_name="company", scope="tenant", scope_id="acme", period_key="m2026-03", threshold_percent=80,
        limit_micros=10**12, spent_micros=8 * 10**11, enforcement="hard", provider="openai", model="gpt-x",
    )
    message = encode_event(event)
    assert message.subject == "lumina.acme.budget.threshold_crossed"
    assert decode_event(message.payload) == event
    envelope = events_pb2.EventEnvelope.FromString(message.payload)
    assert (envelope.aggregate, envelope.aggregate_id, envelope.event_type) == ("budget", "b1", "threshold_crossed")
    assert envelope.WhichOneof("payload") == "budget_threshold_crossed"
