"""The memory events round-trip through the event codec, on the subjects the worker consumes."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.events_codec import decode_event, encode_event
from api.worker import MEMORY_INGESTED_SUBJECT, MEMORY_TURN_SUBJECT
from domain.events import ChatTurnCompleted, MemoryIngested

AT = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    return len(p) == len(s) and all(a in ("*", b) for a, b in zip(p, s, strict=True))


def test_chat_turn_completed_round_trips() -> None:
    event = ChatTurnCompleted("e1", "acme", AT, "req-1", "alice", "conv-1", "I live in Lisbon.", "Nice!", "sim-small")
    message = encode_event(event)
    assert message.subject == "lumina.acme.chat.turn_completed" and _matches(MEMORY_TURN_SUBJECT, message.subject)
    assert not _matches("lumina.*.chat.completed", message.subject)  # the spend consumer never sees it
    assert decode_event(message.payload) == event


def test_memory_ingested_round_trips() -> None:
    event = MemoryIngested("e2", "acme", AT, "alice", "notes", 3)
    message = encode_event(event)
    assert message.subject == "lumina.acme.memory.ingested" and _matches(MEMORY_INGESTED_SUBJECT, message.subject)
    assert decode_event(message.payload) == event
