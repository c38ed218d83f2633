"""The memory use cases' persistence port: memories (with Postgres full-text search), topics,
entities and graph edges. Every method is scoped to one tenant: none reads or writes another's rows.

Node ids in the graph: memories use their own ids; topics and entities are prefixed
(``TOPIC_PREFIX``, ``ENTITY_PREFIX``) so a node's kind can be told from its id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Protocol

import msgspec

from domain.memory.graph import Edge
from domain.memory.ranking import MemoryFilter
from domain.memory.tiers import Tier
from domain.memory.topics import Topic
from domain.memory.vectors import MetadataFilter

__all__ = [
    "ENTITY_PREFIX",
    "TOPIC_PREFIX",
    "HybridHits",
    "HybridSearch",
    "MemoryRepository",
    "MemoryWrites",
    "StoredMemory",
    "node_kind",
]

TOPIC_PREFIX = "topic:"
ENTITY_PREFIX = "entity:"


def node_kind(node_id: str) -> str:
    """``topic``, ``entity`` or ``memory``, from the id's prefix."""
    if node_id.startswith(TOPIC_PREFIX):
        return "topic"
    if node_id.startswith(ENTITY_PREFIX):
        return "entity"
    return "memory"


class StoredMemory(msgspec.Struct, frozen=True):
    """One memory row. ``at`` is when it happened (epoch seconds); ``source_id`` is the caller's
    id for the turn it came from (e.g. a message id), when there is one. ``vector`` is its
    embedding when the repository can read it with the row (``get_many``; else ``None``): search
    uses it for MMR's cosine similarity."""

    id: str
    tenant_id: str
    user_id: str
    conversation_id: str
    tier: Tier
    text: str
    at: float
    role: str = ""
    importance: float = 0.5
    topic_id: str | None = None
    entities: tuple[str, ...] = ()
    source_id: str | None = None
    vector: tuple[float, ...] | None = None


class MemoryRepository(Protocol):
    async def add(self, tenant_id: str, memories: Sequence[StoredMemory]) -> None:
        """Insert, or replace memories with the same id."""
        ...

    async def get_many(self, tenant_id: str, ids: Iterable[str]) -> list[StoredMemory]:
        """The memories among ``ids`` (unknown ids are skipped), in no particular order."""
        ...

    async def with_neighbours(
        self, tenant_id: str, ids: Iterable[str], hops: int = 1
    ) -> tuple[list[StoredMemory], list[Edge]]:
        """The memories among ``ids`` and those within ``hops`` ``follows`` edges of them (unknown
        ids skipped), and those ``follows`` edges."""
        ...

    async def count(self, tenant_id: str, user_id: str) -> int:
        """How many memories the user has (exact, every tier): one small read."""
        ...

    async def latest(self, tenant_id: str, conversation_id: str) -> StoredMemory | None:
        """The conversation's most recent memory (by ``at``, then id)."""
        ...

    async def fulltext(
        self, tenant_id: str, user_id: str, query: str, k: int, filters: MemoryFilter | None = None
    ) -> list[str]:
        """Ids of at most ``k`` of the user's memories matching any word of ``query`` (Postgres
        full-text search), best first, restricted by ``filters``."""
        ...

    async def set_windows(self, tenant_id: str, windows: Mapping[str, str]) -> None:
        """Full-text index each memory (id -> text) by its context window (the memory with its
        neighbours) instead of its own text; an empty text reverts to its own text."""
        ...

    async def topics(self, tenant_id: str, user_id: str) -> list[Topic]:
        """The user's topics in creation order (``member_ids`` are not loaded)."""
        ...

    async def save_topics(
        self, tenant_id: str, user_id: str, topics: Sequence[Topic], labels: Mapping[str, str]
    ) -> None:
        """Insert or replace these topics (centroid, size, label)."""
        ...

    async def add_entities(self, tenant_id: str, entities: Mapping[str, str]) -> None:
        """Entity node id -> label; existing ones are kept."""
        ...

    async def add_edges(self, tenant_id: str, edges: Sequence[Edge]) -> None:
        """Add edges; one already present (same source, target, kind) is kept."""
        ...

    async def edges_touching(self, tenant_id: str, node_ids: Iterable[str], kinds: Iterable[str]) -> list[Edge]:
        """Edges of ``kinds`` with either end in ``node_ids``."""
        ...


class HybridHits(msgspec.Struct, frozen=True):
    """What one hybrid read returns: the full-text and vector hit lists (ids, best first), the rows
    of the hits and of their ``follows`` neighbours (one hop), and those ``follows`` edges."""

    fulltext_ids: list[str]
    vector_ids: list[str]
    memories: list[StoredMemory]
    follows: list[Edge]


class HybridSearch(Protocol):
    """Both retrievers and the hits' neighbours in one read, where the store holds the memories
    and their vectors side by side (Postgres + pgvector): what ``MemoryRepository.fulltext``,
    ``VectorStore.query`` (with ``where``, the vector filter of ``SearchMemory``) and
    ``MemoryRepository.with_neighbours(..., hops=1)`` would return together."""

    async def hybrid(
        self,
        tenant_id: str,
        user_id: str,
        query: str,
        vector: Sequence[float] | Awaitable[Sequence[float]],
        k: int,
        filters: MemoryFilter | None,
        where: MetadataFilter,
    ) -> HybridHits:
        """``vector`` may be an awaitable (the query still being embedded): the store gets ready
        meanwhile."""
        ...


class MemoryWrites(Protocol):
    """What a watch of the store's writes tells (``SearchMemory`` is one): an adapter that sees
    every committed write of memories, whichever process made it, calls ``watching(True)`` once it
    sees them all, ``written`` for each user with new memories, ``written_somewhere`` for writes it
    cannot attribute, and ``watching(False)`` as soon as it may have missed one."""

    def watching(self, up: bool) -> None: ...

    def written(self, tenant: str, user: str) -> None: ...

    def written_somewhere(self) -> None: ...
