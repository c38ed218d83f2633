"""``SearchMemory``: hybrid retrieval of a user's memories, ranked, diversified and packed.

1. Postgres full-text (``MemoryRepository.fulltext``: any query word, ``ts_rank``) and a vector
   query (``VectorStore.query``, tenant-scoped, filtered by user and by the filters the store can
   express: tiers, time range, topics), each ``candidates`` deep.
2. The lists are fused by the domain's reciprocal-rank fusion; around the best ``seeds`` fused
   hits the graph is read ``depth`` hops over ``weights.edge_kinds`` (default ``follows``: the
   turns around a hit) and the memories found there join the candidates.
3. ``domain.memory.ranking.rank`` scores them (RRF + graph + recency + importance, MMR), and
   ``domain.memory.packing.pack`` keeps the best ``k`` that fit ``token_budget``.

Every result carries the domain's ``ScoreExplanation``. Entity filters are applied after retrieval
(memories name several entities; the vector store's metadata holds scalars only).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import msgspec

from application.memory.ports import MemoryRepository, StoredMemory, node_kind
from application.ports import Embedder, VectorStore
from domain.errors import InvalidRequest
from domain.memory.graph import Edge, MemoryGraph, Node
from domain.memory.packing import pack
from domain.memory.ranking import (
    MemoryCandidate,
    MemoryFilter,
    RankingWeights,
    ScoreExplanation,
    rank,
    reciprocal_rank_fusion,
)
from domain.memory.tiers import Tier
from domain.memory.vectors import (
    MAX_K,
    Condition,
    Eq,
    In,
    MetadataFilter,
    Range,
    validate_tenant,
)
from domain.ports import Clock

__all__ = [
    "DEFAULT_WEIGHTS",
    "SearchMemory",
    "SearchResponse",
    "SearchResult",
    "approximate_tokens",
    "vector_filter",
]

DEFAULT_WEIGHTS = RankingWeights(edge_kinds=frozenset({"follows"}), depth=1, seeds=5, graph=0.3)


def approximate_tokens(text: str) -> int:
    """Whitespace approximation of BPE tokens: 4 tokens per 3 words (English averages ~1.3)."""
    return math.ceil(len(text.split()) * 4 / 3)


class SearchResult(msgspec.Struct, frozen=True):
    id: str
    text: str
    tier: Tier
    at: float
    conversation_id: str
    source_id: str | None
    score: float
    explanation: ScoreExplanation
    tokens: int


class SearchResponse(msgspec.Struct, frozen=True):
    results: tuple[SearchResult, ...]
    tokens_used: int
    skipped_ids: tuple[str, ...]  # ranked but over the budget or beyond k


def vector_filter(user: str, filters: MemoryFilter | None) -> MetadataFilter:
    """The metadata filter the vector store applies: the user, plus tiers, time range and topics."""
    conditions: list[Condition] = [Eq("user_id", user)]
    if filters is not None:
        if filters.tiers is not None:
            conditions.append(In("tier", tuple(sorted(t.value for t in filters.tiers))))
        if filters.start is not None or filters.end is not None:
            conditions.append(Range("at", gte=filters.start, lt=filters.end))
        if filters.topics is not None:
            conditions.append(In("topic_id", tuple(sorted(filters.topics))))
    return MetadataFilter(tuple(conditions))


def _candidate(memory: StoredMemory) -> MemoryCandidate:
    return MemoryCandidate(
        id=memory.id,
        text=memory.text,
        tier=memory.tier,
        at=memory.at,
        importance=memory.importance,
        topic_ids=(memory.topic_id,) if memory.topic_id else (),
        entities=memory.entities,
        vector=memory.vector,
    )


class SearchMemory:
    def __init__(
        self,
        repository: MemoryRepository,
        vectors: VectorStore,
        embedder: Embedder,
        clock: Clock,
        *,
        weights: RankingWeights = DEFAULT_WEIGHTS,
        candidates: int = 50,
        count_tokens: Callable[[str], int] = approximate_tokens,
        overhead: int = 4,
    ) -> None:
        self._repo = repository
        self._vectors = vectors
        self._embedder = embedder
        self._clock = clock
        self._weights = weights
        self._candidates = candidates
        self._count_tokens = count_tokens
        self._overhead = overhead

    async def __call__(
        self,
        tenant: str,
        user: str,
        query: str,
        k: int = 10,
        filters: MemoryFilter | None = None,
        token_budget: int = 2000,
    ) -> SearchResponse:
        validate_tenant(tenant)
        if not user:
            raise InvalidRequest.single("user", "must be non-empty")
        if not 1 <= k <= MAX_K:
            raise InvalidRequest.single("k", f"must be between 1 and {MAX_K}")
        if not query.strip():
            return SearchResponse((), 0, ())
        depth = min(MAX_K, max(self._candidates, k))
        (vector,) = await self._embedder.embed([query])
        fulltext_ids = await self._repo.fulltext(tenant, user, query, depth, filters)
        hits = await self._vectors.query(tenant, vector, depth, vector_filter(user, filters))
        vector_ids = [h.id for h in hits]
        memories = {m.id: m for m in await self._repo.get_many(tenant, {*fulltext_ids, *vector_ids})}
        graph = await self._graph(tenant, memories, fulltext_ids, vector_ids)
        candidates = {mid: _candidate(m) for mid, m in memories.items() if m.user_id == user}
        ranked = rank(
            candidates,
            fulltext_ids,
            vector_ids,
            self._clock.now().timestamp(),
            graph=graph,
            weights=self._weights,
            filters=filters,
            limit=k,
        )
        packed = pack(ranked, token_budget, self._count_tokens, overhead=self._overhead, max_items=k)
        results = tuple(
            SearchResult(
                id=r.id,
                text=r.memory.text,
                tier=r.memory.tier,
                at=r.memory.at,
                conversation_id=memories[r.id].conversation_id,
                source_id=memories[r.id].source_id,
                score=r.score,
                explanation=r.explanation,
                tokens=self._count_tokens(r.memory.text),
            )
            for r in packed.selected
        )
        return SearchResponse(results, packed.tokens_used, packed.skipped_ids)

    async def _graph(
        self,
        tenant: str,
        memories: dict[str, StoredMemory],
        fulltext_ids: list[str],
        vector_ids: list[str],
    ) -> MemoryGraph | None:
        """The graph around the best fused hits (``weights.depth`` hops); adds the memories it
        reaches to ``memories``."""
        w = self._weights
        if w.seeds == 0 or w.depth == 0 or w.graph == 0:
            return None
        fused = reciprocal_rank_fusion(
            ([i for i in fulltext_ids if i in memories], [i for i in vector_ids if i in memories]), w.rrf_k
        )
        # A few more seeds than ranking will use: ranking's own filters may drop some.
        frontier = set(sorted(fused, key=lambda mid: (-fused[mid], mid))[: 2 * w.seeds])
        kinds = sorted(w.edge_kinds) if w.edge_kinds is not None else None
        edges: dict[tuple[str, str, str], Edge] = {}
        seen = set(frontier)
        for _ in range(w.depth):
            if not frontier:
                break
            found = await self._repo.edges_touching(
                tenant, frontier, kinds or ["mentions", "about", "follows", "derived_from", "supersedes"]
            )
            frontier = set()
            for edge in found:
                edges[(edge.source, edge.target, edge.kind)] = edge
                for end in (edge.source, edge.target):
                    if end not in seen:
                        seen.add(end)
                        frontier.add(end)
        missing = [n for n in seen if node_kind(n) == "memory" and n not in memories]
        for memory in await self._repo.get_many(tenant, missing):
            memories[memory.id] = memory
        nodes = [Node(n, node_kind(n)) for n in seen | set(memories)]  # type: ignore[arg-type]
        return MemoryGraph(nodes, edges.values())
