"""REST mirror of ``MemoryService`` under ``/v1/memory``: JSON bodies as msgspec Structs, errors as
problem+json (the app's exception handlers), the caller from ``api.auth.current_principal``.

    POST   /v1/memory/memories                    add                 (201, a memory)
    GET    /v1/memory/memories                    list / export       (?cursor=&limit=&tier=&topic=&entity=&start=&end=)
    GET    /v1/memory/memories/{id}               get
    PATCH  /v1/memory/memories/{id}               update              ({"text"?, "importance"?})
    DELETE /v1/memory/memories/{id}               delete              (204)
    GET    /v1/memory/memories/{id}/neighbourhood graph               (?depth=&kind=)
    POST   /v1/memory/search                      search              ({"query", "limit"?, "token_budget"?, "filter"?})
    GET    /v1/memory/topics                      topics
    GET    /v1/memory/tenant                      the tenant's memory switch ({"enabled", "changed", "cache_seconds"})
    PUT    /v1/memory/tenant                      set it ({"enabled": bool}; tenant admins only, 403 otherwise; audited)

Every route takes ``user_id`` (query parameter, or body field for POST/PATCH): empty means the
caller; another user of the caller's tenant needs the admin role.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from litestar import Request, Router, delete, get, patch, post, put
from litestar.params import FromPath, FromQuery, JSONBody

from api.auth import current_principal
from application.memory.manage import (
    MemoryUseCases,
    MemoryView,
    memory_filter,
    scope_for,
)
from domain.errors import InvalidRequest, Unavailable
from domain.memory.ranking import MemoryFilter
from domain.memory.tiers import Tier

__all__ = ["MemoryOut", "create_memory_router"]

TierName = Literal["working", "episodic", "semantic"]


def _dt(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def _seconds(value: datetime | None, field: str) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidRequest.single(field, "needs a time zone (e.g. 2025-01-31T12:00:00Z)")
    return value.timestamp()


class FactOut(msgspec.Struct, frozen=True):
    subject: str
    predicate: str
    object: str
    valid_from: datetime
    valid_to: datetime | None


class MemoryOut(msgspec.Struct, frozen=True):
    id: str
    user_id: str
    conversation_id: str
    tier: TierName
    kind: Literal["turn", "summary", "fact", "note"]
    role: str
    text: str
    occurred_at: datetime
    importance: float
    topic_id: str | None
    entities: list[str]
    source_id: str | None
    fact: FactOut | None = None

    @classmethod
    def of(cls, view: MemoryView) -> MemoryOut:
        m = view.memory
        fact = None
        if view.subject is not None:
            fact = FactOut(
                view.subject, view.predicate or "", view.object or "", _dt(m.at),
                None if view.valid_to is None else _dt(view.valid_to),
            )
        return cls(
            id=m.id, user_id=m.user_id, conversation_id=m.conversation_id, tier=m.tier.value, kind=view.kind,  # type: ignore[arg-type]
            role=m.role, text=m.text, occurred_at=_dt(m.at), importance=m.importance, topic_id=m.topic_id,
            entities=list(m.entities), source_id=m.source_id, fact=fact,
        )


class MemoryIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    text: str
    user_id: str = ""
    conversation_id: str = ""
    role: str = ""
    occurred_at: datetime | None = None
    importance: float = 0.5
    tier: TierName = "episodic"
    source_id: str | None = None


class TenantMemoryIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    enabled: bool


class TenantMemoryOut(msgspec.Struct, frozen=True):
    enabled: bool
    changed: bool  # False when the switch already had this value (nothing written, nothing audited)
    cache_seconds: float  # other replicas honour a change within this many seconds


class UpdateIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user_id: str = ""
    text: str | None = None
    importance: float | None = None


class FilterIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    topic_ids: list[str] = []
    entities: list[str] = []
    tiers: list[TierName] = []
    start: datetime | None = None
    end: datetime | None = None

    def decode(self) -> MemoryFilter | None:
        return memory_filter(
            topics=self.topic_ids, entities=self.entities, tiers=[Tier(t) for t in self.tiers],
            start=_seconds(self.start, "filter.start"), end=_seconds(self.end, "filter.end"),
        )


class SearchIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    query: str
    user_id: str = ""
    limit: int = 10
    token_budget: int = 2000
    filter: FilterIn | None = None


class ExplanationOut(msgspec.Struct, frozen=True):
    rrf: float
    graph: float
    recency: float
    importance: float
    mmr_penalty: float
    base: float
    score: float
    fulltext_rank: int | None
    vector_rank: int | None
    graph_hops: int | None


class HitOut(msgspec.Struct, frozen=True):
    memory: MemoryOut | None  # None: deleted between the search and the look-up
    id: str
    text: str
    score: float
    explanation: ExplanationOut
    tokens: int
    passage: str  # the hit with the memories shown around it, one per line
    context_ids: list[str]


class SearchOut(msgspec.Struct, frozen=True):
    hits: list[HitOut]
    tokens_used: int
    skipped_ids: list[str]


class TopicOut(msgspec.Struct, frozen=True):
    id: str
    label: str
    size: int


class NodeOut(msgspec.Struct, frozen=True):
    id: str
    kind: str
    label: str
    hops: int
    memory: MemoryOut | None


class EdgeOut(msgspec.Struct, frozen=True):
    source: str
    target: str
    kind: str
    weight: float


class NeighbourhoodOut(msgspec.Struct, frozen=True):
    center: str
    nodes: list[NodeOut]
    edges: list[EdgeOut]
    truncated: bool


class PageOut(msgspec.Struct, frozen=True):
    memories: list[MemoryOut]
    next_cursor: str


def create_memory_router(use: MemoryUseCases) -> Router:
    @post("/memories", status_code=201)
    async def add_memory(data: JSONBody[MemoryIn]) -> MemoryOut:
        tenant, user = scope_for(current_principal(), data.user_id)
        view = await use.add(
            tenant, user, data.text, conversation_id=data.conversation_id, role=data.role,
            at=_seconds(data.occurred_at, "occurred_at"), importance=data.importance, tier=Tier(data.tier),
            source_id=data.source_id,
        )
        return MemoryOut.of(view)

    @get("/memories")
    async def list_memories(
        user_id: FromQuery[str] = "",
        cursor: FromQuery[str] = "",
        limit: FromQuery[int] = 100,
        tier: FromQuery[list[TierName] | None] = None,
        topic: FromQuery[list[str] | None] = None,
        entity: FromQuery[list[str] | None] = None,
        start: FromQuery[datetime | None] = None,
        end: FromQuery[datetime | None] = None,
    ) -> PageOut:
        tenant, user = scope_for(current_principal(), user_id)
        filters = FilterIn(topic or [], entity or [], tier or [], start, end).decode()
        page = await use.export(tenant, user, cursor, limit, filters)
        return PageOut([MemoryOut.of(v) for v in page.memories], page.next_cursor)

    @get("/memories/{memory_id:str}")
    async def get_memory(memory_id: FromPath[str], user_id: FromQuery[str] = "") -> MemoryOut:
        tenant, user = scope_for(current_principal(), user_id)
        return MemoryOut.of(await use.get(tenant, user, memory_id))

    @patch("/memories/{memory_id:str}")
    async def update_memory(memory_id: FromPath[str], data: JSONBody[UpdateIn]) -> MemoryOut:
        tenant, user = scope_for(current_principal(), data.user_id)
        return MemoryOut.of(await use.update(tenant, user, memory_id, text=data.text, importance=data.importance))

    @delete("/memories/{memory_id:str}", status_code=204)
    async def delete_memory(memory_id: FromPath[str], user_id: FromQuery[str] = "") -> None:
        tenant, user = scope_for(current_principal(), user_id)
        await use.delete(tenant, user, memory_id)

    @get("/memories/{memory_id:str}/neighbourhood")
    async def neighbourhood(
        memory_id: FromPath[str], user_id: FromQuery[str] = "", depth: FromQuery[int] = 1,
        kind: FromQuery[list[str] | None] = None,
    ) -> NeighbourhoodOut:
        tenant, user = scope_for(current_principal(), user_id)
        graph = await use.neighbourhood(tenant, user, memory_id, depth, kind or [])
        return NeighbourhoodOut(
            center=graph.center,
            nodes=[
                NodeOut(n.id, n.kind, n.label, n.hops, MemoryOut.of(n.memory) if n.memory is not None else None)
                for n in graph.nodes
            ],
            edges=[EdgeOut(e.source, e.target, e.kind, e.weight) for e in graph.edges],
            truncated=graph.truncated,
        )

    @post("/search", status_code=200)
    async def search(data: JSONBody[SearchIn]) -> SearchOut:
        tenant, user = scope_for(current_principal(), data.user_id)
        filters = data.filter.decode() if data.filter is not None else None
        response, views = await use.search(
            tenant, user, data.query, limit=data.limit, token_budget=data.token_budget, filters=filters
        )
        hits = []
        for r in response.results:
            e = r.explanation
            view = views.get(r.id)
            hits.append(
                HitOut(
                    memory=MemoryOut.of(view) if view is not None else None, id=r.id, text=r.text, score=r.score,
                    explanation=ExplanationOut(
                        e.rrf, e.graph, e.recency, e.importance, e.mmr_penalty, e.base, e.score,
                        e.fulltext_rank, e.vector_rank, e.graph_hops,
                    ),
                    tokens=r.tokens, passage=r.passage, context_ids=[c.id for c in (*r.before, *r.after)],
                )
            )
        return SearchOut(hits, response.tokens_used, list(response.skipped_ids))

    @get("/topics")
    async def topics(user_id: FromQuery[str] = "") -> list[TopicOut]:
        tenant, user = scope_for(current_principal(), user_id)
        return [TopicOut(t.id, t.label, t.size) for t in await use.topics(tenant, user)]

    @get("/tenant")
    async def get_tenant_memory() -> TenantMemoryOut:
        if use.tenant_get is None:
            raise Unavailable("the tenant memory switch is not served here")
        state = await use.tenant_get(current_principal())
        return TenantMemoryOut(state.enabled, False, state.cache_seconds)

    @put("/tenant")
    async def set_tenant_memory(request: Request[Any, Any, Any], data: JSONBody[TenantMemoryIn]) -> TenantMemoryOut:
        if use.tenant_set is None:
            raise Unavailable("the tenant memory switch is not served here")
        client = request.client.host if request.client else ""
        state = await use.tenant_set(current_principal(), data.enabled, client=client)
        return TenantMemoryOut(state.enabled, state.changed, state.cache_seconds)

    return Router(
        path="/v1/memory",
        route_handlers=[
            add_memory, list_memories, get_memory, update_memory, delete_memory, neighbourhood, search, topics,
            get_tenant_memory, set_tenant_memory,
        ],
    )
