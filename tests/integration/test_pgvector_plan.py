"""pgvector at a size where the planner's choice matters: the tenant-scoped query walks the HNSW
index of the tenant's partition only, and iterative index scans fill ``k`` under a selective
metadata filter where a plain HNSW scan would come back short."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.postgres.engine import create_engine
from adapters.postgres.vector_tables import collection_ddl, drop_collection
from adapters.vectorstores.pgvector import PgVectorStore
from domain.memory.vectors import Eq, MetadataFilter, VectorRecord, cosine_similarity

pytestmark = pytest.mark.timeout(120)

DIM = 384  # all-MiniLM-L6-v2
TENANTS = ("acme", "globex")
PER_TENANT = 2000
RARE = 25  # one record in RARE carries kind="rare"


def _vector(rng: random.Random) -> tuple[float, ...]:
    return tuple(rng.gauss(0.0, 1.0) for _ in range(DIM))


@pytest.fixture(scope="module")
async def loaded(database_url: str) -> AsyncIterator[tuple[AsyncEngine, PgVectorStore, dict[str, list[VectorRecord]]]]:
    engine = create_engine(database_url, pool_size=2)
    store = await PgVectorStore.open(engine, "plan_test", DIM, partitions=4)
    # bulk load as an operator would: without the HNSW index, then build it once
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP INDEX ix_vectors_plan_test_embedding"))
    rng = random.Random(7)
    data: dict[str, list[VectorRecord]] = {}
    for tenant in TENANTS:
        records = [
            VectorRecord(f"m{i}", tenant, _vector(rng), {"kind": "rare" if i % RARE == 0 else "common", "i": i})
            for i in range(PER_TENANT)
        ]
        await store.upsert(tenant, records)
        data[tenant] = records
    async with engine.begin() as conn:
        await conn.execute(sa.text("SET LOCAL maintenance_work_mem = '256MB'"))
        for statement in collection_ddl("plan_test", DIM, 4):
            if "USING hnsw" in statement:
                await conn.execute(sa.text(statement))
        await conn.execute(sa.text(f"ANALYZE {store.table}"))
    yield engine, store, data
    async with engine.begin() as conn:
        await drop_collection(conn, "plan_test")
    await engine.dispose()


async def _explain(engine: AsyncEngine, store: PgVectorStore, tenant: str, k: int, where: MetadataFilter) -> dict:  # type: ignore[type-arg]
    params: dict[str, object] = {"t": tenant, "q": "[" + ",".join(["0.1"] * DIM) + "]", "k": k}
    sql = store.query_sql(k, where, params)
    async with engine.begin() as conn:
        for setting in store.session_settings(k):
            await conn.execute(sa.text(setting))
        raw = (await conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {sql}"), params)).scalar_one()
    plan = raw if isinstance(raw, list) else json.loads(raw)
    return plan[0]["Plan"]  # type: ignore[no-any-return]


def _nodes(plan: dict) -> list[dict]:  # type: ignore[type-arg]
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


@pytest.mark.parametrize("where", [MetadataFilter(), MetadataFilter.of(Eq("kind", "common"))], ids=["no-filter", "filter"])
async def test_the_tenant_query_walks_the_hnsw_index_of_one_partition(loaded, where: MetadataFilter) -> None:  # type: ignore[no-untyped-def]
    engine, store, _ = loaded
    nodes = _nodes(await _explain(engine, store, "acme", 10, where))
    scans = [n for n in nodes if "Relation Name" in n]
    assert len(scans) == 1, f"partition pruning failed: {[n['Relation Name'] for n in scans]}"
    scan = scans[0]
    assert scan["Node Type"] == "Index Scan", scan["Node Type"]
    assert scan["Index Name"].endswith("_embedding_idx") and scan["Relation Name"].startswith("vectors_plan_test_p")
    assert "tenant_id = 'acme'" in scan["Filter"]
    assert not any(n["Node Type"] == "Seq Scan" for n in nodes)


async def test_a_very_selective_filter_plans_an_exact_gin_scan_instead(loaded) -> None:  # type: ignore[no-untyped-def]
    engine, store, data = loaded
    nodes = _nodes(await _explain(engine, store, "acme", 10, MetadataFilter.of(Eq("kind", "rare"))))
    assert any(n.get("Index Name", "").endswith("_metadata_idx") for n in nodes)
    query = _vector(random.Random(3))
    hits = await store.query("acme", query, 20, MetadataFilter.of(Eq("kind", "rare")))
    exact = sorted((r for r in data["acme"] if r.metadata["kind"] == "rare"), key=lambda r: -cosine_similarity(query, r.vector))
    assert [h.id for h in hits] == [r.id for r in exact[:20]]


async def test_iterative_index_scans_fill_k_where_a_plain_hnsw_scan_comes_back_short(loaded) -> None:  # type: ignore[no-untyped-def]
    engine, store, data = loaded
    query = _vector(random.Random(11))
    rare = MetadataFilter.of(Eq("kind", "rare"))
    params: dict[str, object] = {"t": "globex", "q": "[" + ",".join(map(str, query)) + "]", "k": 20}
    sql = store.query_sql(20, rare, params)

    async def run(iterative: bool) -> list[str]:
        async with engine.begin() as conn:
            for setting in store.session_settings(20):
                await conn.execute(sa.text(setting))
            if not iterative:
                await conn.execute(sa.text("SET LOCAL hnsw.iterative_scan = off"))
            for method in ("seqscan", "bitmapscan", "sort"):  # keep the HNSW plan for both runs
                await conn.execute(sa.text(f"SET LOCAL enable_{method} = off"))
            plan = (await conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {sql}"), params)).scalar_one()
            plan = plan if isinstance(plan, list) else json.loads(plan)
            assert any(n.get("Index Name", "").endswith("_embedding_idx") for n in _nodes(plan[0]["Plan"]))
            return [row.id for row in (await conn.execute(sa.text(sql), params)).all()]

    with_iterative, plain = await run(True), await run(False)
    assert len(with_iterative) == 20
    assert len(plain) < 20
    exact = sorted(
        (r for r in data["globex"] if r.metadata["kind"] == "rare"), key=lambda r: -cosine_similarity(query, r.vector)
    )[:20]
    recall = len(set(with_iterative) & {r.id for r in exact}) / 20
    assert recall >= 0.8, recall
