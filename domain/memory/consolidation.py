"""Consolidation rules: what to do with a candidate fact, importance decay, promotion of repeated
episodic observations, and extractive session summaries.

``decide`` returns exactly one explicit decision, checked in this order:

1. **retraction** (``candidate.retraction``): the current fact with the same subject+predicate (and
   the same object, when the candidate names one) -> ``Delete`` (close its validity); none -> ``Noop``.
2. **same subject+predicate, same object** (a restatement) -> ``Update`` when the candidate is
   newer and more specific (more distinct content words), else ``Noop``.
3. **same subject+predicate, other object** (a contradiction) -> ``Update`` (the candidate
   supersedes the current fact) when it is not older than it, else ``Noop`` (stale news).
4. **near-duplicate** of another current fact (cosine of vectors >= ``threshold``) -> ``Update``
   when newer and more specific, else ``Noop``.
5. otherwise ``Add``.

``apply`` turns a decision into a new ``SemanticMemory`` plus the graph edges it creates. Ids and
times are arguments: nothing here reads a clock or draws a random number.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import TypeAlias

import msgspec

from domain.errors import InvalidRequest
from domain.memory.graph import Edge
from domain.memory.tiers import (
    Fact,
    SemanticMemory,
    SessionSummary,
    Turn,
    fact_key,
    normalize_term,
)
from domain.memory.topics import tokenize
from domain.memory.vectors import cosine_similarity

__all__ = [
    "Add",
    "CandidateFact",
    "Decision",
    "Delete",
    "Noop",
    "Observation",
    "Promotion",
    "Update",
    "apply",
    "decay_importance",
    "decide",
    "extractive_summary",
    "promotions",
    "split_sentences",
]


class CandidateFact(msgspec.Struct, frozen=True):
    """A fact extracted from turns, not yet stored. ``object`` may be empty for a retraction of
    whatever is currently known about subject+predicate."""

    subject: str
    predicate: str
    object: str
    text: str
    at: float
    source_turn_ids: tuple[str, ...]
    vector: tuple[float, ...] | None = None
    importance: float = 0.5
    entities: tuple[str, ...] = ()
    retraction: bool = False

    def to_fact(self, fact_id: str) -> Fact:
        return Fact(
            id=fact_id,
            subject=self.subject,
            predicate=self.predicate,
            object=self.object,
            text=self.text,
            source_turn_ids=self.source_turn_ids,
            valid_from=self.at,
            importance=self.importance,
            vector=self.vector,
            entities=self.entities,
        )


class Add(msgspec.Struct, frozen=True, tag="add"):
    fact: Fact
    reason: str = "new information"


class Update(msgspec.Struct, frozen=True, tag="update"):
    old_id: str
    fact: Fact
    reason: str


class Delete(msgspec.Struct, frozen=True, tag="delete"):
    old_id: str
    at: float
    reason: str = "explicit retraction"


class Noop(msgspec.Struct, frozen=True, tag="noop"):
    existing_id: str | None
    reason: str


Decision: TypeAlias = Add | Update | Delete | Noop


def _content(text: str) -> set[str]:
    return set(tokenize(text))


def _more_specific(new_text: str, old_text: str) -> bool:
    return len(_content(new_text)) > len(_content(old_text))


def decide(candidate: CandidateFact, memory: SemanticMemory, new_id: str, threshold: float = 0.92) -> Decision:
    """The consolidation decision for ``candidate`` against ``memory`` (see the module docstring).
    ``new_id`` names the fact created by ``Add`` or ``Update``."""
    if not -1.0 <= threshold <= 1.0:
        raise InvalidRequest.single("threshold", "must be a cosine in [-1, 1]")
    current = memory.current_for(candidate.subject, candidate.predicate)
    same_object = current is not None and normalize_term(current.object) == normalize_term(candidate.object)
    if candidate.retraction:
        if current is not None and (not normalize_term(candidate.object) or same_object):
            return Delete(current.id, max(candidate.at, current.valid_from))
        return Noop(current.id if current else None, "nothing current to retract")
    if not normalize_term(candidate.object):
        raise InvalidRequest.single("candidate.object", "must be non-empty unless retracting")
    newer = current is not None and candidate.at >= current.valid_from
    if current is not None and same_object:
        if newer and _more_specific(candidate.text, current.text):
            return Update(current.id, candidate.to_fact(new_id), "restated more specifically")
        return Noop(current.id, "already known")
    if current is not None:
        if newer:
            return Update(current.id, candidate.to_fact(new_id), f"contradicts {current.object!r}; supersedes it")
        return Noop(current.id, "older than the current fact")
    if candidate.vector is not None:
        best: tuple[float, Fact] | None = None
        for fact in memory.current():
            if fact.vector is None or len(fact.vector) != len(candidate.vector):
                continue
            sim = cosine_similarity(candidate.vector, fact.vector)
            if best is None or sim > best[0] or (sim == best[0] and fact.id < best[1].id):
                best = (sim, fact)
        if best is not None and best[0] >= threshold:
            sim, dup = best
            if candidate.at >= dup.valid_from and _more_specific(candidate.text, dup.text):
                return Update(dup.id, candidate.to_fact(new_id), f"near-duplicate (cosine {sim:.3f}), more specific")
            return Noop(dup.id, f"near-duplicate (cosine {sim:.3f})")
    return Add(candidate.to_fact(new_id))


def apply(memory: SemanticMemory, decision: Decision) -> tuple[SemanticMemory, tuple[Edge, ...]]:
    """Carry out a decision: the new semantic memory and the graph edges to add."""
    match decision:
        case Add(fact=fact):
            return memory.add(fact)
        case Update(old_id=old_id, fact=fact):
            return memory.supersede(old_id, fact)
        case Delete(old_id=old_id, at=at):
            return memory.retract(old_id, at), ()
        case Noop():
            return memory, ()
    raise InvalidRequest.single("decision", f"unknown decision {decision!r}")


def decay_importance(importance: float, last_seen: float, now: float, half_life: float, floor: float = 0.05) -> float:
    """Importance halves every ``half_life`` seconds since ``last_seen``, towards ``floor``
    (it never drops below the floor, and a value already below it is kept)."""
    if half_life <= 0:
        raise InvalidRequest.single("half_life", "must be > 0")
    if importance <= floor:
        return importance
    return floor + (importance - floor) * 0.5 ** (max(0.0, now - last_seen) / half_life)


class Observation(msgspec.Struct, frozen=True):
    """A fact-shaped statement seen in one episodic turn."""

    subject: str
    predicate: str
    object: str
    text: str
    session_id: str
    turn_id: str
    at: float
    vector: tuple[float, ...] | None = None


class Promotion(msgspec.Struct, frozen=True):
    candidate: CandidateFact
    session_ids: tuple[str, ...]


def promotions(
    observations: Sequence[Observation], min_sessions: int, semantic: SemanticMemory | None = None
) -> tuple[Promotion, ...]:
    """Observations of the same subject+predicate+object seen in at least ``min_sessions``
    distinct sessions become semantic candidates (text and vector of the latest sighting,
    provenance of all of them, importance growing with the number of sessions). Those already
    current in ``semantic`` are left out. Ordered by subject, predicate, object."""
    if min_sessions < 1:
        raise InvalidRequest.single("min_sessions", "must be >= 1")
    groups: dict[tuple[str, str, str], list[Observation]] = {}
    for obs in observations:
        groups.setdefault((*fact_key(obs.subject, obs.predicate), normalize_term(obs.object)), []).append(obs)
    out: list[Promotion] = []
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda o: (o.at, o.turn_id))
        sessions = tuple(sorted({o.session_id for o in group}))
        if len(sessions) < min_sessions:
            continue
        if semantic is not None:
            current = semantic.current_for(key[0], key[1])
            if current is not None and normalize_term(current.object) == key[2]:
                continue
        latest = group[-1]
        candidate = CandidateFact(
            subject=latest.subject,
            predicate=latest.predicate,
            object=latest.object,
            text=latest.text,
            at=latest.at,
            source_turn_ids=tuple(dict.fromkeys(o.turn_id for o in group)),
            vector=latest.vector,
            importance=min(1.0, 0.5 + 0.1 * len(sessions)),
        )
        out.append(Promotion(candidate, sessions))
    return tuple(out)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _tfidf(docs: list[list[str]]) -> list[dict[str, float]]:
    df: Counter[str] = Counter()
    for doc in docs:
        df.update(set(doc))
    n = len(docs)
    return [{t: c * math.log(1 + n / df[t]) for t, c in Counter(doc).items()} for doc in docs]


def _sparse_cosine(a: dict[str, float], b: dict[str, float]) -> float:
    if not a or not b:
        return 0.0
    dot = math.fsum(v * b[t] for t, v in a.items() if t in b)
    na = math.sqrt(math.fsum(v * v for v in a.values()))
    nb = math.sqrt(math.fsum(v * v for v in b.values()))
    return dot / (na * nb)


def extractive_summary(
    turns: Sequence[Turn], summary_id: str, session_id: str, at: float, max_sentences: int = 3
) -> SessionSummary:
    """The no-provider summary of a session: the ``max_sentences`` most central sentences
    (centrality = sum of tf-idf cosine to every other sentence; ties to the earlier sentence),
    in their original order, with provenance to the turns they came from."""
    if max_sentences < 1:
        raise InvalidRequest.single("max_sentences", "must be >= 1")
    sentences = [(turn.id, s) for turn in turns for s in split_sentences(turn.text)]
    vectors = _tfidf([tokenize(s) for _, s in sentences])
    centrality = [
        math.fsum(_sparse_cosine(v, w) for j, w in enumerate(vectors) if j != i) for i, v in enumerate(vectors)
    ]
    order = sorted(range(len(sentences)), key=lambda i: (-centrality[i], i))
    picked = sorted(order[:max_sentences])
    text = " ".join(sentences[i][1] for i in picked)
    sources = tuple(dict.fromkeys(sentences[i][0] for i in picked))
    return SessionSummary(summary_id, session_id, text, at, sources)
