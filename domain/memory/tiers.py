"""Memory tiers: working context, episodic memory (turns, session summaries) and semantic memory
(facts with provenance and validity intervals).

Times are seconds since the epoch, passed in by the caller (the domain reads no clock). A fact is
valid on the half-open interval ``[valid_from, valid_to)``; ``valid_to is None`` means "still
valid". Facts are never deleted: a newer fact *supersedes* an older one (closes its interval and
records a ``supersedes`` edge), and a retraction closes the interval without a successor.
Invariant kept by ``SemanticMemory``: at most one currently-valid fact per (subject, predicate).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import Enum

import msgspec
import msgspec.structs

from domain.errors import InvalidRequest, NotFound
from domain.memory.graph import Edge

__all__ = [
    "Fact",
    "SemanticMemory",
    "SessionSummary",
    "Tier",
    "Turn",
    "WorkingContext",
    "fact_key",
    "normalize_term",
]


class Tier(str, Enum):
    WORKING = "working"
    EPISODIC = "episodic"
    SEMANTIC = "semantic"


def normalize_term(text: str) -> str:
    """Case- and whitespace-insensitive form of a subject, predicate or object."""
    return " ".join(text.casefold().split())


def fact_key(subject: str, predicate: str) -> tuple[str, str]:
    return normalize_term(subject), normalize_term(predicate)


def _check_time(field: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest.single(field, "must be a finite number of seconds")


def _check_importance(value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise InvalidRequest.single("importance", "must be in [0, 1]")


class Turn(msgspec.Struct, frozen=True):
    """One message of a conversation (episodic tier)."""

    id: str
    session_id: str
    role: str
    text: str
    at: float
    importance: float = 0.5
    entities: tuple[str, ...] = ()
    topic_id: str | None = None

    def __post_init__(self) -> None:
        if not self.id or not self.session_id:
            raise InvalidRequest.single("turn", "id and session_id must be non-empty")
        _check_time("turn.at", self.at)
        _check_importance(self.importance)


class SessionSummary(msgspec.Struct, frozen=True):
    """A summary of one session (episodic tier), derived from its turns."""

    id: str
    session_id: str
    text: str
    at: float
    source_turn_ids: tuple[str, ...]
    importance: float = 0.6

    def __post_init__(self) -> None:
        if not self.id or not self.session_id:
            raise InvalidRequest.single("summary", "id and session_id must be non-empty")
        _check_time("summary.at", self.at)
        _check_importance(self.importance)

    def derived_from_edges(self) -> tuple[Edge, ...]:
        return tuple(Edge(self.id, t, "derived_from") for t in self.source_turn_ids)


class Fact(msgspec.Struct, frozen=True):
    """A semantic fact ``subject predicate object`` with provenance (source turn ids, at least one)
    and a validity interval ``[valid_from, valid_to)``."""

    id: str
    subject: str
    predicate: str
    object: str
    text: str
    source_turn_ids: tuple[str, ...]
    valid_from: float
    valid_to: float | None = None
    importance: float = 0.5
    vector: tuple[float, ...] | None = None
    entities: tuple[str, ...] = ()
    supersedes: str | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise InvalidRequest.single("fact.id", "must be non-empty")
        if not normalize_term(self.subject) or not normalize_term(self.predicate):
            raise InvalidRequest.single("fact", "subject and predicate must be non-empty")
        if not self.source_turn_ids:
            raise InvalidRequest.single("fact.source_turn_ids", "a fact needs provenance (at least one turn)")
        _check_time("fact.valid_from", self.valid_from)
        if self.valid_to is not None:
            _check_time("fact.valid_to", self.valid_to)
            if self.valid_to < self.valid_from:
                raise InvalidRequest.single("fact.valid_to", "must not precede valid_from")
        _check_importance(self.importance)

    @property
    def key(self) -> tuple[str, str]:
        return fact_key(self.subject, self.predicate)

    @property
    def is_current(self) -> bool:
        return self.valid_to is None

    def valid_at(self, at: float) -> bool:
        return self.valid_from <= at and (self.valid_to is None or at < self.valid_to)

    def closed(self, at: float) -> Fact:
        """This fact with its interval closed at ``at`` (never before ``valid_from``)."""
        if self.valid_to is not None:
            raise InvalidRequest.single("fact.valid_to", f"fact {self.id!r} is already closed")
        return msgspec.structs.replace(self, valid_to=max(at, self.valid_from))

    def derived_from_edges(self) -> tuple[Edge, ...]:
        return tuple(Edge(self.id, t, "derived_from") for t in self.source_turn_ids)


class SemanticMemory(msgspec.Struct, frozen=True):
    """All facts of one scope (tenant/user), current and historical. Operations return a new value
    together with the graph edges they created."""

    facts: tuple[Fact, ...] = ()

    def __post_init__(self) -> None:
        seen_ids: set[str] = set()
        current: set[tuple[str, str]] = set()
        for fact in self.facts:
            if fact.id in seen_ids:
                raise InvalidRequest.single("facts", f"duplicate fact id {fact.id!r}")
            seen_ids.add(fact.id)
            if fact.is_current:
                if fact.key in current:
                    raise InvalidRequest.single("facts", f"two current facts for {fact.key!r}")
                current.add(fact.key)

    def get(self, fact_id: str) -> Fact:
        for fact in self.facts:
            if fact.id == fact_id:
                return fact
        raise NotFound("fact", fact_id)

    def current(self) -> tuple[Fact, ...]:
        return tuple(f for f in self.facts if f.is_current)

    def current_for(self, subject: str, predicate: str) -> Fact | None:
        key = fact_key(subject, predicate)
        return next((f for f in self.facts if f.is_current and f.key == key), None)

    def valid_at(self, at: float) -> tuple[Fact, ...]:
        return tuple(f for f in self.facts if f.valid_at(at))

    def history(self, subject: str, predicate: str) -> tuple[Fact, ...]:
        key = fact_key(subject, predicate)
        return tuple(sorted((f for f in self.facts if f.key == key), key=lambda f: (f.valid_from, f.id)))

    def _replace(self, updated: Iterable[Fact]) -> tuple[Fact, ...]:
        by_id = {f.id: f for f in updated}
        return tuple(by_id.pop(f.id, f) for f in self.facts) + tuple(by_id.values())

    def add(self, fact: Fact) -> tuple[SemanticMemory, tuple[Edge, ...]]:
        """Record a new fact. If a current fact has the same subject+predicate, the new one
        supersedes it (see ``supersede``)."""
        if any(f.id == fact.id for f in self.facts):
            raise InvalidRequest.single("fact.id", f"fact {fact.id!r} already exists")
        old = self.current_for(fact.subject, fact.predicate) if fact.is_current else None
        if old is not None:
            return self.supersede(old.id, fact)
        return SemanticMemory(self._replace([fact])), fact.derived_from_edges()

    def supersede(self, old_id: str, new: Fact) -> tuple[SemanticMemory, tuple[Edge, ...]]:
        """Close ``old_id`` at ``new.valid_from`` and add ``new`` with a ``supersedes`` edge. Any
        other current fact with ``new``'s subject+predicate is closed too, so exactly one stays."""
        old = self.get(old_id)
        if not old.is_current:
            raise InvalidRequest.single("old_id", f"fact {old_id!r} is no longer current")
        if any(f.id == new.id for f in self.facts):
            raise InvalidRequest.single("fact.id", f"fact {new.id!r} already exists")
        if new.valid_from < old.valid_from:
            raise InvalidRequest.single("fact.valid_from", "a superseding fact cannot start before the old one")
        new = msgspec.structs.replace(new, supersedes=old.id, valid_to=None)
        closed = [old.closed(new.valid_from)]
        closed += [f.closed(new.valid_from) for f in self.current() if f.key == new.key and f.id != old.id]
        memory = SemanticMemory(self._replace([*closed, new]))
        return memory, (Edge(new.id, old.id, "supersedes"), *new.derived_from_edges())

    def retract(self, fact_id: str, at: float) -> SemanticMemory:
        """Close a fact's validity at ``at`` (an explicit DELETE); the fact stays in history."""
        return SemanticMemory(self._replace([self.get(fact_id).closed(at)]))


class WorkingContext(msgspec.Struct, frozen=True):
    """The live conversation: the most recent turns, at most ``max_turns`` of them."""

    max_turns: int = 20
    turns: tuple[Turn, ...] = ()

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise InvalidRequest.single("max_turns", "must be >= 1")
        if len(self.turns) > self.max_turns:
            raise InvalidRequest.single("turns", f"at most {self.max_turns}")

    def push(self, turn: Turn) -> tuple[WorkingContext, tuple[Turn, ...]]:
        """Append ``turn``; returns the new context and the turns it evicted (oldest first), which
        the caller keeps in the episodic tier."""
        turns = (*self.turns, turn)
        overflow = len(turns) - self.max_turns
        evicted = turns[:overflow] if overflow > 0 else ()
        return WorkingContext(self.max_turns, turns[max(overflow, 0) :]), evicted

    def follows_edges(self) -> tuple[Edge, ...]:
        return tuple(Edge(b.id, a.id, "follows") for a, b in zip(self.turns, self.turns[1:], strict=False))
