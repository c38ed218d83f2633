"""Property: no memory search ever returns another tenant's memory.

Real Postgres (full-text + pgvector store + graph edges) with the deterministic hash embedder.
Tenants share users, conversations, texts and even memory ids (``m0``, ``m1``, ... in every
tenant), so only the tenant scoping of every statement keeps them apart. Each turn's
``source_id`` names its tenant, and a model of what each tenant wrote checks every result.
"""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.postgres.memory_repository import PostgresMemoryRepository
from adapters.system import TimeOrderedIds
from adapters.vectorstores.pgvector import PgVectorStore
from application.memory import IngestTurns, SearchMemory, TurnInput
from domain.memory.ranking import MemoryFilter
from domain.memory.tiers import Tier
from tests.integration.memory.conftest import NOW, FixedClock
from tests.unit.memory_app.hashing import HashEmbedder

TENANTS = ("ta", "tb", "tc")
USERS = ("u1", "u2")
CONVERSATIONS = ("c1", "c2")
WORDS = ("Alice", "Bob", "hiking", "puppy", "cello", "Radiohead", "rain", "coffee", "Paris", "band")
DAY = 86400.0

texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
turns = st.tuples(
    st.sampled_from(TENANTS),
    st.sampled_from(USERS),
    st.sampled_from(CONVERSATIONS),
    texts,
    st.integers(min_value=0, max_value=30),  # days ago
)
filters = st.one_of(
    st.none(),
    st.builds(
        MemoryFilter,
        entities=st.one_of(st.none(), st.frozensets(st.sampled_from(("alice", "bob", "paris", "radiohead")), min_size=1)),
        tiers=st.one_of(st.none(), st.frozensets(st.sampled_from(tuple(Tier)), min_size=1)),
        start=st.one_of(st.none(), st.integers(min_value=0, max_value=30).map(lambda d: NOW - d * DAY)),
        end=st.one_of(st.none(), st.integers(min_value=0, max_value=30).map(lambda d: NOW - d * DAY + 1)),
    ),
)
searches = st.tuples(
    st.sampled_from(TENANTS), st.sampled_from(USERS), texts, st.integers(min_value=1, max_value=10), filters
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(written=st.lists(turns, min_size=1, max_size=12), asked=st.lists(searches, min_size=1, max_size=4))
async def test_no_search_ever_returns_another_tenants_memory(
    engine: AsyncEngine,
    written: list[tuple[str, str, str, str, int]],
    asked: list[tuple[str, str, str, int, MemoryFilter | None]],
) -> None:
    run = uuid.uuid4().hex[:8]  # examples share the database: tenants of their own

    def tenant(name: str) -> str:
        return f"{name}-{run}"

    repo, store, embedder = PostgresMemoryRepository(engine), PgVectorStore(engine), HashEmbedder()
    try:
        ingest = IngestTurns(repo, store, embedder, TimeOrderedIds())
        search = SearchMemory(repo, store, embedder, FixedClock(NOW))
        # (tenant, memory id) -> (user, text, source_id): what each tenant wrote.
        model: dict[tuple[str, str], tuple[str, str, str]] = {}
        counters = dict.fromkeys(TENANTS, 0)
        for name, user, conversation, text, days_ago in written:
            i = counters[name]
            counters[name] += 1
            source = f"{name}:{i}"
            turn = TurnInput(role=user, text=text, at=NOW - days_ago * DAY + i, source_id=source, id=f"m{i}")
            await ingest(tenant(name), user, f"{conversation}-{user}", [turn])
            model[(tenant(name), f"m{i}")] = (user, text, source)

        for name, user, query, k, where in asked:
            response = await search(tenant(name), user, query, k=k, filters=where)
            for result in response.results:
                assert result.source_id is not None and result.source_id.split(":")[0] == name, (
                    f"{tenant(name)} got {result.source_id!r}: another tenant's memory leaked"
                )
                assert (tenant(name), result.id) in model
                owner_user, text, source = model[(tenant(name), result.id)]
                assert (owner_user, source) == (user, result.source_id)
                assert result.text.endswith(text)  # stored as "speaker: text"
            # Through the repository: every returned id is a memory of the querying tenant and user.
            ids = [r.id for r in response.results]
            stored = await repo.get_many(tenant(name), ids)
            assert {m.id for m in stored} == set(ids)
            assert all(m.tenant_id == tenant(name) and m.user_id == user for m in stored)
            # Sanity (so the property is not vacuous): a query naming a word the user wrote, without
            # filters, finds at least one of the user's memories.
            if where is None and any(
                owner == tenant(name) and u == user and set(query.casefold().split()) & set(t.casefold().split())
                for (owner, _), (u, t, _) in model.items()
            ):
                assert response.results, "a matching memory of the querying user was not found"
    finally:
        await repo.aclose()  # the count's kept connections
