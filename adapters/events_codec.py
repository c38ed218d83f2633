"""Domain events <-> ``lumina.v1.EventEnvelope`` protobuf bytes (the outbox and bus wire format).

``encode_event`` builds the ``OutboxMessage`` written by the unit of work; the subject is the event's
own (``lumina.<tenant>.<aggregate>.<event>``). ``decode_event`` is its inverse for consumers and
raises ``EventDecodeError`` (a ``ValueError``) on bytes that are not an envelope it knows.
"""

from __future__ import annotations

from datetime import UTC

from google.protobuf.message import DecodeError

from application.ports import OutboxMessage
from domain.events import AuthenticationAudited, ChatCompleted, DomainEvent, ModelHealthChanged, RegistryChanged
from lumina.v1 import events_pb2

__all__ = ["EventDecodeError", "decode_event", "encode_event"]


class EventDecodeError(ValueError):
    """The payload is not a ``lumina.v1.EventEnvelope`` carrying an event this build knows."""


def encode_event(event: DomainEvent, headers: dict[str, str] | None = None) -> OutboxMessage:
    envelope = events_pb2.EventEnvelope(
        event_id=event.event_id,
        tenant_id=event.tenant_id,
        aggregate=event.aggregate,
        aggregate_id=event.aggregate_id,
        event_type=event.event_type,
    )
    envelope.occurred_at.FromDatetime(event.occurred_at)
    match event:
        case ChatCompleted():
            envelope.chat_completed.CopyFrom(
                events_pb2.ChatCompleted(
                    request_id=event.request_id,
                    provider=event.provider,
                    model=event.model,
                    input_tokens=event.input_tokens,
                    output_tokens=event.output_tokens,
                    cost_micros=event.cost_micros,
                    latency_ms=event.latency_ms,
                    finish_reason=event.finish_reason,
                    conversation_id=event.conversation_id,
                )
            )
        case RegistryChanged():
            envelope.registry_changed.CopyFrom(
                events_pb2.RegistryChanged(entity=event.entity, name=event.name, action=event.action)
            )
        case ModelHealthChanged():
            envelope.model_health_changed.CopyFrom(
                events_pb2.ModelHealthChanged(
                    provider=event.provider,
                    model=event.model,
                    previous=event.previous,
                    current=event.current,
                    error_rate=event.error_rate,
                    latency_ms=event.latency_ms,
                    ttft_ms=event.ttft_ms,
                    replica=event.replica,
                )
            )
        case AuthenticationAudited():
            envelope.authentication_audited.CopyFrom(
                events_pb2.AuthenticationAudited(
                    method=event.method,
                    outcome=event.outcome,
                    user_id=event.user_id,
                    reason=event.reason,
                    client_address=event.client_address,
                )
            )
        case _:  # pragma: no cover - DomainEvent is a closed union
            raise TypeError(f"no protobuf mapping for event type {type(event).__name__}")
    return OutboxMessage(
        event_id=event.event_id,
        subject=event.subject,
        payload=envelope.SerializeToString(deterministic=True),
        headers=dict(headers or {}),
    )


def decode_event(payload: bytes) -> DomainEvent:
    envelope = events_pb2.EventEnvelope()
    try:
        envelope.ParseFromString(payload)
    except DecodeError as exc:
        raise EventDecodeError(f"not a lumina.v1.EventEnvelope: {exc}") from exc
    if not envelope.event_id:
        raise EventDecodeError("event envelope without event_id")
    occurred_at = envelope.occurred_at.ToDatetime(tzinfo=UTC)
    kind = envelope.WhichOneof("payload")
    match kind:
        case "chat_completed":
            body = envelope.chat_completed
            return ChatCompleted(
                event_id=envelope.event_id,
                tenant_id=envelope.tenant_id,
                occurred_at=occurred_at,
                request_id=body.request_id,
                provider=body.provider,
                model=body.model,
                input_tokens=body.input_tokens,
                output_tokens=body.output_tokens,
                cost_micros=body.cost_micros,
                latency_ms=body.latency_ms,
                finish_reason=body.finish_reason,
                conversation_id=body.conversation_id,
            )
        case "registry_changed":
            reg = envelope.registry_changed
            return RegistryChanged(
                event_id=envelope.event_id,
                tenant_id=envelope.tenant_id,
                occurred_at=occurred_at,
                entity=reg.entity,
                name=reg.name,
                action=reg.action,
            )
        case "model_health_changed":
            h = envelope.model_health_changed
            return ModelHealthChanged(
                event_id=envelope.event_id,
                tenant_id=envelope.tenant_id,
                occurred_at=occurred_at,
                provider=h.provider,
                model=h.model,
                previous=h.previous,
                current=h.current,
                error_rate=h.error_rate,
                latency_ms=h.latency_ms,
                ttft_ms=h.ttft_ms,
                replica=h.replica,
            )
        case "authentication_audited":
            a = envelope.authentication_audited
            return AuthenticationAudited(
                event_id=envelope.event_id,
                tenant_id=envelope.tenant_id,
                occurred_at=occurred_at,
                method=a.method,
                outcome=a.outcome,
                user_id=a.user_id,
                reason=a.reason,
                client_address=a.client_address,
            )
        case _:
            raise EventDecodeError(f"unknown event payload {kind!r} in envelope {envelope.event_id}")
