"""Domain events <-> ``lumina.v1.EventEnvelope`` protobuf bytes (the outbox and bus wire format).

``encode_event`` builds the ``OutboxMessage`` written by the unit of work; the subject is the event's
own (``lumina.<tenant>.<aggregate>.<event>``). ``decode_event`` is its inverse for consumers and
raises ``EventDecodeError`` (a ``ValueError``) on bytes that are not an envelope it knows.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from google.protobuf.message import DecodeError

from application.ports import OutboxMessage
from domain.events import DomainEvent
from lumina.v1 import events_pb2

__all__ = ["EventDecodeError", "decode_event", "encode_event"]


class EventDecodeError(ValueError):
    """The payload is not a ``lumina.v1.EventEnvelope`` carrying an event this build knows."""


# Each event's msgspec tag names its field in the envelope's ``payload`` oneof, and the event's own
# fields (all but the envelope's event_id, tenant_id, occurred_at) are that message's fields, by name:
# a new event needs its Struct and its proto message, nothing here.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ENVELOPE_FIELDS = frozenset({"event_id", "tenant_id", "occurred_at"})
_EVENTS: dict[str, tuple[type[DomainEvent], tuple[str, ...]]] = {}
for _cls in DomainEvent.__args__:  # type: ignore[attr-defined]
    _tag = _cls.__struct_config__.tag
    _fields = tuple(f.name for f in msgspec.structs.fields(_cls) if f.name not in _ENVELOPE_FIELDS)
    _proto = events_pb2.EventEnvelope.DESCRIPTOR.fields_by_name[_tag].message_type
    _missing = set(_fields) - set(_proto.fields_by_name)
    if _missing:  # pragma: no cover - caught by the round-trip tests at import
        raise TypeError(f"events.proto {_proto.name} lacks fields {sorted(_missing)} of {_cls.__name__}")
    _EVENTS[_tag] = (_cls, _fields)


def encode_event(event: DomainEvent, headers: dict[str, str] | None = None) -> OutboxMessage:
    envelope = events_pb2.EventEnvelope(
        event_id=event.event_id,
        tenant_id=event.tenant_id,
        aggregate=event.aggregate,
        aggregate_id=event.aggregate_id,
        event_type=event.event_type,
    )
    at = event.occurred_at if event.occurred_at.tzinfo is not None else event.occurred_at.replace(tzinfo=UTC)
    since = at - _EPOCH  # Timestamp.FromDatetime's arithmetic, without its pure-Python detour
    envelope.occurred_at.seconds = since.days * 86_400 + since.seconds
    envelope.occurred_at.nanos = since.microseconds * 1_000
    tag = type(event).__struct_config__.tag
    _, fields = _EVENTS[tag]
    body = getattr(envelope, tag)
    for name in fields:
        setattr(body, name, getattr(event, name))
    body.SetInParent()  # an event whose fields are all defaults still selects its oneof case
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
    kind = envelope.WhichOneof("payload")
    if kind not in _EVENTS:
        raise EventDecodeError(f"unknown event payload {kind!r} in envelope {envelope.event_id}")
    cls, fields = _EVENTS[kind]
    body = getattr(envelope, kind)
    return cls(
        event_id=envelope.event_id,
        tenant_id=envelope.tenant_id,
        occurred_at=envelope.occurred_at.ToDatetime(tzinfo=UTC),
        **{name: getattr(body, name) for name in fields},
    )
