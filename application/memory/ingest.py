"""``IngestTurns``: store a conversation's new turns as episodic memories.

For each turn: an embedding (``Embedder``), a memory row (``MemoryRepository``) and a vector
(``VectorStore``, metadata ``user_id``, ``conversation_id``, ``tier``, ``at``, ``topic_id``,
``role``), an incremental topic assignment (``domain.memory.topics.TopicModel``), and graph edges:
``about`` (memory -> its topic), ``mentions`` (memory -> each entity it names) and ``follows``
(memory -> the memory before it in the conversation).

Entities are found without a model: capitalised words that do not start a sentence (plus the
speaker), normalised to lower case. Topic updates are read-modify-write per call: two concurrent
ingests for one user may each open a topic for the same theme (harmless; consolidation merges).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from application.memory.ports import (
    ENTITY_PREFIX,
    TOPIC_PREFIX,
    MemoryRepository,
    StoredMemory,
    node_kind,
)
from application.ports import Embedder, VectorStore
from domain.errors import InvalidRequest
from domain.memory.graph import Edge
from domain.memory.tiers import Tier
from domain.memory.topics import STOPWORDS, TopicModel, keyword_labels
from domain.memory.vectors import VectorRecord, validate_tenant
from domain.ports import IdGenerator

__all__ = ["IngestTurns", "TurnInput", "extract_entities"]

_SENTENCE_START = re.compile(r"(^|[.!?]\s+)([A-Z][a-zA-Z'\-]+)")


class TurnInput(msgspec.Struct, frozen=True):
    """One turn to remember. ``id`` defaults to a new one; ``source_id`` is the caller's own id."""

    role: str
    text: str
    at: float
    source_id: str | None = None
    id: str | None = None
    importance: float = 0.5


def extract_entities(text: str, speaker: str = "") -> tuple[str, ...]:
    """Lower-cased capitalised words that do not start a sentence, and the speaker; sorted."""
    starts = {m.start(2) for m in _SENTENCE_START.finditer(text)}
    found = {
        m.group(1).split("'")[0].casefold()
        for m in re.finditer(r"\b([A-Z][a-zA-Z'\-]+)", text)
        if m.start(1) not in starts
    }
    if speaker.strip():
        found.add(speaker.strip().casefold())
    return tuple(sorted(e for e in found if len(e) > 1 and e not in STOPWORDS))


class IngestTurns:
    def __init__(
        self,
        repository: MemoryRepository,
        vectors: VectorStore,
        embedder: Embedder,
        ids: IdGenerator,
        *,
        topic_threshold: float = 0.6,
    ) -> None:
        self._repo = repository
        self._vectors = vectors
        self._embedder = embedder
        self._ids = ids
        self._topic_threshold = topic_threshold

    async def __call__(
        self, tenant: str, user: str, conversation: str, turns: Sequence[TurnInput]
    ) -> list[StoredMemory]:
        """Store ``turns`` (in conversation order); returns the memories written."""
        validate_tenant(tenant)
        if not user or not conversation:
            raise InvalidRequest.single("user", "user and conversation must be non-empty")
        turns = [t for t in turns if t.text.strip()]
        if not turns:
            return []
        vectors = await self._embedder.embed([_embedding_text(t) for t in turns])
        model = TopicModel(self._topic_threshold, tuple(await self._repo.topics(tenant, user)))
        previous = await self._repo.latest(tenant, conversation)
        memories: list[StoredMemory] = []
        edges: list[Edge] = []
        entities: dict[str, str] = {}
        touched: dict[str, list[str]] = {}
        for turn, vector in zip(turns, vectors, strict=True):
            memory_id = turn.id or self._ids.new_id()
            if node_kind(memory_id) != "memory":
                raise InvalidRequest.single("turn.id", f"must not start with {TOPIC_PREFIX!r} or {ENTITY_PREFIX!r}")
            model, assignment = model.assign(memory_id, vector, TOPIC_PREFIX + self._ids.new_id())
            names = extract_entities(turn.text, turn.role)
            memory = StoredMemory(
                id=memory_id,
                tenant_id=tenant,
                user_id=user,
                conversation_id=conversation,
                tier=Tier.EPISODIC,
                text=_memory_text(turn),
                at=turn.at,
                role=turn.role,
                importance=turn.importance,
                topic_id=assignment.topic_id,
                entities=names,
                source_id=turn.source_id,
            )
            memories.append(memory)
            touched.setdefault(assignment.topic_id, []).append(memory.text)
            edges.append(Edge(memory_id, assignment.topic_id, "about"))
            for name in names:
                entities[ENTITY_PREFIX + name] = name
                edges.append(Edge(memory_id, ENTITY_PREFIX + name, "mentions"))
            if previous is not None:
                edges.append(Edge(memory_id, previous.id, "follows"))
            previous = memory
        labels = {tid: " ".join(words) for tid, words in keyword_labels(touched).items()}
        changed = [t for t in model.topics if t.id in touched]
        await self._repo.save_topics(tenant, user, changed, labels)
        await self._repo.add_entities(tenant, entities)
        await self._repo.add(tenant, memories)
        await self._repo.add_edges(tenant, edges)
        await self._vectors.upsert(
            tenant,
            [
                VectorRecord(
                    id=m.id,
                    tenant_id=tenant,
                    vector=tuple(v),
                    metadata={
                        "user_id": user,
                        "conversation_id": conversation,
                        "tier": m.tier.value,
                        "at": float(m.at),
                        "topic_id": m.topic_id or "",
                        "role": m.role,
                    },
                    text=m.text,
                )
                for m, v in zip(memories, vectors, strict=True)
            ],
        )
        return memories


def _memory_text(turn: TurnInput) -> str:
    return f"{turn.role}: {turn.text}" if turn.role else turn.text


def _embedding_text(turn: TurnInput) -> str:
    return _memory_text(turn)
