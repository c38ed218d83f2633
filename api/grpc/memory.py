"""``MemoryService``: decode, scope to the caller (``api.auth.current_principal``), call one use
case, encode. Domain errors become statuses (with google.rpc details) in the edge interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from api.auth import current_principal
from application.memory.manage import (
    MAX_PAGE,
    MemoryUseCases,
    MemoryView,
    memory_filter,
    scope_for,
)
from application.memory.search import SearchResult
from domain.errors import InvalidRequest, Unavailable
from domain.memory.ranking import MemoryFilter
from domain.memory.tiers import Tier
from lumina.v1 import memory_pb2 as pb
from lumina.v1 import memory_pb2_grpc

__all__ = ["SERVICE_NAME", "MemoryServicer", "add_memory_service", "encode_memory"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MemoryService"].full_name

_TIERS_OUT = {
    Tier.WORKING: pb.MEMORY_TIER_WORKING,
    Tier.EPISODIC: pb.MEMORY_TIER_EPISODIC,
    Tier.SEMANTIC: pb.MEMORY_TIER_SEMANTIC,
}
_TIERS_IN = {v: k for k, v in _TIERS_OUT.items()}
_KINDS = {
    "turn": pb.MEMORY_KIND_TURN,
    "summary": pb.MEMORY_KIND_SUMMARY,
    "fact": pb.MEMORY_KIND_FACT,
    "note": pb.MEMORY_KIND_NOTE,
}


def _timestamp(at: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(round(at * 1e9))
    return ts


def _seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def _tier_in(value: int, field: str) -> Tier:
    if value not in _TIERS_IN:
        raise InvalidRequest.single(field, "unknown tier")
    return _TIERS_IN[value]


def encode_memory(view: MemoryView) -> pb.Memory:
    m = view.memory
    out = pb.Memory(
        id=m.id,
        user_id=m.user_id,
        conversation_id=m.conversation_id,
        tier=_TIERS_OUT[m.tier],
        kind=_KINDS[view.kind],
        role=m.role,
        text=m.text,
        occurred_at=_timestamp(m.at),
        importance=m.importance,
        topic_id=m.topic_id or "",
        entities=list(m.entities),
        source_id=m.source_id or "",
    )
    if view.subject is not None:
        out.fact.CopyFrom(
            pb.MemoryFact(
                subject=view.subject,
                predicate=view.predicate or "",
                object=view.object or "",
                valid_from=_timestamp(m.at),
                valid_to=None if view.valid_to is None else _timestamp(view.valid_to),
            )
        )
    return out


def _hit_memory(result: SearchResult, views: dict[str, MemoryView]) -> pb.Memory:
    view = views.get(result.id)
    if view is not None:
        return encode_memory(view)
    return pb.Memory(  # deleted between the search and the look-up: what the search saw
        id=result.id,
        conversation_id=result.conversation_id,
        tier=_TIERS_OUT[result.tier],
        text=result.text,
        occurred_at=_timestamp(result.at),
        source_id=result.source_id or "",
    )


def decode_filter(f: pb.MemoryFilter) -> MemoryFilter | None:
    return memory_filter(
        topics=list(f.topic_ids),
        entities=list(f.entities),
        tiers=[_tier_in(t, "filter.tiers") for t in f.tiers],
        start=_seconds(f.start) if f.HasField("start") else None,
        end=_seconds(f.end) if f.HasField("end") else None,
    )


def _page_size(value: int) -> int:
    if value < 0 or value > MAX_PAGE:
        raise InvalidRequest.single("page_size", f"must be between 1 and {MAX_PAGE} (0: 100)")
    return value or 100


class MemoryServicer(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(self, use: MemoryUseCases) -> None:
        self._use = use

    async def AddMemory(self, request: pb.AddMemoryRequest, context: grpc.aio.ServicerContext) -> pb.AddMemoryResponse:  # noqa: N802
        tenant, user = scope_for(current_principal(), request.user_id)
        tier = Tier.EPISODIC if request.tier == pb.MEMORY_TIER_UNSPECIFIED else _tier_in(request.tier, "tier")
        view = await self._use.add(
            tenant,
            user,
            request.text,
            conversation_id=request.conversation_id,
            role=request.role,
            at=_seconds(request.occurred_at) if request.HasField("occurred_at") else None,
            importance=request.importance if request.HasField("importance") else 0.5,
            tier=tier,
            source_id=request.source_id or None,
        )
        return pb.AddMemoryResponse(memory=encode_memory(view))

    async def SearchMemories(  # noqa: N802
        self, request: pb.SearchMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchMemoriesResponse:
        tenant, user = scope_for(current_principal(), request.user_id)
        response, views = await self._use.search(
            tenant,
            user,
            request.query,
            limit=request.limit or 10,
            token_budget=request.token_budget or 2000,
            filters=decode_filter(request.filter),
        )
        hits = []
        for r in response.results:
            e = r.explanation
            explanation = pb.ScoreExplanation(
                rrf=e.rrf, graph=e.graph, recency=e.recency, importance=e.importance, mmr_penalty=e.mmr_penalty,
                base=e.base, score=e.score, fulltext_rank=e.fulltext_rank, vector_rank=e.vector_rank,
                graph_hops=e.graph_hops,
            )
            hits.append(
                pb.SearchHit(
                    memory=_hit_memory(r, views), score=r.score, explanation=explanation, tokens=r.tokens,
                    passage=r.passage, context_ids=[c.id for c in (*r.before, *r.after)],
                )
            )
        return pb.SearchMemoriesResponse(hits=hits, tokens_used=response.tokens_used, skipped_ids=list(response.skipped_ids))

    async def GetMemory(self, request: pb.GetMemoryRequest, context: grpc.aio.ServicerContext) -> pb.GetMemoryResponse:  # noqa: N802
        tenant, user = scope_for(current_principal(), request.user_id)
        return pb.GetMemoryResponse(memory=encode_memory(await self._use.get(tenant, user, request.id)))

    async def UpdateMemory(  # noqa: N802
        self, request: pb.UpdateMemoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateMemoryResponse:
        tenant, user = scope_for(current_principal(), request.user_id)
        view = await self._use.update(
            tenant,
            user,
            request.id,
            text=request.text if request.HasField("text") else None,
            importance=request.importance if request.HasField("importance") else None,
        )
        return pb.UpdateMemoryResponse(memory=encode_memory(view))

    async def DeleteMemory(  # noqa: N802
        self, request: pb.DeleteMemoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteMemoryResponse:
        tenant, user = scope_for(current_principal(), request.user_id)
        await self._use.delete(tenant, user, request.id)
        return pb.DeleteMemoryResponse()

    async def ListTopics(self, request: pb.ListTopicsRequest, context: grpc.aio.ServicerContext) -> pb.ListTopicsResponse:  # noqa: N802
        tenant, user = scope_for(current_principal(), request.user_id)
        topics = await self._use.topics(tenant, user)
        return pb.ListTopicsResponse(topics=[pb.Topic(id=t.id, label=t.label, size=t.size) for t in topics])

    async def GetNeighbourhood(  # noqa: N802
        self, request: pb.GetNeighbourhoodRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetNeighbourhoodResponse:
        tenant, user = scope_for(current_principal(), request.user_id)
        graph = await self._use.neighbourhood(tenant, user, request.id, request.depth or 1, list(request.edge_kinds))
        nodes = [
            pb.GraphNode(
                id=n.id, kind=n.kind, label=n.label, hops=n.hops,
                memory=encode_memory(n.memory) if n.memory is not None else None,
            )
            for n in graph.nodes
        ]
        edges = [pb.GraphEdge(source=e.source, target=e.target, kind=e.kind, weight=e.weight) for e in graph.edges]
        return pb.GetNeighbourhoodResponse(nodes=nodes, edges=edges, truncated=graph.truncated)

    async def ListMemories(  # noqa: N802
        self, request: pb.ListMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMemoriesResponse:
        tenant, user = scope_for(current_principal(), request.user_id)
        page = await self._use.export(
            tenant, user, request.page_token, _page_size(request.page_size), decode_filter(request.filter)
        )
        return pb.ListMemoriesResponse(memories=[encode_memory(v) for v in page.memories], next_page_token=page.next_cursor)

    async def ExportMemories(  # noqa: N802
        self, request: pb.ExportMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExportMemoriesResponse]:
        tenant, user = scope_for(current_principal(), request.user_id)
        size, filters = _page_size(request.page_size), decode_filter(request.filter)
        cursor = ""
        while True:
            page = await self._use.export(tenant, user, cursor, size, filters)
            if page.memories:
                yield pb.ExportMemoriesResponse(memories=[encode_memory(v) for v in page.memories])
            if not page.next_cursor:
                return
            cursor = page.next_cursor


    async def GetTenantMemory(  # noqa: N802
        self, request: pb.GetTenantMemoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTenantMemoryResponse:
        if self._use.tenant_get is None:
            raise Unavailable("the tenant memory switch is not served here")
        state = await self._use.tenant_get(current_principal())
        return pb.GetTenantMemoryResponse(enabled=state.enabled, cache_seconds=state.cache_seconds)

    async def SetTenantMemory(  # noqa: N802
        self, request: pb.SetTenantMemoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetTenantMemoryResponse:
        if self._use.tenant_set is None:
            raise Unavailable("the tenant memory switch is not served here")
        state = await self._use.tenant_set(current_principal(), request.enabled, client=_peer(context))
        return pb.SetTenantMemoryResponse(enabled=state.enabled, changed=state.changed, cache_seconds=state.cache_seconds)


def _peer(context: grpc.aio.ServicerContext) -> str:
    peer = context.peer() or ""  # "ipv4:127.0.0.1:5555" / "ipv6:[::1]:5555"
    host = peer.split(":", 1)[1] if ":" in peer else peer
    return host.rsplit(":", 1)[0].strip("[]") if host else ""


def add_memory_service(server: grpc.aio.Server, servicer: MemoryServicer) -> None:
    memory_pb2_grpc.add_MemoryServiceServicer_to_server(servicer, server)
