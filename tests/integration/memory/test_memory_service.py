"""MemoryService over real gRPC and REST: a backend built by the composition root on the session's
Postgres (pgvector + full-text), the default local all-MiniLM-L6-v2 ONNX embedder, callers
authenticated by bearer tokens (``StaticAuthenticator``). Covers every RPC and its REST mirror,
tenant isolation at the API, admins acting for users of their own tenant only, and bad input
(google.rpc BadRequest details / problem+json)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from adapters.events_codec import decode_event
from api.auth import StaticAuthenticator
from api.bootstrap import Backend, build_backend
from api.settings import load_settings
from domain.chat import ChatMessage, ChatRequest
from domain.chat import Role as Role_
from domain.events import AuthenticationAudited
from domain.identity import Principal, PrincipalKind, Role
from lumina.v1 import memory_pb2 as pb
from lumina.v1 import memory_pb2_grpc

pytestmark = pytest.mark.timeout(120)

FACTS = [
    ("user", "I adopted a golden retriever puppy named Biscuit."),
    ("user", "My sister Carla lives in Lisbon and teaches chemistry."),
    ("assistant", "Biscuit sounds lovely; retrievers love long walks."),
    ("user", "I am learning to play the cello at a community school."),
]


@dataclass
class Api:
    backend: Backend
    tenant_a: str
    tenant_b: str
    http: httpx.AsyncClient
    channel: grpc.aio.Channel

    @property
    def stub(self) -> memory_pb2_grpc.MemoryServiceStub:
        return memory_pb2_grpc.MemoryServiceStub(self.channel)


def _principal(tenant: str, user: str, role: Role = Role.MEMBER) -> Principal:
    return Principal(tenant, user, role, PrincipalKind.API_KEY, f"key-{user}")


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[Api]:
    a, b = f"ta-{uuid.uuid4().hex[:8]}", f"tb-{uuid.uuid4().hex[:8]}"
    tokens = {
        "alice": _principal(a, "alice"),
        "carol": _principal(a, "carol"),
        "admin-a": _principal(a, "root", Role.ADMIN),
        "bob": _principal(b, "bob"),
        "admin-b": _principal(b, "boss", Role.ADMIN),
    }
    settings = load_settings({}, database_url=database_url, tenant_id="memsvc")
    backend = build_backend(settings, providers=[], authenticator=StaticAuthenticator(tokens))
    await backend.start(grpc_port=0, http_port=0)
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{backend.http_port}", timeout=30) as http,
            grpc.aio.insecure_channel(f"127.0.0.1:{backend.grpc_port}") as channel,
        ):
            yield Api(backend, a, b, http, channel)
    finally:
        await backend.stop()


async def _add_all(api: Api, token: str = "alice", conversation: str = "c1") -> list[pb.Memory]:
    out = []
    for i, (role, text) in enumerate(FACTS):
        request = pb.AddMemoryRequest(text=text, role=role, conversation_id=conversation, source_id=f"m{i}")
        request.occurred_at.FromSeconds(1_750_000_000 + 60 * i)
        out.append((await api.stub.AddMemory(request, metadata=auth(token))).memory)
    return out


def _violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None
    found = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found.update({v.field: v.description for v in bad.field_violations})
    return found


async def test_every_rpc_over_grpc(api: Api) -> None:
    added = await _add_all(api)
    assert [m.kind for m in added] == [pb.MEMORY_KIND_TURN] * 4
    puppy = added[0]
    assert puppy.text.startswith("user: I adopted") and puppy.user_id == "alice" and puppy.tier == pb.MEMORY_TIER_EPISODIC
    assert "biscuit" in puppy.entities and puppy.topic_id and puppy.source_id == "m0"

    found = await api.stub.SearchMemories(pb.SearchMemoriesRequest(query="what is the name of my dog?", limit=3), metadata=auth("alice"))
    top = found.hits[0]
    assert "Biscuit" in top.passage and puppy.id in {top.memory.id, *top.context_ids}
    assert top.explanation.HasField("vector_rank") and top.score == pytest.approx(top.explanation.score)
    assert top.memory.entities  # full memory, not just the search row
    assert 0 < found.tokens_used <= 2000

    semantic = await api.stub.SearchMemories(
        pb.SearchMemoriesRequest(query="cello", filter=pb.MemoryFilter(tiers=[pb.MEMORY_TIER_SEMANTIC])), metadata=auth("alice")
    )
    assert list(semantic.hits) == []
    by_entity = await api.stub.SearchMemories(
        pb.SearchMemoriesRequest(query="Biscuit walks", filter=pb.MemoryFilter(entities=["Carla"])), metadata=auth("alice")
    )
    assert [h.memory.id for h in by_entity.hits] == [added[1].id]

    got = await api.stub.GetMemory(pb.GetMemoryRequest(id=puppy.id), metadata=auth("alice"))
    assert got.memory == puppy

    changed = await api.stub.UpdateMemory(
        pb.UpdateMemoryRequest(id=puppy.id, text="I adopted a black labrador named Pepper.", importance=0.9), metadata=auth("alice")
    )
    assert changed.memory.text == "user: I adopted a black labrador named Pepper." and changed.memory.importance == pytest.approx(0.9)
    assert "pepper" in changed.memory.entities and "biscuit" not in changed.memory.entities
    again = await api.stub.SearchMemories(pb.SearchMemoriesRequest(query="labrador Pepper", limit=1), metadata=auth("alice"))
    assert "Pepper" in again.hits[0].passage and "Biscuit" not in again.hits[0].passage

    topics = await api.stub.ListTopics(pb.ListTopicsRequest(), metadata=auth("alice"))
    assert sum(t.size for t in topics.topics) == 4 and all(t.label for t in topics.topics)

    graph = await api.stub.GetNeighbourhood(pb.GetNeighbourhoodRequest(id=added[1].id, depth=1), metadata=auth("alice"))
    kinds = {(n.kind, n.id) for n in graph.nodes}
    assert ("memory", added[1].id) in kinds and ("entity", "entity:carla") in kinds and ("memory", added[0].id) in kinds
    assert {e.kind for e in graph.edges} >= {"mentions", "about", "follows"}
    assert next(n for n in graph.nodes if n.id == added[0].id).memory.text.startswith("user: I adopted")

    first = await api.stub.ListMemories(pb.ListMemoriesRequest(page_size=3), metadata=auth("alice"))
    assert len(first.memories) == 3 and first.next_page_token
    rest = await api.stub.ListMemories(pb.ListMemoriesRequest(page_size=3, page_token=first.next_page_token), metadata=auth("alice"))
    assert [m.id for m in (*first.memories, *rest.memories)] == [m.id for m in added] and rest.next_page_token == ""

    exported = [m async for page in api.stub.ExportMemories(pb.ExportMemoriesRequest(page_size=2), metadata=auth("alice")) for m in page.memories]
    assert [m.id for m in exported] == [m.id for m in added]

    await api.stub.DeleteMemory(pb.DeleteMemoryRequest(id=puppy.id), metadata=auth("alice"))
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await api.stub.GetMemory(pb.GetMemoryRequest(id=puppy.id), metadata=auth("alice"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    after = await api.stub.SearchMemories(pb.SearchMemoriesRequest(query="labrador Pepper"), metadata=auth("alice"))
    assert after.hits and puppy.id not in {i for h in after.hits for i in (h.memory.id, *h.context_ids)}
    assert all("Pepper" not in h.passage for h in after.hits)


async def test_semantic_notes_and_time_filters(api: Api) -> None:
    note = (await api.stub.AddMemory(
        pb.AddMemoryRequest(text="Prefers answers in French.", tier=pb.MEMORY_TIER_SEMANTIC, importance=0.8), metadata=auth("alice")
    )).memory
    assert note.tier == pb.MEMORY_TIER_SEMANTIC and note.kind == pb.MEMORY_KIND_NOTE and note.conversation_id == "notes"
    added = await _add_all(api)
    semantic = await api.stub.SearchMemories(
        pb.SearchMemoriesRequest(query="French answers", filter=pb.MemoryFilter(tiers=[pb.MEMORY_TIER_SEMANTIC])), metadata=auth("alice")
    )
    assert [h.memory.id for h in semantic.hits] == [note.id]
    window = pb.MemoryFilter()
    window.start.FromSeconds(1_750_000_000 + 30)
    window.end.FromSeconds(1_750_000_000 + 150)
    listed = await api.stub.ListMemories(pb.ListMemoriesRequest(filter=window), metadata=auth("alice"))
    assert [m.id for m in listed.memories] == [added[1].id, added[2].id]


async def test_tenants_never_see_each_others_memories(api: Api) -> None:
    (mine,) = (await _add_all(api))[:1]
    for token in ("bob", "admin-b"):
        for call, request in (
            (api.stub.GetMemory, pb.GetMemoryRequest(id=mine.id)),
            (api.stub.GetMemory, pb.GetMemoryRequest(id=mine.id, user_id="alice")),
            (api.stub.UpdateMemory, pb.UpdateMemoryRequest(id=mine.id, text="hijacked")),
            (api.stub.DeleteMemory, pb.DeleteMemoryRequest(id=mine.id, user_id="alice")),
            (api.stub.GetNeighbourhood, pb.GetNeighbourhoodRequest(id=mine.id, user_id="alice")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await call(request, metadata=auth(token))
            # a member naming another user is refused outright; in its own scope (or an admin's
            # scope of its own tenant) the memory simply does not exist
            expected = grpc.StatusCode.PERMISSION_DENIED if token == "bob" and request.user_id else grpc.StatusCode.NOT_FOUND
            assert denied.value.code() == expected, (token, request)
        users = ("", "alice") if token == "admin-b" else ("",)
        for user in users:
            hits = await api.stub.SearchMemories(pb.SearchMemoriesRequest(query="golden retriever puppy Biscuit", user_id=user), metadata=auth(token))
            assert list(hits.hits) == []
            listed = await api.stub.ListMemories(pb.ListMemoriesRequest(user_id=user), metadata=auth(token))
            assert list(listed.memories) == []
            exported = [p async for p in api.stub.ExportMemories(pb.ExportMemoriesRequest(user_id=user), metadata=auth(token))]
            assert exported == []
    # REST too
    for token, user in (("bob", ""), ("admin-b", "alice")):
        r = await api.http.get(f"/v1/memory/memories/{mine.id}", params={"user_id": user}, headers=bearer(token))
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
        r = await api.http.delete(f"/v1/memory/memories/{mine.id}", params={"user_id": user}, headers=bearer(token))
        assert r.status_code == 404
        r = await api.http.post("/v1/memory/search", json={"query": "golden retriever Biscuit", "user_id": user}, headers=bearer(token))
        assert r.status_code == 200 and r.json()["hits"] == []
    r = await api.http.get(f"/v1/memory/memories/{mine.id}", params={"user_id": "alice"}, headers=bearer("bob"))
    assert r.status_code == 403
    # still there for its owner
    assert (await api.stub.GetMemory(pb.GetMemoryRequest(id=mine.id), metadata=auth("alice"))).memory.text == mine.text


async def test_users_of_one_tenant_are_apart_unless_admin(api: Api) -> None:
    (mine,) = (await _add_all(api))[:1]
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await api.stub.GetMemory(pb.GetMemoryRequest(id=mine.id), metadata=auth("carol"))
    assert other.value.code() == grpc.StatusCode.NOT_FOUND  # carol's own scope: not hers
    with pytest.raises(grpc.aio.AioRpcError) as forbidden:
        await api.stub.GetMemory(pb.GetMemoryRequest(id=mine.id, user_id="alice"), metadata=auth("carol"))
    assert forbidden.value.code() == grpc.StatusCode.PERMISSION_DENIED
    hits = await api.stub.SearchMemories(pb.SearchMemoriesRequest(query="golden retriever Biscuit"), metadata=auth("carol"))
    assert list(hits.hits) == []
    as_admin = await api.stub.GetMemory(pb.GetMemoryRequest(id=mine.id, user_id="alice"), metadata=auth("admin-a"))
    assert as_admin.memory.id == mine.id
    added = await api.stub.AddMemory(pb.AddMemoryRequest(text="Note from the admin.", user_id="alice"), metadata=auth("admin-a"))
    assert added.memory.user_id == "alice"
    r = await api.http.get(f"/v1/memory/memories/{mine.id}", params={"user_id": "alice"}, headers=bearer("carol"))
    assert r.status_code == 403 and r.json()["code"] == "permission_denied"


async def test_bad_input_is_invalid_argument_with_field_violations(api: Api) -> None:
    (mine,) = (await _add_all(api))[:1]
    cases = [
        (api.stub.AddMemory, pb.AddMemoryRequest(text="  ", importance=2.0), {"text", "importance"}),
        (api.stub.AddMemory, pb.AddMemoryRequest(text="x", tier=pb.MEMORY_TIER_WORKING), {"tier"}),
        (api.stub.AddMemory, pb.AddMemoryRequest(text="x", tier=42), {"tier"}),
        (api.stub.SearchMemories, pb.SearchMemoriesRequest(query="", limit=5000), {"query", "limit"}),
        (api.stub.UpdateMemory, pb.UpdateMemoryRequest(id=mine.id), {"update"}),
        (api.stub.GetNeighbourhood, pb.GetNeighbourhoodRequest(id=mine.id, depth=9), {"depth"}),
        (api.stub.GetNeighbourhood, pb.GetNeighbourhoodRequest(id=mine.id, edge_kinds=["likes"]), {"kinds"}),
        (api.stub.ListMemories, pb.ListMemoriesRequest(page_token="not-a-cursor"), {"cursor"}),
        (api.stub.ListMemories, pb.ListMemoriesRequest(page_size=501), {"page_size"}),
        (api.stub.GetMemory, pb.GetMemoryRequest(id=""), {"id[0]"}),
        (api.stub.GetMemory, pb.GetMemoryRequest(id="topic:x"), {"id"}),
    ]
    start_after_end = pb.MemoryFilter()
    start_after_end.start.FromSeconds(2_000_000_000)
    start_after_end.end.FromSeconds(1_000_000_000)
    cases.append((api.stub.SearchMemories, pb.SearchMemoriesRequest(query="x", filter=start_after_end), {"filter.end"}))
    for call, request, fields in cases:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await call(request, metadata=auth("alice"))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert set(_violations(bad.value)) == fields, (request, _violations(bad.value))
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await api.stub.ListTopics(pb.ListTopicsRequest())
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_rest_mirror(api: Api) -> None:
    h = bearer("alice")
    created = []
    for i, (role, text) in enumerate(FACTS):
        r = await api.http.post(
            "/v1/memory/memories",
            json={"text": text, "role": role, "conversation_id": "r1", "occurred_at": f"2025-06-15T12:0{i}:00Z"},
            headers=h,
        )
        assert r.status_code == 201, r.text
        created.append(r.json())
    assert created[0]["kind"] == "turn" and created[0]["occurred_at"] == "2025-06-15T12:00:00Z"
    found = (await api.http.post("/v1/memory/search", json={"query": "name of my dog", "limit": 2}, headers=h)).json()
    assert "Biscuit" in found["hits"][0]["passage"] and found["hits"][0]["memory"]["entities"]
    assert created[0]["id"] in {found["hits"][0]["id"], *found["hits"][0]["context_ids"]}
    assert found["hits"][0]["explanation"]["vector_rank"] is not None
    filtered = (await api.http.post(
        "/v1/memory/search", json={"query": "Biscuit", "filter": {"entities": ["carla"], "tiers": ["episodic"]}}, headers=h
    )).json()
    assert [x["id"] for x in filtered["hits"]] == [created[1]["id"]]
    mid = created[2]["id"]
    assert (await api.http.get(f"/v1/memory/memories/{mid}", headers=h)).json() == created[2]
    patched = await api.http.patch(f"/v1/memory/memories/{mid}", json={"importance": 0.25}, headers=h)
    assert patched.status_code == 200 and patched.json()["importance"] == pytest.approx(0.25)
    topics = (await api.http.get("/v1/memory/topics", headers=h)).json()
    assert sum(t["size"] for t in topics) == 4
    graph = (await api.http.get(f"/v1/memory/memories/{mid}/neighbourhood", params={"kind": "follows"}, headers=h)).json()
    assert {n["id"] for n in graph["nodes"]} == {created[1]["id"], mid, created[3]["id"]}
    assert {e["kind"] for e in graph["edges"]} == {"follows"}
    page = (await api.http.get("/v1/memory/memories", params={"limit": 3}, headers=h)).json()
    page2 = (await api.http.get("/v1/memory/memories", params={"limit": 3, "cursor": page["next_cursor"]}, headers=h)).json()
    assert [m["id"] for m in page["memories"] + page2["memories"]] == [c["id"] for c in created] and page2["next_cursor"] == ""
    window = (await api.http.get(
        "/v1/memory/memories", params={"start": "2025-06-15T12:01:00Z", "end": "2025-06-15T12:03:00Z", "tier": "episodic"}, headers=h
    )).json()
    assert [m["id"] for m in window["memories"]] == [created[1]["id"], created[2]["id"]]
    assert (await api.http.delete(f"/v1/memory/memories/{mid}", headers=h)).status_code == 204
    assert (await api.http.get(f"/v1/memory/memories/{mid}", headers=h)).status_code == 404


async def test_rest_bad_input_is_problem_json(api: Api) -> None:
    h = bearer("alice")
    r = await api.http.post("/v1/memory/memories", json={"text": "", "importance": 3}, headers=h)
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert {e["field"] for e in r.json()["errors"]} == {"text", "importance"}
    r = await api.http.post("/v1/memory/memories", json={"text": "x", "colour": "red"}, headers=h)
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    r = await api.http.post("/v1/memory/memories", content=b"{not json", headers={**h, "content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
    r = await api.http.post("/v1/memory/search", json={"query": "x", "filter": {"start": "2025-01-02T00:00:00Z", "end": "2025-01-01T00:00:00Z"}}, headers=h)
    assert r.status_code == 422 and r.json()["errors"] == [{"field": "filter.end", "message": "must be after filter.start"}]
    r = await api.http.get("/v1/memory/memories", params={"cursor": "garbage"}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "cursor"
    r = await api.http.get("/v1/memory/memories/x/neighbourhood", params={"depth": 7}, headers=h)
    assert r.status_code == 422
    r = await api.http.get("/v1/memory/topics")
    assert r.status_code == 401
    r = await api.http.patch("/v1/memory/memories/nope", json={"text": "y"}, headers=h)
    assert r.status_code == 404 and r.json()["code"] == "not_found"


async def test_redis_read_cache_answers_repeated_searches_and_forgets_on_write(database_url: str, redis_url: str) -> None:
    from adapters.vectorstores.cache import CachedHybridSearch, CachedVectorStore

    tenant = f"tr-{uuid.uuid4().hex[:8]}"
    settings = load_settings({}, database_url=database_url, redis_url=redis_url, tenant_id="memcache")
    backend = build_backend(settings, providers=[], authenticator=StaticAuthenticator({"t": _principal(tenant, "alice")}))
    await backend.start(grpc_port=0, http_port=0)
    try:
        assert isinstance(backend.memory.vectors, CachedVectorStore)
        cache = backend.memory.search_cache  # the one-statement search's cache, under the same generations
        assert isinstance(cache, CachedHybridSearch)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{backend.grpc_port}") as channel:
            stub = memory_pb2_grpc.MemoryServiceStub(channel)
            await stub.AddMemory(pb.AddMemoryRequest(text="I keep bees on the roof."), metadata=auth("t"))
            query = pb.SearchMemoriesRequest(query="honey bees hive")
            first = await stub.SearchMemories(query, metadata=auth("t"))
            hits = cache.stats.hits
            second = await stub.SearchMemories(query, metadata=auth("t"))
            assert cache.stats.hits == hits + 1 and [h.memory.id for h in second.hits] == [h.memory.id for h in first.hits]
            async with backend.engine.begin() as conn:  # a change without a vector write (as consolidation makes)
                await conn.execute(sa.text("UPDATE memories SET text = text || ' (edited)' WHERE tenant_id = :t"), {"t": tenant})
            fresh = await stub.SearchMemories(query, metadata=auth("t"))
            assert cache.stats.hits == hits + 2  # still the cached hit lists, and the rows as they are now
            assert fresh.hits and all(h.memory.text.endswith("(edited)") for h in fresh.hits)
            added = await stub.AddMemory(pb.AddMemoryRequest(text="The bees made honey in the hive."), metadata=auth("t"))
            misses = cache.stats.misses
            third = await stub.SearchMemories(query, metadata=auth("t"))
            assert cache.stats.misses == misses + 1  # the write moved the tenant's generation on
            assert added.memory.id in {i for h in third.hits for i in (h.memory.id, *h.context_ids)}
    finally:
        await backend.stop()


async def _tenant_rows(api: Api) -> None:
    """The tenants exist (the switch lives on their row; credentials alone do not make one)."""
    async with api.backend.engine.begin() as conn:  # type: ignore[union-attr]
        for tenant in (api.tenant_a, api.tenant_b):
            await conn.execute(sa.text("INSERT INTO tenants (id, name, created_at) VALUES (:t, :t, now())"), {"t": tenant})


async def _audits(api: Api, tenant: str) -> list[AuthenticationAudited]:
    async with api.backend.engine.connect() as conn:  # type: ignore[union-attr]
        rows = (await conn.execute(
            sa.text("SELECT payload FROM outbox WHERE subject LIKE :s ORDER BY id"), {"s": f"lumina.{tenant}.%"}
        )).scalars().all()
    events = [decode_event(bytes(p)) for p in rows]
    return [e for e in events if isinstance(e, AuthenticationAudited) and e.method == "tenant_policy"]


async def _recall_note(api: Api, principal: Principal) -> str:
    hook = api.backend.memory_hook
    request = ChatRequest(messages=(ChatMessage(Role_.USER, "what is my puppy called?"),), model="m")
    prepared = await hook.prepare(principal, request)
    return prepared.notes.get("memory_skipped", "recalled")


async def test_tenant_memory_switch_over_grpc(api: Api) -> None:
    await _tenant_rows(api)
    alice = _principal(api.tenant_a, "alice")
    got = await api.stub.GetTenantMemory(pb.GetTenantMemoryRequest(), metadata=auth("alice"))
    assert got.enabled and got.cache_seconds == 30
    assert await _recall_note(api, alice) != "off_tenant"  # the chat hook has now cached "on"

    with pytest.raises(grpc.aio.AioRpcError) as denied:  # a member may read it, not set it
        await api.stub.SetTenantMemory(pb.SetTenantMemoryRequest(enabled=False), metadata=auth("alice"))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await api.stub.GetTenantMemory(pb.GetTenantMemoryRequest(), metadata=auth("alice"))).enabled
    assert await _audits(api, api.tenant_a) == []

    off = await api.stub.SetTenantMemory(pb.SetTenantMemoryRequest(enabled=False), metadata=auth("admin-a"))
    assert (off.enabled, off.changed, off.cache_seconds) == (False, True, 30)
    assert not (await api.stub.GetTenantMemory(pb.GetTenantMemoryRequest(), metadata=auth("carol"))).enabled
    # this replica honours the flip at once (its cached "on" was dropped), not 30 s later
    assert await _recall_note(api, alice) == "off_tenant"
    (audit,) = await _audits(api, api.tenant_a)
    assert (audit.user_id, audit.outcome, audit.reason) == ("root", "changed", "memory_enabled=off")

    again = await api.stub.SetTenantMemory(pb.SetTenantMemoryRequest(enabled=False), metadata=auth("admin-a"))
    assert (again.enabled, again.changed) == (False, False)
    assert len(await _audits(api, api.tenant_a)) == 1  # nothing changed, nothing audited
    # the other tenant is untouched
    assert (await api.stub.GetTenantMemory(pb.GetTenantMemoryRequest(), metadata=auth("bob"))).enabled
    assert await _recall_note(api, _principal(api.tenant_b, "bob")) != "off_tenant"

    on = await api.stub.SetTenantMemory(pb.SetTenantMemoryRequest(enabled=True), metadata=auth("admin-a"))
    assert (on.enabled, on.changed) == (True, True)
    assert await _recall_note(api, alice) != "off_tenant"


async def test_tenant_memory_switch_over_rest(api: Api) -> None:
    await _tenant_rows(api)
    r = await api.http.put("/v1/memory/tenant", json={"enabled": False}, headers=bearer("carol"))
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    r = await api.http.put("/v1/memory/tenant", json={"enabled": "no"}, headers=bearer("admin-b"))
    assert r.status_code in (400, 422), r.text
    r = await api.http.put("/v1/memory/tenant", json={"enabled": False, "tenant": "x"}, headers=bearer("admin-b"))
    assert r.status_code == 400, r.text  # unknown field: no request names a tenant
    r = await api.http.put("/v1/memory/tenant", json={"enabled": False}, headers=bearer("admin-b"))
    assert r.status_code == 200 and r.json() == {"enabled": False, "changed": True, "cache_seconds": 30.0}
    r = await api.http.get("/v1/memory/tenant", headers=bearer("bob"))
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert (await api.http.get("/v1/memory/tenant", headers=bearer("alice"))).json()["enabled"] is True
    assert await _recall_note(api, _principal(api.tenant_b, "bob")) == "off_tenant"
    (audit,) = await _audits(api, api.tenant_b)
    assert (audit.user_id, audit.reason) == ("boss", "memory_enabled=off")


async def test_tenant_memory_switch_needs_a_tenant(api: Api) -> None:
    """A tenant known only to its credentials has the default (on) and cannot be switched."""
    assert (await api.stub.GetTenantMemory(pb.GetTenantMemoryRequest(), metadata=auth("admin-a"))).enabled
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await api.stub.SetTenantMemory(pb.SetTenantMemoryRequest(enabled=False), metadata=auth("admin-a"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
