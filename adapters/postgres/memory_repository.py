"""``MemoryRepository`` on PostgreSQL (tables in ``memory_tables``). Every statement carries
``tenant_id = :tenant`` (primary keys and indexes lead with it).

With ``vector_collection`` (a pgvector collection, e.g. ``"memory"``), ``get_many``
also reads each memory's embedding (LEFT JOIN on ``(tenant_id, id)`` in the same statement), so
search's MMR compares candidates by cosine; a memory without a row there has ``vector=None``. Off
by default: on the LoCoMo slice it cost recall and time (see docs/memory.md).

Full-text search: the query's words are joined with ``or`` and parsed by
``websearch_to_tsquery('english', ...)`` (which drops stopwords and never fails on user input),
so a memory matching any word is a hit; hits are ordered by ``ts_rank`` (normalised by document
length, option 1), then id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.postgres.errors import translate_errors
from adapters.postgres.memory_tables import (
    memories,
    memory_edges,
    memory_entities,
    memory_topics,
)
from adapters.postgres.vector_tables import collection_table
from application.memory.ports import StoredMemory
from domain.memory.graph import Edge
from domain.memory.ranking import MemoryFilter
from domain.memory.tiers import Tier
from domain.memory.topics import Topic

__all__ = ["PostgresMemoryRepository", "websearch_any"]

_WORD = re.compile(r"[^\W_]+")
_OPERATORS = {"or", "and", "not"}


def websearch_any(query: str) -> str:
    """``query``'s words joined by ``or`` (websearch syntax): any of them may match."""
    return " or ".join(w for w in _WORD.findall(query) if w.casefold() not in _OPERATORS)


def _ts(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def _row(memory: StoredMemory) -> dict[str, object]:
    return {
        "tenant_id": memory.tenant_id,
        "id": memory.id,
        "user_id": memory.user_id,
        "conversation_id": memory.conversation_id,
        "tier": memory.tier.value,
        "role": memory.role,
        "text": memory.text,
        "occurred_at": _ts(memory.at),
        "importance": memory.importance,
        "topic_id": memory.topic_id,
        "entities": list(memory.entities),
        "source_id": memory.source_id,
    }


def _memory(row: sa.Row[tuple[object, ...]]) -> StoredMemory:
    m = row._mapping
    return StoredMemory(
        id=m["id"],
        tenant_id=m["tenant_id"],
        user_id=m["user_id"],
        conversation_id=m["conversation_id"],
        tier=Tier(m["tier"]),
        text=m["text"],
        at=m["occurred_at"].timestamp(),
        role=m["role"],
        importance=float(m["importance"]),
        topic_id=m["topic_id"],
        entities=tuple(m["entities"]),
        source_id=m["source_id"],
        vector=tuple(vector) if (vector := m.get("vector")) is not None else None,
    )


_COLUMNS = [c for c in memories.c if c.name != "tsv"]


class PostgresMemoryRepository:
    def __init__(self, engine: AsyncEngine, vector_collection: str | None = None) -> None:
        self._engine = engine
        self._vectors = (
            None
            if vector_collection is None
            else sa.table(
                collection_table(vector_collection), sa.column("tenant_id"), sa.column("id"), sa.column("embedding")
            )
        )

    async def add(self, tenant_id: str, memories_: Sequence[StoredMemory]) -> None:
        if not memories_:
            return
        if any(m.tenant_id != tenant_id for m in memories_):
            raise ValueError("every memory must belong to tenant_id")
        statement = insert(memories)
        statement = statement.on_conflict_do_update(
            index_elements=[memories.c.tenant_id, memories.c.id],
            set_={c.name: statement.excluded[c.name] for c in _COLUMNS if c.name not in ("tenant_id", "id", "created_at")},
        )
        async with translate_errors("memory add"), self._engine.begin() as conn:
            await conn.execute(statement, [_row(m) for m in memories_])

    async def get_many(self, tenant_id: str, ids: Iterable[str]) -> list[StoredMemory]:
        wanted = sorted(set(ids))
        if not wanted:
            return []
        statement = sa.select(*_COLUMNS).where(memories.c.tenant_id == tenant_id, memories.c.id.in_(wanted))
        if self._vectors is not None:
            v = self._vectors.c
            statement = statement.add_columns(sa.cast(v.embedding, ARRAY(sa.REAL)).label("vector")).outerjoin(
                self._vectors, sa.and_(v.tenant_id == memories.c.tenant_id, v.id == memories.c.id)
            )
        async with translate_errors("memory get"), self._engine.connect() as conn:
            return [_memory(r) for r in (await conn.execute(statement)).all()]

    async def latest(self, tenant_id: str, conversation_id: str) -> StoredMemory | None:
        statement = (
            sa.select(*_COLUMNS)
            .where(memories.c.tenant_id == tenant_id, memories.c.conversation_id == conversation_id)
            .order_by(memories.c.occurred_at.desc(), memories.c.id.desc())
            .limit(1)
        )
        async with translate_errors("memory latest"), self._engine.connect() as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else _memory(row)

    async def fulltext(
        self, tenant_id: str, user_id: str, query: str, k: int, filters: MemoryFilter | None = None
    ) -> list[str]:
        words = websearch_any(query)
        if not words:
            return []
        tsquery = sa.func.websearch_to_tsquery(sa.literal_column("'english'::regconfig"), words)
        score = sa.func.ts_rank(memories.c.tsv, tsquery, 1).label("score")
        conditions = [
            memories.c.tenant_id == tenant_id,
            memories.c.user_id == user_id,
            memories.c.tsv.op("@@")(tsquery),
        ]
        if filters is not None:
            if filters.tiers is not None:
                conditions.append(memories.c.tier.in_(sorted(t.value for t in filters.tiers)))
            if filters.start is not None:
                conditions.append(memories.c.occurred_at >= _ts(filters.start))
            if filters.end is not None:
                conditions.append(memories.c.occurred_at < _ts(filters.end))
            if filters.topics is not None:
                conditions.append(memories.c.topic_id.in_(sorted(filters.topics)))
            if filters.entities is not None:
                conditions.append(memories.c.entities.overlap(sorted(filters.entities)))
        statement = sa.select(memories.c.id, score).where(*conditions).order_by(score.desc(), memories.c.id).limit(k)
        async with translate_errors("memory full-text search"), self._engine.connect() as conn:
            return [r.id for r in (await conn.execute(statement)).all()]

    async def topics(self, tenant_id: str, user_id: str) -> list[Topic]:
        statement = (
            sa.select(memory_topics.c.id, memory_topics.c.centroid, memory_topics.c.size)
            .where(memory_topics.c.tenant_id == tenant_id, memory_topics.c.user_id == user_id)
            .order_by(memory_topics.c.seq)
        )
        async with translate_errors("memory topics"), self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [Topic(r.id, tuple(r.centroid), r.size) for r in rows]

    async def save_topics(
        self, tenant_id: str, user_id: str, topics: Sequence[Topic], labels: Mapping[str, str]
    ) -> None:
        if not topics:
            return
        statement = insert(memory_topics)
        statement = statement.on_conflict_do_update(
            index_elements=[memory_topics.c.tenant_id, memory_topics.c.id],
            set_={
                "centroid": statement.excluded.centroid,
                "size": statement.excluded.size,
                "label": statement.excluded.label,
                "updated_at": sa.func.now(),
            },
            where=memory_topics.c.user_id == user_id,
        )
        rows = [
            {
                "tenant_id": tenant_id,
                "id": t.id,
                "user_id": user_id,
                "centroid": list(t.centroid),
                "size": t.size,
                "label": labels.get(t.id, ""),
            }
            for t in topics
        ]
        async with translate_errors("memory topics save"), self._engine.begin() as conn:
            await conn.execute(statement, rows)

    async def add_entities(self, tenant_id: str, entities: Mapping[str, str]) -> None:
        if not entities:
            return
        statement = insert(memory_entities).on_conflict_do_nothing()
        rows = [{"tenant_id": tenant_id, "id": i, "label": label} for i, label in sorted(entities.items())]
        async with translate_errors("memory entities add"), self._engine.begin() as conn:
            await conn.execute(statement, rows)

    async def add_edges(self, tenant_id: str, edges: Sequence[Edge]) -> None:
        if not edges:
            return
        statement = insert(memory_edges).on_conflict_do_nothing()
        rows = [
            {"tenant_id": tenant_id, "source": e.source, "target": e.target, "kind": e.kind, "weight": e.weight}
            for e in edges
        ]
        async with translate_errors("memory edges add"), self._engine.begin() as conn:
            await conn.execute(statement, rows)

    async def edges_touching(self, tenant_id: str, node_ids: Iterable[str], kinds: Iterable[str]) -> list[Edge]:
        ids, wanted = sorted(set(node_ids)), sorted(set(kinds))
        if not ids or not wanted:
            return []
        e = memory_edges.c
        statement = (
            sa.select(e.source, e.target, e.kind, e.weight)
            .where(e.tenant_id == tenant_id, e.kind.in_(wanted), sa.or_(e.source.in_(ids), e.target.in_(ids)))
            .order_by(e.source, e.target, e.kind)
        )
        async with translate_errors("memory edges"), self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [Edge(r.source, r.target, r.kind, float(r.weight)) for r in rows]
