from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from adapters.events_codec import EventDecodeError, decode_event, encode_event
from domain.events import AuthenticationAudited, ChatCompleted, ModelHealthChanged, RegistryChanged
from lumina.v1 import events_pb2


def _event(**overrides: object) -> ChatCompleted:
    fields: dict[str, object] = {
        "event_id": "evt-1",
        "tenant_id": "acme",
        "occurred_at": datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC),
        "request_id": "req-9",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 1200,
        "output_tokens": 34,
        "cost_micros": 987654,
        "latency_ms": 321,
        "finish_reason": "stop",
        "conversation_id": "conv-7",
    }
    fields.update(overrides)
    return ChatCompleted(**fields)  # type: ignore[arg-type]


def test_round_trip_preserves_every_field() -> None:
    event = _event()
    message = encode_event(event, headers={"traceparent": "00-abc-def-01"})

    assert message.event_id == "evt-1"
    assert message.subject == "lumina.acme.chat.completed"
    assert message.headers == {"traceparent": "00-abc-def-01"}
    decoded = decode_event(message.payload)
    assert decoded == event
    assert decoded.occurred_at.utcoffset() == timedelta(0)


def test_envelope_carries_aggregate_metadata() -> None:
    message = encode_event(_event(conversation_id=""))
    envelope = events_pb2.EventEnvelope.FromString(message.payload)

    assert (envelope.aggregate, envelope.aggregate_id, envelope.event_type) == ("chat", "req-9", "completed")
    assert envelope.WhichOneof("payload") == "chat_completed"
    assert message.headers == {}


def test_non_utc_timestamps_keep_the_instant() -> None:
    local = datetime(2025, 3, 4, 7, 6, 7, tzinfo=timezone(timedelta(hours=2)))
    decoded = decode_event(encode_event(_event(occurred_at=local)).payload)
    assert decoded.occurred_at == local


@pytest.mark.parametrize(
    "payload", [b"\xff\xff\xff", events_pb2.EventEnvelope(event_id="x").SerializeToString()]
)
def test_garbage_or_unknown_payload_is_rejected(payload: bytes) -> None:
    with pytest.raises(EventDecodeError):
        decode_event(payload)


_AT = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    "event",
    [
        RegistryChanged(event_id="e1", tenant_id="acme", occurred_at=_AT, entity="model", name="m", action="put"),
        ModelHealthChanged(
            event_id="e2", tenant_id="acme", occurred_at=_AT, provider="p", model="m", previous="healthy",
            current="degraded", error_rate=0.25, latency_ms=120, ttft_ms=40, replica="r1",
        ),
        AuthenticationAudited(
            event_id="e3", tenant_id="acme", occurred_at=_AT, method="password", outcome="failure",
            user_id="u1", reason="invalid_credentials", client_address="127.0.0.1",
        ),
        AuthenticationAudited(event_id="e4", tenant_id="acme", occurred_at=_AT, method="totp", outcome="success"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_event_type_round_trips(event: object) -> None:
    message = encode_event(event)  # type: ignore[arg-type]
    assert decode_event(message.payload) == event
    assert message.subject == event.subject  # type: ignore[attr-defined]
