"""``SearchMemory``: hybrid retrieval of a user's memories, ranked, diversified and packed.

1. Postgres full-text (``MemoryRepository.fulltext``: any query word, BM25 over each turn's context
   window) and a vector query (``VectorStore.query``, tenant-scoped, filtered by user and by the
   filters the store can express: tiers, time range, topics), each ``candidates`` deep. The
   full-text query runs while the query is being embedded.
2. The lists are fused by the domain's reciprocal-rank fusion; with a graph weight, around the best
   ``seeds`` fused hits the graph is read ``depth`` hops over ``weights.edge_kinds`` and the
   memories found there join the candidates (off by default: context windows already cover the
   turns around a hit, see docs/memory.md).
3. ``domain.memory.ranking.rank`` scores them (RRF + graph + recency + importance, MMR), and
   ``domain.memory.packing.pack_passages`` keeps the best ``k`` hits that fit ``token_budget``, each
   as a passage: the hit with the ``window`` memories before and after it in its conversation
   (``follows`` edges), without repeating a memory an earlier passage shows.

**Cheap paths.** With ``hybrid`` (``HybridSearch``: Postgres holding the memories and their
pgvector vectors side by side) step 1 and the read of the rows are ONE statement after the query is
embedded. At most ``max_concurrent`` searches hold database connections at once (the rest wait,
inside the caller's time box), so a burst of requests does not overflow the connection pool. A
user whose last unfiltered search found nothing is remembered (for ``empty_ttl`` seconds, only to
bound the table) and costs one exact count (``MemoryRepository.count``; concurrent requests of that
user share one) instead of an embedding and a search; the count sees a memory as soon as its
transaction committed, whichever process wrote it.

**Watched writes.** When an adapter watches the store's writes (``watching``: it is told of every
user's new memories, whichever process wrote them, with ``written``), a user found empty while the
watch was up costs nothing at all: no count, no I/O. The mark is trusted only when no write of that
user was reported between the moment the search or count began and its answer, and only while the
watch that was up then is still up; a watch that drops (or reports a write it cannot attribute:
``written_somewhere``) makes every mark go back to the count until a new read confirms it.

Every result carries the domain's ``ScoreExplanation``; ``SearchResult.passage`` is what to show a
model, ``tokens`` what it costs. Entity filters are applied after retrieval (memories name several
entities; the vector store's metadata holds scalars only).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable

import msgspec

from application.memory.ports import (
    HybridSearch,
    MemoryRepository,
    StoredMemory,
    node_kind,
)
from application.ports import Embedder, VectorStore
from domain.errors import InvalidRequest
from domain.memory.graph import Edge, MemoryGraph, Node
from domain.memory.packing import pack_passages
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
    "SearchContext",
    "SearchMemory",
    "SearchResponse",
    "SearchResult",
    "approximate_tokens",
    "vector_filter",
]

DEFAULT_WEIGHTS = RankingWeights(edge_kinds=frozenset({"follows"}), depth=1, seeds=5, graph=0.0)


def approximate_tokens(text: str) -> int:
    """Whitespace approximation of BPE tokens: 4 tokens per 3 words (English averages ~1.3)."""
    return math.ceil(len(text.split()) * 4 / 3)


class SearchContext(msgspec.Struct, frozen=True):
    """A memory shown around a hit (not itself ranked)."""

    id: str
    text: str
    at: float
    source_id: str | None


class SearchResult(msgspec.Struct, frozen=True):
    """A hit. ``text`` is the memory's own text; ``before``/``after`` the memories shown around it
    (oldest first; none already shown by an earlier result); ``passage`` all of them, one per line;
    ``tokens`` is what the passage costs."""

    id: str
    text: str
    tier: Tier
    at: float
    conversation_id: str
    source_id: str | None
    score: float
    explanation: ScoreExplanation
    tokens: int
    before: tuple[SearchContext, ...] = ()
    after: tuple[SearchContext, ...] = ()

    @property
    def passage(self) -> str:
        return "\n".join([*(c.text for c in self.before), self.text, *(c.text for c in self.after)])


class SearchResponse(msgspec.Struct, frozen=True):
    results: tuple[SearchResult, ...]
    tokens_used: int
    skipped_ids: tuple[str, ...]  # ranked but over the budget or beyond k, or shown in an earlier passage


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


def _shown(memory: StoredMemory) -> SearchContext:
    return SearchContext(memory.id, memory.text, memory.at, memory.source_id)


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


class _Empty(msgspec.Struct):
    until: float
    epoch: int | None


class _EmptyUsers:
    """(tenant, user) scopes last seen without memories, each remembered until an expiry
    (monotonic seconds) that only bounds the table's size, with the write watch's epoch under which
    the emptiness was read (``None``: not watched); at most ``max_entries`` (the earliest added are
    dropped first). Being listed here is trusted only as ``SearchMemory`` says."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._max = max_entries
        self._entries: dict[tuple[str, str], _Empty] = {}

    def get(self, scope: tuple[str, str], now: float) -> _Empty | None:
        entry = self._entries.get(scope)
        if entry is None:
            return None
        if now < entry.until:
            return entry
        del self._entries[scope]
        return None

    def add(self, scope: tuple[str, str], until: float, epoch: int | None) -> None:
        self._entries.pop(scope, None)
        while len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]
        self._entries[scope] = _Empty(until, epoch)

    def discard(self, scope: tuple[str, str]) -> None:
        self._entries.pop(scope, None)


class _Mark(msgspec.Struct, frozen=True):
    """Where the write watch stood when a read began: its epoch (``None``: no watch up) and the
    number of writes it had reported."""

    epoch: int | None
    seq: int


class _Writes:
    """What the write watch reported: whether it is up (``epoch``, a new one each time it comes up
    or loses track), and the latest write number of each recently written scope (at most
    ``max_entries``; a scope dropped from the table counts as written after ``floor``)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._max = max_entries
        self.epoch: int | None = None
        self._epochs = 0
        self.seq = 0
        self.floor = 0
        self._latest: dict[tuple[str, str], int] = {}

    def mark(self) -> _Mark:
        return _Mark(self.epoch, self.seq)

    def restart(self, up: bool) -> None:
        self._epochs += 1
        self.epoch = self._epochs if up else None

    def written(self, scope: tuple[str, str]) -> None:
        self.seq += 1
        self._latest.pop(scope, None)
        while len(self._latest) >= self._max:
            self.floor = self._latest.pop(next(iter(self._latest)))
        self._latest[scope] = self.seq

    def trusted_epoch(self, scope: tuple[str, str], mark: _Mark) -> int | None:
        """The epoch under which a read that began at ``mark`` and found ``scope`` empty may be
        trusted without I/O; ``None`` when it may not (no watch, a new one since, or a write of the
        scope reported since)."""
        if mark.epoch is None or mark.epoch != self.epoch or self.floor > mark.seq:
            return None
        return None if self._latest.get(scope, 0) > mark.seq else mark.epoch


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
        window: int = 1,
        empty_ttl: float = 600.0,
        max_concurrent: int = 4,
        hybrid: HybridSearch | None = None,
    ) -> None:
        if window < 0:
            raise InvalidRequest.single("window", "must be >= 0")
        if empty_ttl < 0 or max_concurrent < 1:
            raise InvalidRequest.single("empty_ttl", "empty_ttl must be >= 0 and max_concurrent >= 1")
        self._repo = repository
        self._vectors = vectors
        self._embedder = embedder
        self._clock = clock
        self._weights = weights
        self._candidates = candidates
        self._count_tokens = count_tokens
        self._overhead = overhead
        self._window = window
        self._empty_ttl = empty_ttl
        self._empty = _EmptyUsers()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._hybrid = hybrid if window == 1 else None  # one hop of neighbours: window 1
        self._counting: dict[tuple[str, str], asyncio.Future[tuple[int, _Mark]]] = {}
        self._writes = _Writes()

    # --- the write watch (an adapter calls these; see the module docstring) -------------------

    def watching(self, up: bool) -> None:
        """The write watch came up (``True``: from now on every write is reported) or went down."""
        self._writes.restart(up)

    def written(self, tenant: str, user: str) -> None:
        """``user`` of ``tenant`` has new memories (committed)."""
        scope = (tenant, user)
        self._writes.written(scope)
        self._empty.discard(scope)

    def written_somewhere(self) -> None:
        """Some user has new memories: no mark is trusted until read again."""
        self._writes.restart(self._writes.epoch is not None)

    # --------------------------------------------------------------------------------------------

    async def _count(self, scope: tuple[str, str]) -> tuple[int, _Mark]:
        """``MemoryRepository.count`` and where the write watch stood before it was sent: one query
        for all concurrent callers of one scope."""
        pending = self._counting.get(scope)
        if pending is None:
            pending = asyncio.ensure_future(self._count_now(scope))
            self._counting[scope] = pending
            pending.add_done_callback(lambda _: self._counting.pop(scope, None))
        return await asyncio.shield(pending)

    async def _count_now(self, scope: tuple[str, str]) -> tuple[int, _Mark]:
        mark = self._writes.mark()
        async with self._slots:
            return await self._repo.count(*scope), mark

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
        # A user last seen without memories costs nothing when the write watch vouches for it, else
        # one small exact read (the memory count the database keeps per user; concurrent requests
        # of one user share it), not a search.
        scope = (tenant, user)
        now = self._clock.monotonic()
        writes = self._writes
        if (listed := self._empty.get(scope, now)) is not None:
            if listed.epoch is not None and listed.epoch == writes.epoch:
                return SearchResponse((), 0, ())
            count, mark = await self._count(scope)
            if count == 0:
                listed.epoch = writes.trusted_epoch(scope, mark)
                return SearchResponse((), 0, ())
            self._empty.discard(scope)
        depth = min(MAX_K, max(self._candidates, k))
        mark = writes.mark()
        fulltext_ids, vector_ids, rows, follows = await self._retrieve(tenant, user, query, depth, filters)
        if not fulltext_ids and not vector_ids:
            if filters is None and self._empty_ttl > 0:  # not one vector: the user has no memories
                self._empty.add(scope, now + self._empty_ttl, writes.trusted_epoch(scope, mark))
            return SearchResponse((), 0, ())
        hit_ids = {*fulltext_ids, *vector_ids}
        memories = {m.id: m for m in rows}
        pool = {mid: m for mid, m in memories.items() if mid in hit_ids}
        graph = await self._graph(tenant, pool, fulltext_ids, vector_ids)
        memories |= pool
        candidates = {mid: _candidate(m) for mid, m in pool.items() if m.user_id == user}
        ranked = rank(
            candidates,
            fulltext_ids,
            vector_ids,
            self._clock.now().timestamp(),
            graph=graph,
            weights=self._weights,
            filters=filters,
            limit=min(depth, 2 * k),
        )
        context = self._context(user, [r.id for r in ranked], memories, follows)
        packed = pack_passages(
            ranked, context, token_budget, self._count_tokens, overhead=self._overhead, max_items=k
        )
        results = tuple(
            SearchResult(
                id=p.id,
                text=p.hit.memory.text,
                tier=p.hit.memory.tier,
                at=p.hit.memory.at,
                conversation_id=memories[p.id].conversation_id,
                source_id=memories[p.id].source_id,
                score=p.hit.score,
                explanation=p.hit.explanation,
                tokens=p.tokens,
                before=tuple(_shown(memories[m.id]) for m in p.before),
                after=tuple(_shown(memories[m.id]) for m in p.after),
            )
            for p in packed.selected
        )
        skipped = packed.skipped_ids + packed.merged_ids
        return SearchResponse(results, packed.tokens_used, skipped)

    async def _retrieve(
        self, tenant: str, user: str, query: str, depth: int, filters: MemoryFilter | None
    ) -> tuple[list[str], list[str], list[StoredMemory], list[Edge]]:
        """Both hit lists, and the rows of the hits and of the memories around them with the
        ``follows`` edges between them: in one read with ``hybrid``, else full-text and vector
        queries at once (the full-text one runs while the query is embedded), then one read of
        the rows."""
        if self._hybrid is not None:
            embedding = asyncio.ensure_future(self._embed(query))  # the store gets ready meanwhile
            try:
                async with self._slots:  # at most ``max_concurrent`` searches hold database connections
                    found = await self._hybrid.hybrid(
                        tenant, user, query, embedding, depth, filters, vector_filter(user, filters)
                    )
            finally:
                if not embedding.done():
                    embedding.cancel()
                elif not embedding.cancelled():
                    embedding.exception()  # retrieved: a failure here surfaces through the store's await
            return found.fulltext_ids, found.vector_ids, found.memories, found.follows
        async with self._slots:
            fulltext_ids, vector_ids = await asyncio.gather(
                self._repo.fulltext(tenant, user, query, depth, filters), self._dense(tenant, user, query, depth, filters)
            )
            hit_ids = {*fulltext_ids, *vector_ids}
            if not hit_ids:
                return [], [], [], []
            if self._window:
                rows, follows = await self._repo.with_neighbours(tenant, hit_ids, self._window)
                return fulltext_ids, vector_ids, rows, follows
            return fulltext_ids, vector_ids, await self._repo.get_many(tenant, hit_ids), []

    async def _embed(self, query: str) -> list[float]:
        (vector,) = await self._embedder.embed([query])
        return vector

    async def _dense(self, tenant: str, user: str, query: str, depth: int, filters: MemoryFilter | None) -> list[str]:
        (vector,) = await self._embedder.embed([query])
        return [h.id for h in await self._vectors.query(tenant, vector, depth, vector_filter(user, filters))]

    def _context(
        self, user: str, hit_ids: Iterable[str], memories: dict[str, StoredMemory], follows: Iterable[Edge]
    ) -> dict[str, tuple[list[MemoryCandidate], list[MemoryCandidate]]]:
        """For each hit, up to ``window`` of the user's memories before and after it along
        ``follows`` edges (``a follows b``: b is before a)."""
        before_of: dict[str, str] = {}
        after_of: dict[str, str] = {}
        for e in sorted(follows, key=lambda e: (e.source, e.target)):
            before_of.setdefault(e.source, e.target)
            after_of.setdefault(e.target, e.source)
        out: dict[str, tuple[list[MemoryCandidate], list[MemoryCandidate]]] = {}
        for hit in hit_ids:
            sides: list[list[MemoryCandidate]] = []
            for links in (before_of, after_of):
                side: list[MemoryCandidate] = []
                at = hit
                while len(side) < self._window and (at := links.get(at, "")) in memories and at != hit:
                    if memories[at].user_id != user:
                        break
                    side.append(_candidate(memories[at]))
                sides.append(side)
            out[hit] = (sides[0][::-1], sides[1])
        return out

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
