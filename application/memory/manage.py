"""The MemoryService use cases besides search: add, get, update, delete, list topics, the graph
neighbourhood of a memory, and export (keyset pages).

Every call is scoped to one tenant and one user (``scope_for`` turns the caller's principal into
that scope: a user acts on their own memories; an admin may name another user of the same tenant;
no call ever names a tenant). A memory of another user or tenant is reported as not found, exactly
like one that does not exist.

Writes go to the ``MemoryAdminStore`` (rows, edges) and the ``VectorStore`` (embeddings) the
ingest and search use cases share, so what is added, changed or deleted here is what search finds.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import msgspec
import msgspec.structs

from application.memory.ingest import (
    IngestTurns,
    TurnInput,
    extract_entities,
    vector_record,
)
from application.memory.ports import (
    ENTITY_PREFIX,
    TOPIC_PREFIX,
    MemoryRepository,
    StoredMemory,
    node_kind,
)
from application.memory.search import SearchMemory, SearchResponse
from application.ports import UnitOfWorkFactory, VectorStore
from domain.errors import FieldViolation, InvalidRequest, NotFound
from domain.events import MemoryIngested
from domain.identity import Principal, Role
from domain.memory.graph import EDGE_KINDS, Edge, MemoryGraph, Node
from domain.memory.ranking import MemoryFilter
from domain.memory.tiers import Tier
from domain.memory.vectors import validate_ids, validate_tenant
from domain.ports import Clock, IdGenerator

__all__ = [
    "MAX_DEPTH",
    "MAX_PAGE",
    "MAX_TEXT",
    "AddMemory",
    "DeleteMemory",
    "ExportMemories",
    "ExportPage",
    "GetMemory",
    "GraphNode",
    "ListTopics",
    "MemoryAdminStore",
    "MemoryNeighbourhood",
    "MemoryUseCases",
    "MemoryView",
    "Neighbourhood",
    "SearchMemories",
    "TopicView",
    "UpdateMemory",
    "memory_filter",
    "scope_for",
    "vector_record",
]

MAX_TEXT = 16_000
MAX_PAGE = 500
MAX_DEPTH = 3
MAX_NODES = 200
MemoryKind = Literal["turn", "summary", "fact", "note"]
Reindex = Callable[[str, Sequence[str]], Awaitable[int]]
"""``IngestTurns.reindex``: rebuild the context windows (vector and full-text) of memories."""


class MemoryView(msgspec.Struct, frozen=True):
    """One memory as the API shows it: the row plus, for a semantic fact, its triple and the end
    of its validity (``valid_to``; ``None`` while it is current)."""

    memory: StoredMemory
    subject: str | None = None
    predicate: str | None = None
    object: str | None = None
    valid_to: float | None = None

    @property
    def kind(self) -> MemoryKind:
        if self.subject is not None:
            return "fact"
        if self.memory.role == "summary":
            return "summary"
        return "note" if self.memory.tier is Tier.SEMANTIC else "turn"


class TopicView(msgspec.Struct, frozen=True):
    id: str
    label: str
    size: int


class GraphNode(msgspec.Struct, frozen=True):
    id: str
    kind: str  # "memory", "topic" or "entity"
    label: str
    hops: int
    memory: MemoryView | None = None


class Neighbourhood(msgspec.Struct, frozen=True):
    center: str
    nodes: tuple[GraphNode, ...]
    edges: tuple[Edge, ...]
    truncated: bool = False  # more than MAX_NODES nodes were in reach


class ExportPage(msgspec.Struct, frozen=True):
    memories: tuple[MemoryView, ...]
    next_cursor: str  # "" on the last page


class MemoryAdminStore(MemoryRepository, Protocol):
    """What the management use cases need beyond ``MemoryRepository``; every method is scoped to
    one tenant."""

    async def views(self, tenant_id: str, ids: Iterable[str]) -> list[MemoryView]:
        """The memories among ``ids`` with their fact columns (unknown ids skipped)."""
        ...

    async def page(
        self, tenant_id: str, user_id: str, after: tuple[float, str] | None, limit: int, filters: MemoryFilter | None
    ) -> list[MemoryView]:
        """The user's memories ordered by (``at``, id), strictly after ``after``, at most ``limit``."""
        ...

    async def topic_views(self, tenant_id: str, user_id: str) -> list[TopicView]:
        """The user's topics in creation order."""
        ...

    async def update(
        self,
        tenant_id: str,
        memory_id: str,
        *,
        text: str | None = None,
        importance: float | None = None,
        tier: Tier | None = None,
        entities: tuple[str, ...] | None = None,
        at: float | None = None,
    ) -> None:
        """Change the given columns (``importance`` also restarts its decay clock at ``at``)."""
        ...

    async def replace_mentions(self, tenant_id: str, memory_id: str, entities: dict[str, str]) -> None:
        """Make the memory's ``mentions`` edges point at exactly these entity nodes (id -> label)."""
        ...

    async def delete(self, tenant_id: str, ids: Sequence[str]) -> list[str]:
        """Delete memories with their edges and observations. A deleted turn leaves its
        conversation's ``follows`` chain joined around it; returns the ids of the memories that
        were next to it (their context windows need re-indexing)."""
        ...


def scope_for(principal: Principal, user_id: str = "") -> tuple[str, str]:
    """(tenant, user) a call acts on: the caller's own memories, or — for an admin — those of
    ``user_id`` in the caller's tenant. Never another tenant's."""
    if not user_id or user_id == principal.user_id:
        return principal.tenant_id, principal.user_id
    if len(user_id) > 256 or not user_id.isprintable():
        raise InvalidRequest.single("user_id", "at most 256 printable characters")
    principal.require(Role.ADMIN, "act on another user's memories")
    return principal.tenant_id, user_id


def _check_text(text: str, field: str = "text") -> str:
    if not text.strip():
        raise InvalidRequest.single(field, "must not be empty")
    if len(text) > MAX_TEXT:
        raise InvalidRequest.single(field, f"at most {MAX_TEXT} characters")
    return text


def _check_importance(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise InvalidRequest.single("importance", "must be in [0, 1]")
    return value


def _check_id(memory_id: str) -> str:
    validate_ids([memory_id], "id")
    if node_kind(memory_id) != "memory":
        raise InvalidRequest.single("id", f"a memory id never starts with {TOPIC_PREFIX!r} or {ENTITY_PREFIX!r}")
    return memory_id


def _check_scope(tenant: str, user: str) -> None:
    validate_tenant(tenant)
    if not user:
        raise InvalidRequest.single("user_id", "must be non-empty")


async def _own(store: MemoryAdminStore, tenant: str, user: str, memory_id: str) -> MemoryView:
    _check_scope(tenant, user)
    _check_id(memory_id)
    found = await store.views(tenant, [memory_id])
    if not found or found[0].memory.user_id != user:
        raise NotFound("memory", memory_id)
    return found[0]


class AddMemory:
    """Store one memory through ``IngestTurns`` (embedding, topic, entities, ``follows``); a
    ``semantic`` one is then moved to that tier. Records ``MemoryIngested`` (outbox) when given a
    unit of work, so the worker consolidates it."""

    def __init__(
        self,
        ingest: IngestTurns,
        store: MemoryAdminStore,
        clock: Clock,
        ids: IdGenerator,
        uow: UnitOfWorkFactory | None = None,
    ) -> None:
        self._ingest = ingest
        self._store = store
        self._clock = clock
        self._ids = ids
        self._uow = uow

    async def __call__(
        self,
        tenant: str,
        user: str,
        text: str,
        *,
        conversation_id: str = "",
        role: str = "",
        at: float | None = None,
        importance: float = 0.5,
        tier: Tier = Tier.EPISODIC,
        source_id: str | None = None,
    ) -> MemoryView:
        _check_scope(tenant, user)
        problems: list[FieldViolation] = []
        for check in (lambda: _check_text(text), lambda: _check_importance(importance)):
            try:
                check()
            except InvalidRequest as exc:
                problems += exc.violations
        if tier is Tier.WORKING:
            problems.append(FieldViolation("tier", "working memory is the live conversation; store episodic or semantic"))
        if len(role) > 64 or role == "summary":
            problems.append(FieldViolation("role", "at most 64 characters, not 'summary'"))
        if len(conversation_id) > 256 or (source_id is not None and len(source_id) > 256):
            problems.append(FieldViolation("conversation_id", "ids are at most 256 characters"))
        if at is not None and not (0 <= at < 1e11):
            problems.append(FieldViolation("at", "seconds since the epoch"))
        if problems:
            raise InvalidRequest(problems)
        now = self._clock.now().timestamp()
        conversation = conversation_id or "notes"
        turn = TurnInput(role=role, text=text, at=now if at is None else at, source_id=source_id, importance=importance)
        (memory,) = await self._ingest(tenant, user, conversation, [turn])
        if tier is Tier.SEMANTIC:
            memory = msgspec.structs.replace(memory, tier=Tier.SEMANTIC)
            await self._store.update(tenant, memory.id, tier=Tier.SEMANTIC)
            await self._ingest.reindex(tenant, [memory.id])  # the vector's metadata says "semantic" now
        if self._uow is not None:
            async with self._uow() as uow:
                uow.record(
                    MemoryIngested(
                        event_id=self._ids.new_id(),
                        tenant_id=tenant,
                        occurred_at=self._clock.now(),
                        user_id=user,
                        conversation_id=conversation,
                        memory_count=1,
                    )
                )
                await uow.commit()
        return MemoryView(memory)


class GetMemory:
    def __init__(self, store: MemoryAdminStore) -> None:
        self._store = store

    async def __call__(self, tenant: str, user: str, memory_id: str) -> MemoryView:
        return await _own(self._store, tenant, user, memory_id)


class UpdateMemory:
    """Change a memory's text (entities and ``mentions`` edges re-extracted; it and the memories
    next to it re-indexed: their context windows hold its text) and/or importance. Its id, time,
    conversation and topic stay."""

    def __init__(self, store: MemoryAdminStore, reindex: Reindex, clock: Clock) -> None:
        self._store = store
        self._reindex = reindex
        self._clock = clock

    async def __call__(
        self, tenant: str, user: str, memory_id: str, *, text: str | None = None, importance: float | None = None
    ) -> MemoryView:
        if text is None and importance is None:
            raise InvalidRequest.single("update", "name at least one of text, importance")
        if text is not None:
            _check_text(text)
        if importance is not None:
            _check_importance(importance)
        view = await _own(self._store, tenant, user, memory_id)
        memory = view.memory
        now = self._clock.now().timestamp()
        if text is not None:
            role = memory.role
            new_text = f"{role}: {text}" if role and role != "summary" and not text.startswith(f"{role}: ") else text
            entities = extract_entities(text, role if role not in ("", "summary") else "")
            await self._store.update(tenant, memory_id, text=new_text, entities=entities, importance=importance, at=now)
            await self._store.replace_mentions(tenant, memory_id, {ENTITY_PREFIX + e: e for e in entities})
            memory = msgspec.structs.replace(memory, text=new_text, entities=entities)
            around = await self._store.edges_touching(tenant, [memory_id], ["follows"])
            await self._reindex(tenant, sorted({memory_id, *(e.source for e in around), *(e.target for e in around)}))
        else:
            await self._store.update(tenant, memory_id, importance=importance, at=now)
        if importance is not None:
            memory = msgspec.structs.replace(memory, importance=importance)
        return msgspec.structs.replace(view, memory=memory)


class DeleteMemory:
    """Forget a memory: its row, edges, observations and vector (a hard delete; facts derived
    from it stay, with their other provenance). The memories that were next to it are re-indexed
    (their context windows held its text)."""

    def __init__(self, store: MemoryAdminStore, vectors: VectorStore, reindex: Reindex) -> None:
        self._store = store
        self._vectors = vectors
        self._reindex = reindex

    async def __call__(self, tenant: str, user: str, memory_id: str) -> None:
        await _own(self._store, tenant, user, memory_id)
        await self._vectors.delete(tenant, [memory_id])
        neighbours = await self._store.delete(tenant, [memory_id])
        if neighbours:
            await self._reindex(tenant, neighbours)


class ListTopics:
    def __init__(self, store: MemoryAdminStore) -> None:
        self._store = store

    async def __call__(self, tenant: str, user: str) -> list[TopicView]:
        _check_scope(tenant, user)
        return await self._store.topic_views(tenant, user)


class MemoryNeighbourhood:
    """The graph within ``depth`` hops of one of the user's memories, over ``kinds`` edges (all by
    default). Memory nodes of other users (reachable through a shared entity node) are left out
    and not expanded; at most ``MAX_NODES`` nodes (``truncated`` says when more were in reach)."""

    def __init__(self, store: MemoryAdminStore) -> None:
        self._store = store

    async def __call__(
        self, tenant: str, user: str, memory_id: str, depth: int = 1, kinds: Sequence[str] = ()
    ) -> Neighbourhood:
        if not 1 <= depth <= MAX_DEPTH:
            raise InvalidRequest.single("depth", f"must be between 1 and {MAX_DEPTH}")
        if unknown := sorted(set(kinds) - EDGE_KINDS):
            raise InvalidRequest.single("kinds", f"unknown edge kinds {unknown}; known: {sorted(EDGE_KINDS)}")
        center = await _own(self._store, tenant, user, memory_id)
        wanted = sorted(set(kinds) or EDGE_KINDS)
        views: dict[str, MemoryView] = {memory_id: center}
        hops: dict[str, int] = {memory_id: 0}
        edges: dict[tuple[str, str, str], Edge] = {}
        frontier = {memory_id}
        truncated = False
        for distance in range(1, depth + 1):
            found = await self._store.edges_touching(tenant, frontier, wanted)
            new_ids = {end for e in found for end in (e.source, e.target) if end not in hops}
            memories = [n for n in new_ids if node_kind(n) == "memory"]
            for view in await self._store.views(tenant, memories):
                if view.memory.user_id == user:
                    views[view.memory.id] = view
            allowed = {n for n in new_ids if node_kind(n) != "memory" or n in views}
            if len(hops) + len(allowed) > MAX_NODES:
                truncated = True
                allowed = set(sorted(allowed)[: max(0, MAX_NODES - len(hops))])
            for node in allowed:
                hops[node] = distance
            for e in found:
                if e.source in hops and e.target in hops:
                    edges[(e.source, e.target, e.kind)] = e
            frontier = allowed
            if not frontier:
                break
        labels = {t.id: t.label for t in await self._store.topic_views(tenant, user)}
        graph = MemoryGraph(
            [Node(n, node_kind(n)) for n in hops],  # type: ignore[arg-type]
            edges.values(),
        )
        nodes = tuple(
            GraphNode(
                id=n,
                kind=node_kind(n),
                label=_label(n, labels, views),
                hops=h,
                memory=views.get(n),
            )
            for n, h in sorted(hops.items(), key=lambda item: (item[1], item[0]))
        )
        return Neighbourhood(memory_id, nodes, graph.edges, truncated)


def _label(node_id: str, topic_labels: dict[str, str], views: dict[str, MemoryView]) -> str:
    match node_kind(node_id):
        case "topic":
            return topic_labels.get(node_id, "")
        case "entity":
            return node_id.removeprefix(ENTITY_PREFIX)
    view = views.get(node_id)
    return "" if view is None else view.memory.text[:80]


def encode_cursor(at: float, memory_id: str) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([at, memory_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        at, memory_id = msgspec.json.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(memory_id, str) or isinstance(at, bool) or not isinstance(at, int | float):
            raise ValueError
        return float(at), memory_id
    except (ValueError, TypeError, binascii.Error, msgspec.DecodeError):
        raise InvalidRequest.single("cursor", "not a cursor this service returned") from None


class ExportMemories:
    """The user's memories in time order, one keyset page at a time (``cursor`` from the previous
    page; "" for the first)."""

    def __init__(self, store: MemoryAdminStore) -> None:
        self._store = store

    async def __call__(
        self, tenant: str, user: str, cursor: str = "", limit: int = 100, filters: MemoryFilter | None = None
    ) -> ExportPage:
        _check_scope(tenant, user)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest.single("page_size", f"must be between 1 and {MAX_PAGE}")
        after = decode_cursor(cursor) if cursor else None
        rows = await self._store.page(tenant, user, after, limit + 1, filters)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].memory.at, rows[-1].memory.id) if more and rows else ""
        return ExportPage(tuple(rows), next_cursor)


MAX_TOKEN_BUDGET = 100_000
MAX_FILTER_VALUES = 100


def memory_filter(
    *,
    topics: Sequence[str] = (),
    entities: Sequence[str] = (),
    tiers: Sequence[Tier] = (),
    start: float | None = None,
    end: float | None = None,
) -> MemoryFilter | None:
    """A ``MemoryFilter`` from request fields (empty lists mean "any"); None when nothing is set.
    Entities compare lower-cased (as ingest stores them)."""
    problems: list[FieldViolation] = []
    for field, values in (("filter.topic_ids", topics), ("filter.entities", entities)):
        if len(values) > MAX_FILTER_VALUES or any(not v or len(v) > 256 for v in values):
            problems.append(FieldViolation(field, f"at most {MAX_FILTER_VALUES} non-empty values of 256 characters"))
    if start is not None and end is not None and start >= end:
        problems.append(FieldViolation("filter.end", "must be after filter.start"))
    if problems:
        raise InvalidRequest(problems)
    if not (topics or entities or tiers) and start is None and end is None:
        return None
    return MemoryFilter(
        topics=frozenset(topics) or None,
        entities=frozenset(" ".join(e.casefold().split()) for e in entities) or None,
        tiers=frozenset(tiers) or None,
        start=start,
        end=end,
    )


class SearchMemories:
    """``SearchMemory`` for the API: checks the request and returns each hit's full view too."""

    def __init__(self, search: SearchMemory, store: MemoryAdminStore) -> None:
        self._search = search
        self._store = store

    async def __call__(
        self,
        tenant: str,
        user: str,
        query: str,
        *,
        limit: int = 10,
        token_budget: int = 2000,
        filters: MemoryFilter | None = None,
    ) -> tuple[SearchResponse, dict[str, MemoryView]]:
        _check_scope(tenant, user)
        problems: list[FieldViolation] = []
        if not query.strip():
            problems.append(FieldViolation("query", "must not be empty"))
        elif len(query) > MAX_TEXT:
            problems.append(FieldViolation("query", f"at most {MAX_TEXT} characters"))
        if not 1 <= token_budget <= MAX_TOKEN_BUDGET:
            problems.append(FieldViolation("token_budget", f"must be between 1 and {MAX_TOKEN_BUDGET}"))
        if not 1 <= limit <= 1000:
            problems.append(FieldViolation("limit", "must be between 1 and 1000"))
        if problems:
            raise InvalidRequest(problems)
        response = await self._search(tenant, user, query, limit, filters, token_budget)
        views = {v.memory.id: v for v in await self._store.views(tenant, [r.id for r in response.results])}
        return response, views


@dataclass(frozen=True)
class MemoryUseCases:
    """The MemoryService's use cases, as the edges call them."""

    add: AddMemory
    search: SearchMemories
    get: GetMemory
    update: UpdateMemory
    delete: DeleteMemory
    topics: ListTopics
    neighbourhood: MemoryNeighbourhood
    export: ExportMemories
    # the tenant's memory switch (``application.memory.tenant_switch``); None: not served
    tenant_get: Any = None
    tenant_set: Any = None
