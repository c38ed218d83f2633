"""In-memory fakes of the memory ports: ``FakeMemoryRepository`` (full-text = shared content
words, ranked by how many) and ``FakeVectorStore`` (exact cosine, ``MetadataFilter.matches``).
Both keep each tenant's data apart, like the real adapters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from application.memory.ports import StoredMemory
from domain.errors import InvalidRequest
from domain.memory.graph import Edge
from domain.memory.ranking import MemoryCandidate, MemoryFilter
from domain.memory.topics import Topic, tokenize
from domain.memory.vectors import (
    MetadataFilter,
    QueryHit,
    VectorRecord,
    cosine_similarity,
)

__all__ = ["FakeMemoryRepository", "FakeVectorStore"]


class FakeMemoryRepository:
    def __init__(self) -> None:
        self.memories: dict[tuple[str, str], StoredMemory] = {}
        self.topic_rows: dict[tuple[str, str], tuple[str, Topic, str]] = {}  # (tenant, id) -> (user, topic, label)
        self.entities: dict[tuple[str, str], str] = {}
        self.edges: dict[tuple[str, str, str, str], Edge] = {}
        self.windows: dict[tuple[str, str], str] = {}  # (tenant, id) -> context window text

    async def add(self, tenant_id: str, memories: Sequence[StoredMemory]) -> None:
        for m in memories:
            if m.tenant_id != tenant_id:
                raise ValueError("every memory must belong to tenant_id")
            self.memories[(tenant_id, m.id)] = m

    async def get_many(self, tenant_id: str, ids: Iterable[str]) -> list[StoredMemory]:
        return [self.memories[(tenant_id, i)] for i in set(ids) if (tenant_id, i) in self.memories]

    async def with_neighbours(
        self, tenant_id: str, ids: Iterable[str], hops: int = 1
    ) -> tuple[list[StoredMemory], list[Edge]]:
        wanted, frontier, found = set(ids), set(ids), []
        for _ in range(hops):
            edges = await self.edges_touching(tenant_id, frontier, ["follows"])
            found += [e for e in edges if e not in found]
            frontier = {end for e in edges for end in (e.source, e.target)} - wanted
            wanted |= frontier
        return await self.get_many(tenant_id, wanted), found

    async def count(self, tenant_id: str, user_id: str) -> int:
        return sum(1 for (t, _), m in self.memories.items() if t == tenant_id and m.user_id == user_id)

    async def latest(self, tenant_id: str, conversation_id: str) -> StoredMemory | None:
        mine = [m for (t, _), m in self.memories.items() if t == tenant_id and m.conversation_id == conversation_id]
        return max(mine, key=lambda m: (m.at, m.id), default=None)

    async def fulltext(
        self, tenant_id: str, user_id: str, query: str, k: int, filters: MemoryFilter | None = None
    ) -> list[str]:
        words = set(tokenize(query))
        scored = []
        for (t, _), m in self.memories.items():
            candidate = MemoryCandidate(m.id, m.text, m.tier, m.at, m.importance, (m.topic_id,) if m.topic_id else (), m.entities)
            if t != tenant_id or m.user_id != user_id or (filters is not None and not filters.matches(candidate)):
                continue
            overlap = len(words & set(tokenize(self.windows.get((t, m.id)) or m.text)))
            if overlap:
                scored.append((-overlap, m.id))
        return [mid for _, mid in sorted(scored)[:k]]

    async def set_windows(self, tenant_id: str, windows: Mapping[str, str]) -> None:
        for mid, text in windows.items():
            if (tenant_id, mid) in self.memories:
                self.windows[(tenant_id, mid)] = text

    async def topics(self, tenant_id: str, user_id: str) -> list[Topic]:
        return [topic for (t, _), (u, topic, _) in self.topic_rows.items() if t == tenant_id and u == user_id]

    async def save_topics(self, tenant_id: str, user_id: str, topics: Sequence[Topic], labels: Mapping[str, str]) -> None:
        for topic in topics:
            self.topic_rows[(tenant_id, topic.id)] = (user_id, Topic(topic.id, topic.centroid, topic.size), labels.get(topic.id, ""))

    async def add_entities(self, tenant_id: str, entities: Mapping[str, str]) -> None:
        for eid, label in entities.items():
            self.entities.setdefault((tenant_id, eid), label)

    async def add_edges(self, tenant_id: str, edges: Sequence[Edge]) -> None:
        for e in edges:
            self.edges.setdefault((tenant_id, e.source, e.target, e.kind), e)

    async def edges_touching(self, tenant_id: str, node_ids: Iterable[str], kinds: Iterable[str]) -> list[Edge]:
        ids, wanted = set(node_ids), set(kinds)
        return [
            e for (t, *_), e in sorted(self.edges.items())
            if t == tenant_id and e.kind in wanted and (e.source in ids or e.target in ids)
        ]


class FakeVectorStore:
    def __init__(self, dimension: int = 384) -> None:
        self._dimension = dimension
        self.records: dict[tuple[str, str], VectorRecord] = {}

    @property
    def dimension(self) -> int:
        return self._dimension

    async def upsert(self, tenant_id: str, records: Sequence[VectorRecord]) -> None:
        for r in records:
            if r.tenant_id != tenant_id:
                raise InvalidRequest.single("tenant_id", "record of another tenant")
            self.records[(tenant_id, r.id)] = r

    async def delete(self, tenant_id: str, ids: Sequence[str]) -> None:
        for i in ids:
            self.records.pop((tenant_id, i), None)

    async def query(
        self, tenant_id: str, vector: Sequence[float], k: int, filter: MetadataFilter | None = None
    ) -> list[QueryHit]:
        hits = [
            QueryHit(r.id, cosine_similarity(vector, r.vector), dict(r.metadata), r.text)
            for (t, _), r in self.records.items()
            if t == tenant_id and (filter is None or filter.matches(r.metadata))
        ]
        return sorted(hits, key=lambda h: (-h.score, h.id))[:k]
