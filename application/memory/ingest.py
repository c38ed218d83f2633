"""``IngestTurns``: store a conversation's new turns as episodic memories.

For each turn: an embedding (``Embedder``), a memory row (``MemoryRepository``) and a vector
(``VectorStore``, metadata ``user_id``, ``conversation_id``, ``tier``, ``at``, ``topic_id``,
``role``), an incremental topic assignment (``domain.memory.topics.TopicModel``), and graph edges:
``about`` (memory -> its topic), ``mentions`` (memory -> each entity it names) and ``follows``
(memory -> the memory before it in the conversation).

**Context windows** (``window``, default 1): a turn is indexed with its neighbours. Its vector is
the embedding of ``window_text`` (the ``window`` turns before it, itself, the ``window`` turns after
it, one per line) and its full-text entry (``MemoryRepository.set_windows``) is the same text; the
memory's own ``text`` stays the turn. A turn's later neighbours arrive with later calls, so each
call also re-indexes the conversation's last ``window`` memories before it (their windows now
reach into the new turns). ``reindex`` rebuilds the windows of given memories (after an edit or a
deletion next to them). ``window=0`` indexes each turn alone. Windows follow the ``follows``
edges, so they never cross conversations. Why: a question is usually answered by a turn together
with the one it replies to (docs/memory.md, evaluation).

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

__all__ = ["IngestTurns", "TurnInput", "extract_entities", "vector_record", "window_text"]

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
        window: int = 1,
    ) -> None:
        if window < 0:
            raise InvalidRequest.single("window", "must be >= 0")
        self._repo = repository
        self._vectors = vectors
        self._embedder = embedder
        self._ids = ids
        self._topic_threshold = topic_threshold
        self._window = window

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
        previous = await self._repo.latest(tenant, conversation)
        w = self._window
        # Up to 2w earlier memories (oldest first, ending with ``previous``): the last w of them
        # get new windows (theirs now reach into these turns), and need w of context before them.
        before = await self._chain(tenant, previous, 2 * w)
        redo = before[len(before) - min(w, len(before)) :]
        sequence = [m.text for m in before] + [_memory_text(t) for t in turns]
        first = len(before) - len(redo)
        windows = [window_text(sequence[max(0, p - w) : p + w + 1]) for p in range(first, len(sequence))]
        vectors = await self._embedder.embed(windows)
        redo_windows, windows = windows[: len(redo)], windows[len(redo) :]
        redo_vectors, vectors = vectors[: len(redo)], vectors[len(redo) :]
        model = TopicModel(self._topic_threshold, tuple(await self._repo.topics(tenant, user)))
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
        indexed = [*zip(redo, redo_windows, redo_vectors, strict=True), *zip(memories, windows, vectors, strict=True)]
        if w:
            await self._repo.set_windows(tenant, {m.id: text for m, text, _ in indexed})
        await self._vectors.upsert(tenant, [vector_record(m, v) for m, _, v in indexed])
        return memories

    async def reindex(self, tenant: str, memory_ids: Sequence[str]) -> int:
        """Rebuild the context windows (vector and full-text entry) of these memories from their
        current neighbours, e.g. after one next to them was edited or deleted. Unknown ids are
        skipped; returns how many memories were re-indexed."""
        validate_tenant(tenant)
        found = await self._repo.get_many(tenant, memory_ids)
        if not found:
            return 0
        w = self._window
        windows: dict[str, str] = {}
        for memory in sorted(found, key=lambda m: m.id):
            older = await self._chain(tenant, memory, w + 1)  # ends with the memory itself
            newer = await self._chain(tenant, memory, w + 1, forward=True)  # starts with it
            windows[memory.id] = window_text([m.text for m in older[:-1] + newer])
        vectors = await self._embedder.embed([windows[m.id] for m in found])
        await self._repo.set_windows(tenant, windows if w else dict.fromkeys(windows, ""))
        await self._vectors.upsert(tenant, [vector_record(m, v) for m, v in zip(found, vectors, strict=True)])
        return len(found)

    async def _chain(
        self, tenant: str, last: StoredMemory | None, n: int, *, forward: bool = False
    ) -> list[StoredMemory]:
        """Up to ``n`` memories along ``follows`` edges ending at ``last`` (oldest first), or with
        ``forward`` starting at it (the memories that follow it)."""
        if last is None or n <= 0:
            return []
        chain = [last]
        while len(chain) < n:
            edges = await self._repo.edges_touching(tenant, [chain[-1].id], ["follows"])
            ends = sorted(
                e.source if forward else e.target
                for e in edges
                if (e.target if forward else e.source) == chain[-1].id
            )
            nxt = await self._repo.get_many(tenant, ends[:1])
            if not nxt or any(m.id == nxt[0].id for m in chain):
                break
            chain.append(nxt[0])
        return chain if forward else chain[::-1]


def window_text(texts: Sequence[str]) -> str:
    """A context window: the texts (oldest first), one per line."""
    return "\n".join(t for t in texts if t)


def vector_record(memory: StoredMemory, vector: Sequence[float]) -> VectorRecord:
    """The vector-store record of a memory (the metadata ingest writes and search filters on)."""
    return VectorRecord(
        id=memory.id,
        tenant_id=memory.tenant_id,
        vector=tuple(vector),
        metadata={
            "user_id": memory.user_id,
            "conversation_id": memory.conversation_id,
            "tier": memory.tier.value,
            "at": float(memory.at),
            "topic_id": memory.topic_id or "",
            "role": memory.role,
        },
        text=memory.text,
    )


def _memory_text(turn: TurnInput) -> str:
    return f"{turn.role}: {turn.text}" if turn.role else turn.text
