"""Tenant-hash shard map and routing, over in-memory stores (the routing logic is what is tested)."""

from __future__ import annotations

import pytest

from adapters.vectorstores.memory import InMemoryVectorStore
from adapters.vectorstores.sharding import Phase, ShardedVectorStore, ShardMap, jump_hash
from domain.memory.vectors import VectorRecord

TENANTS = [f"tenant-{i}" for i in range(2000)]
Q = (1.0, 0.0)
PINNED = [4, 1, 6, 3]  # recorded once (jump hash over BLAKE2b-64): a change here moves tenants


def test_the_shard_map_is_stable_and_uniform() -> None:
    # fixed values: the map must never change between processes or releases
    pinned_values = [ShardMap(8).shard_for(t) for t in ("acme", "globex", "initech", "umbrella")]
    assert pinned_values == PINNED
    assert [jump_hash(k, 10) for k in (0, 1, 2**63, 12345678901234567)] == [0, 6, 5, 5]
    counts = [0] * 8
    for t in TENANTS:
        counts[ShardMap(8).shard_for(t)] += 1
    assert min(counts) > 2000 / 8 * 0.8 and max(counts) < 2000 / 8 * 1.2


def test_adding_a_shard_moves_about_one_tenant_in_n_and_only_to_the_new_shard() -> None:
    moves = ShardMap(8).moves(ShardMap(9), TENANTS)
    assert 0.07 < len(moves) / len(TENANTS) < 0.16  # ~1/9
    assert {new for _, new in moves.values()} == {8}


def test_pins_override_the_hash() -> None:
    pinned = ShardMap(4, pins={"big-tenant": 3})
    assert pinned.shard_for("big-tenant") == 3
    with pytest.raises(ValueError, match="out of range"):
        ShardMap(2, pins={"x": 5})


async def test_the_sharded_store_routes_each_tenant_to_its_shard_only() -> None:
    shards = [InMemoryVectorStore(2) for _ in range(3)]
    store = ShardedVectorStore(shards)
    for t in TENANTS[:30]:
        await store.upsert(t, [VectorRecord("m", t, (1.0, 0.0), {"owner": t})])
    for t in TENANTS[:30]:
        home = store.shard_map.shard_for(t)
        for i, shard in enumerate(shards):
            assert len(await shard.query(t, Q, 5)) == (1 if i == home else 0)
        assert [h.metadata["owner"] for h in await store.query(t, Q, 5)] == [t]
    await store.delete(TENANTS[0], ["m"])
    assert await store.query(TENANTS[0], Q, 5) == []


async def test_rebalancing_dual_writes_then_dual_reads_then_cuts_over() -> None:
    shards = [InMemoryVectorStore(2) for _ in range(3)]
    old, new = ShardMap(2), ShardMap(3)
    moving = next(t for t in TENANTS if old.shard_for(t) != new.shard_for(t))
    staying = next(t for t in TENANTS if old.shard_for(t) == new.shard_for(t))
    before = ShardedVectorStore(shards, old)
    await before.upsert(moving, [VectorRecord("a", moving, (1.0, 0.0))])

    writing = ShardedVectorStore(shards, old, next_map=new, phase=Phase.DUAL_WRITE)
    await writing.upsert(moving, [VectorRecord("b", moving, (1.0, 0.1))])
    await writing.upsert(staying, [VectorRecord("s", staying, (1.0, 0.0))])
    assert [h.id for h in await shards[new.shard_for(moving)].query(moving, Q, 5)] == ["b"]  # not yet backfilled
    assert [h.id for h in await writing.query(moving, Q, 5)] == ["a", "b"]  # reads stay on the old shard
    assert len(await shards[2].query(staying, Q, 5)) == (1 if new.shard_for(staying) == 2 else 0)

    # backfill the moved tenant's records, then read from both while verifying
    await shards[new.shard_for(moving)].upsert(moving, [VectorRecord("a", moving, (1.0, 0.0))])
    reading = ShardedVectorStore(shards, old, next_map=new, phase=Phase.DUAL_READ)
    await reading.delete(moving, ["b"])
    assert [h.id for h in await reading.query(moving, Q, 5)] == ["a"]

    after = ShardedVectorStore(shards, new)
    assert [h.id for h in await after.query(moving, Q, 5)] == ["a"]
    assert [h.id for h in await after.query(staying, Q, 5)] == ["s"]
