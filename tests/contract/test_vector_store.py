"""The one contract every ``VectorStore`` adapter meets, with the same assertions for each: the
in-memory reference, pgvector, Milvus (milvus-lite, embedded), Qdrant (local mode), and Weaviate /
Pinecone when a server is configured (``LUMINA_TEST_WEAVIATE_URL`` / ``LUMINA_TEST_PINECONE_URL``;
CI here has neither, so those two skip with the reason)."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from application.ports import VectorStore
from domain.errors import InvalidRequest
from domain.memory.vectors import MAX_K, Eq, In, MetadataFilter, QueryHit, Range, VectorRecord, cosine_similarity
from tests.contract import vector_stores as kinds

pytestmark = pytest.mark.timeout(120)

DIM = 4


@pytest.fixture(scope="module")
async def pg_engine(database_url: str) -> AsyncIterator[object]:
    from adapters.postgres.engine import create_engine

    engine = create_engine(database_url, pool_size=4)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
def milvus_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from pymilvus import MilvusClient

    client = MilvusClient(kinds.milvus_path(Path(tmp_path_factory.mktemp("milvus"))))
    yield client
    client.close()


@pytest.fixture(scope="module")
async def qdrant_client() -> AsyncIterator[object]:
    from qdrant_client import AsyncQdrantClient

    client = AsyncQdrantClient(location=":memory:")
    yield client
    await client.close()


@pytest.fixture(params=kinds.KINDS)
def factory(request: pytest.FixtureRequest) -> kinds.StoreFactory:
    kind = str(request.param)
    if reason := kinds.skip_reason(kind):
        pytest.skip(reason)
    match kind:
        case "memory":
            return kinds.memory_factory()
        case "pgvector":
            return kinds.pgvector_factory(request.getfixturevalue("pg_engine"))
        case "milvus":
            return kinds.milvus_factory(request.getfixturevalue("milvus_client"))
        case "qdrant":
            return kinds.qdrant_factory(request.getfixturevalue("qdrant_client"))
        case "weaviate":
            return kinds.weaviate_factory()
        case "pinecone":
            return kinds.pinecone_factory()
    raise AssertionError(kind)


@pytest.fixture
async def store(factory: kinds.StoreFactory) -> AsyncIterator[VectorStore]:
    async with factory(DIM) as s:
        yield s


def rec(tenant: str, rid: str, vector: tuple[float, ...], text: str | None = None, **metadata: object) -> VectorRecord:
    return VectorRecord(id=rid, tenant_id=tenant, vector=vector, metadata=metadata, text=text)  # type: ignore[arg-type]


def ids(hits: list[QueryHit]) -> list[str]:
    return [h.id for h in hits]


Q = (1.0, 0.0, 0.0, 0.0)
NEAR = (0.9, 0.1, 0.0, 0.0)
MID = (0.5, 0.5, 0.0, 0.0)
FAR = (0.0, 0.0, 1.0, 0.0)
OPPOSITE = (-1.0, 0.0, 0.0, 0.1)


async def test_nearest_first_with_cosine_similarity_scores(store: VectorStore) -> None:
    await store.upsert(
        "t1",
        [
            rec("t1", "far", FAR, kind="x"),
            rec("t1", "near", NEAR, "near text", kind="y", n=3),
            rec("t1", "mid", MID),
            rec("t1", "opposite", OPPOSITE),
        ],
    )
    hits = await store.query("t1", Q, 4)
    assert ids(hits) == ["near", "mid", "far", "opposite"]
    for hit, vector in zip(hits, (NEAR, MID, FAR, OPPOSITE), strict=True):
        assert hit.score == pytest.approx(cosine_similarity(Q, vector), abs=1e-4)
    assert hits[0].metadata == {"kind": "y", "n": 3}
    assert hits[0].text == "near text"
    assert hits[1].metadata == {} and hits[1].text is None
    assert store.dimension == DIM


async def test_upsert_with_an_existing_id_replaces_vector_metadata_and_text(store: VectorStore) -> None:
    await store.upsert("t1", [rec("t1", "a", NEAR, "old", v=1), rec("t1", "b", MID)])
    await store.upsert("t1", [rec("t1", "a", FAR, "new", v=2, extra="yes")])
    hits = await store.query("t1", Q, 10)
    assert ids(hits) == ["b", "a"]
    replaced = hits[1]
    assert replaced.score == pytest.approx(0.0, abs=1e-4)
    assert replaced.metadata == {"v": 2, "extra": "yes"}
    assert replaced.text == "new"
    # the last of duplicate ids in one call wins
    await store.upsert("t1", [rec("t1", "c", FAR, w=1), rec("t1", "c", NEAR, w=2)])
    top = (await store.query("t1", Q, 1))[0]
    assert (top.id, top.metadata) == ("c", {"w": 2})


async def test_delete_removes_only_the_tenants_records(store: VectorStore) -> None:
    await store.upsert("t1", [rec("t1", "a", NEAR), rec("t1", "b", MID), rec("t1", "c", FAR)])
    await store.upsert("t2", [rec("t2", "a", NEAR)])
    await store.delete("t1", ["a", "c", "never-existed"])
    assert ids(await store.query("t1", Q, 10)) == ["b"]
    assert ids(await store.query("t2", Q, 10)) == ["a"]
    await store.delete("t1", [])
    await store.delete("t2", ["a"])
    assert await store.query("t2", Q, 10) == []


async def test_metadata_filters_eq_in_range_and_their_conjunction(store: VectorStore) -> None:
    await store.upsert(
        "t1",
        [
            rec("t1", "r1", (1.0, 0.0, 0.0, 0.0), kind="fact", n=1, ok=True, w=0.5),
            rec("t1", "r2", (0.9, 0.1, 0.0, 0.0), kind="turn", n=2, ok=False, w=1.5),
            rec("t1", "r3", (0.8, 0.2, 0.0, 0.0), kind="fact", n=3, ok=True, w=2.5),
            rec("t1", "r4", (0.7, 0.3, 0.0, 0.0), kind="summary", n=4, ok=False),
            rec("t1", "r5", (0.6, 0.4, 0.0, 0.0)),
        ],
    )

    async def where(*conditions: Eq | In | Range) -> list[str]:
        return ids(await store.query("t1", Q, 10, MetadataFilter.of(*conditions)))

    assert await where(Eq("kind", "fact")) == ["r1", "r3"]
    assert await where(Eq("n", 2)) == ["r2"]
    assert await where(Eq("ok", True)) == ["r1", "r3"]
    assert await where(Eq("ok", False)) == ["r2", "r4"]
    assert await where(In("kind", ("turn", "summary"))) == ["r2", "r4"]
    assert await where(In("n", (1, 4, 99))) == ["r1", "r4"]
    assert await where(Range("n", gte=2, lt=4)) == ["r2", "r3"]
    assert await where(Range("n", gt=2)) == ["r3", "r4"]
    assert await where(Range("n", lte=1)) == ["r1"]
    assert await where(Range("w", gte=1.0, lte=2.5)) == ["r2", "r3"]
    assert await where(Eq("kind", "fact"), Range("n", gt=1)) == ["r3"]
    assert await where(Eq("kind", "fact"), Eq("kind", "turn")) == []
    assert await where(Eq("missing", "x")) == []
    assert await where() == ["r1", "r2", "r3", "r4", "r5"]
    # filtering happens before the top-k cut: k=1 still finds the best *matching* record
    hits = await store.query("t1", Q, 1, MetadataFilter.of(Eq("kind", "summary")))
    assert ids(hits) == ["r4"]


async def test_k_bounds(store: VectorStore) -> None:
    await store.upsert("t1", [rec("t1", f"r{i}", (1.0, float(i), 0.0, 0.0)) for i in range(5)])
    assert ids(await store.query("t1", Q, 1)) == ["r0"]
    assert ids(await store.query("t1", Q, 3)) == ["r0", "r1", "r2"]
    assert len(await store.query("t1", Q, MAX_K)) == 5
    for bad in (0, -1, MAX_K + 1):
        with pytest.raises(InvalidRequest, match="k"):
            await store.query("t1", Q, bad)


async def test_an_empty_store_and_an_unknown_tenant_return_nothing(store: VectorStore) -> None:
    assert await store.query("t1", Q, 5) == []
    await store.upsert("t1", [rec("t1", "a", NEAR)])
    assert await store.query("nobody", Q, 5) == []
    assert await store.query("nobody", Q, 5, MetadataFilter.of(Eq("a", 1))) == []


async def test_a_dimension_mismatch_is_a_clear_error(store: VectorStore) -> None:
    with pytest.raises(InvalidRequest, match=r"records\[0\]\.vector: dimension mismatch: expected 4 values, got 3"):
        await store.upsert("t1", [rec("t1", "a", (1.0, 0.0, 0.0))])
    with pytest.raises(InvalidRequest, match=r"vector: dimension mismatch: expected 4 values, got 5"):
        await store.query("t1", (1.0, 0.0, 0.0, 0.0, 0.0), 3)
    assert await store.query("t1", Q, 3) == []  # nothing was written


async def test_calls_are_scoped_to_a_valid_tenant(store: VectorStore) -> None:
    with pytest.raises(InvalidRequest, match="tenant_id"):
        await store.upsert("t1", [rec("t2", "a", NEAR)])
    with pytest.raises(InvalidRequest, match="tenant_id"):
        await store.query("", Q, 3)
    with pytest.raises(InvalidRequest, match="tenant_id"):
        await store.delete("bad tenant", ["a"])
    assert await store.query("t1", Q, 3) == [] and await store.query("t2", Q, 3) == []


# -- the tenant-isolation property -----------------------------------------------------------------

TENANTS = ("alpha", "beta", "gamma")
components = st.integers(min_value=-3, max_value=3).map(float)
vectors = st.tuples(components, components, components, components).filter(lambda v: any(v))
record_args = st.tuples(
    st.sampled_from(TENANTS),
    st.sampled_from(("m1", "m2", "m3", "m4", "m5", "m6")),
    vectors,
    st.integers(min_value=0, max_value=4),
    st.sampled_from(("a", "b", "c")),
)
conditions = st.one_of(
    st.builds(Eq, st.just("c"), st.sampled_from(("a", "b", "c"))),
    st.builds(Eq, st.just("n"), st.integers(min_value=0, max_value=4)),
    st.builds(In, st.just("c"), st.lists(st.sampled_from(("a", "b", "c")), min_size=1, max_size=3).map(tuple)),
    st.builds(Range, st.just("n"), gte=st.integers(min_value=0, max_value=4)),
    st.builds(Range, st.just("n"), lt=st.integers(min_value=0, max_value=5)),
)
queries = st.tuples(
    st.sampled_from(TENANTS),
    vectors,
    st.integers(min_value=1, max_value=8),
    st.lists(conditions, max_size=2).map(lambda cs: MetadataFilter(tuple(cs))),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    writes=st.lists(record_args, min_size=1, max_size=20),
    deletes=st.lists(st.tuples(st.sampled_from(TENANTS), st.sampled_from(("m1", "m2", "m3"))), max_size=4),
    asked=st.lists(queries, min_size=1, max_size=5),
)
async def test_no_query_ever_returns_another_tenants_records(
    factory: kinds.StoreFactory,
    writes: list[tuple[str, str, tuple[float, ...], int, str]],
    deletes: list[tuple[str, str]],
    asked: list[tuple[str, tuple[float, ...], int, MetadataFilter]],
) -> None:
    run = uuid.uuid4().hex[:6]  # examples share the store: tenants of their own

    def tenant(name: str) -> str:
        return f"{name}-{run}"

    model: dict[tuple[str, str], VectorRecord] = {}
    async with factory(DIM) as store:
        for t, rid, vector, n, c in writes:
            record = rec(tenant(t), rid, vector, owner=tenant(t), n=n, c=c)
            await store.upsert(tenant(t), [record])
            model[(tenant(t), rid)] = record
        for t, rid in deletes:
            await store.delete(tenant(t), [rid])
            model.pop((tenant(t), rid), None)
        for t, vector, k, where in asked:
            hits = await store.query(tenant(t), vector, k, where)
            mine = {rid: r for (owner, rid), r in model.items() if owner == tenant(t) and where.matches(r.metadata)}
            assert all(h.metadata.get("owner") == tenant(t) for h in hits), "another tenant's record leaked"
            assert {h.id for h in hits} <= set(mine)
            assert len(hits) == min(k, len(mine))
            for hit in hits:
                assert hit.score == pytest.approx(cosine_similarity(vector, mine[hit.id].vector), abs=1e-4)
            scores = [h.score for h in hits]
            assert all(a >= b - 1e-6 for a, b in zip(scores, scores[1:], strict=False))
            assert all(math.isfinite(s) for s in scores)
