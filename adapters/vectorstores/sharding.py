"""Sharding large collections by tenant: ``ShardMap`` sends each tenant to one shard by a stable
hash, ``ShardedVectorStore`` routes every call to its tenant's shard. A shard is any
``VectorStore`` (a pgvector table, another database, another engine), so one tenant's records
always live together and a query touches one shard.

The hash is jump consistent hashing (Lamping & Veach, 2014) over a 64-bit BLAKE2b of the tenant
id: stable across processes and versions, uniform, and growing from n to n+1 shards moves only
about 1/(n+1) of the tenants, all of them to the new shard. ``pins`` override the hash for single
tenants (a hot tenant on a shard of its own).

Rebalancing (see docs/vector-stores.md): build the next map, ``ShardedVectorStore(..., next_map=
next, phase=Phase.DUAL_WRITE)`` writes moved tenants to both shards while reads stay on the old;
backfill their records into the new shard; ``Phase.DUAL_READ`` also merges reads from both shards
(the new shard's copy of an id wins) while results are verified; finally swap to the next map alone
and delete the moved tenants from their old shards.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from application.ports import VectorStore
from domain.memory.vectors import MetadataFilter, QueryHit, VectorRecord

__all__ = ["Phase", "ShardMap", "ShardedVectorStore", "jump_hash", "tenant_key"]


def tenant_key(tenant_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(tenant_id.encode(), digest_size=8).digest(), "big")


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash: a bucket in [0, buckets) for a 64-bit key."""
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


@dataclass(frozen=True)
class ShardMap:
    shards: int
    pins: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError("a shard map needs at least one shard")
        bad = {t: s for t, s in self.pins.items() if not 0 <= s < self.shards}
        if bad:
            raise ValueError(f"pinned shards out of range 0..{self.shards - 1}: {bad}")

    def shard_for(self, tenant_id: str) -> int:
        pinned = self.pins.get(tenant_id)
        return pinned if pinned is not None else jump_hash(tenant_key(tenant_id), self.shards)

    def moves(self, next_map: ShardMap, tenants: Iterable[str]) -> dict[str, tuple[int, int]]:
        """The tenants whose shard differs under ``next_map``: tenant -> (old shard, new shard)."""
        return {
            t: (old, new)
            for t in tenants
            if (old := self.shard_for(t)) != (new := next_map.shard_for(t))
        }


class Phase(enum.Enum):
    DUAL_WRITE = "dual_write"  # writes to old and new shard; reads from the old
    DUAL_READ = "dual_read"  # writes to both; reads merged from both (the new copy wins)


class ShardedVectorStore:
    def __init__(
        self,
        shards: Sequence[VectorStore],
        shard_map: ShardMap | None = None,
        *,
        next_map: ShardMap | None = None,
        phase: Phase = Phase.DUAL_WRITE,
    ) -> None:
        if not shards:
            raise ValueError("at least one shard")
        dimensions = {s.dimension for s in shards}
        if len(dimensions) != 1:
            raise ValueError(f"all shards must share one dimension, got {sorted(dimensions)}")
        self._shards = list(shards)
        self._map = shard_map or ShardMap(len(shards))
        self._next = next_map
        self._phase = phase
        for m in (self._map, self._next):
            if m is not None and m.shards > len(self._shards):
                raise ValueError(f"the shard map has {m.shards} shards, only {len(self._shards)} stores were given")

    @property
    def dimension(self) -> int:
        return self._shards[0].dimension

    @property
    def shard_map(self) -> ShardMap:
        return self._map

    def shard_of(self, tenant_id: str) -> VectorStore:
        return self._shards[self._map.shard_for(tenant_id)]

    def _targets(self, tenant_id: str) -> tuple[int, int | None]:
        """(current shard, shard it is moving to, if it is moving)."""
        old = self._map.shard_for(tenant_id)
        new = self._next.shard_for(tenant_id) if self._next is not None else old
        return old, (new if new != old else None)

    async def upsert(self, tenant_id: str, records: Sequence[VectorRecord]) -> None:
        old, new = self._targets(tenant_id)
        await self._shards[old].upsert(tenant_id, records)
        if new is not None:
            await self._shards[new].upsert(tenant_id, records)

    async def delete(self, tenant_id: str, ids: Sequence[str]) -> None:
        old, new = self._targets(tenant_id)
        await self._shards[old].delete(tenant_id, ids)
        if new is not None:
            await self._shards[new].delete(tenant_id, ids)

    async def query(
        self, tenant_id: str, vector: Sequence[float], k: int, filter: MetadataFilter | None = None
    ) -> list[QueryHit]:
        old, new = self._targets(tenant_id)
        if new is None or self._phase is Phase.DUAL_WRITE:
            return await self._shards[old].query(tenant_id, vector, k, filter)
        from_old, from_new = await asyncio.gather(
            self._shards[old].query(tenant_id, vector, k, filter),
            self._shards[new].query(tenant_id, vector, k, filter),
        )
        merged = {h.id: h for h in from_old} | {h.id: h for h in from_new}
        return sorted(merged.values(), key=lambda h: (-h.score, h.id))[:k]
