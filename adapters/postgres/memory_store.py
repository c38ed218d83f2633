"""``PostgresMemoryStore``: ``PostgresMemoryRepository`` plus what the MemoryService and
consolidation need (``application.memory.manage.MemoryAdminStore`` and
``application.memory.consolidate.ConsolidationStore``): views with fact columns, keyset pages,
updates, deletes with their edges and observations, merges, observations, facts, importance decay
and a per-user advisory lock.

Every statement carries ``tenant_id = :tenant`` except ``scopes`` (the worker's list of users to
sweep). Facts are rows of ``memories`` with ``tier = 'semantic'`` and a ``fact_key`` (normalised
subject and predicate joined by U+001F); their ``occurred_at`` is ``valid_from``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.postgres.errors import translate_errors
from adapters.postgres.memory_repository import PostgresMemoryRepository
from adapters.postgres.memory_tables import (
    memories,
    memory_edges,
    memory_observations,
    memory_topics,
)
from application.memory.manage import MemoryView, TopicView
from application.memory.ports import StoredMemory
from domain.memory.consolidation import Observation
from domain.memory.graph import Edge
from domain.memory.ranking import MemoryFilter
from domain.memory.tiers import Fact, Tier, fact_key, normalize_term

__all__ = ["PostgresMemoryStore", "encode_fact_key"]

_SEP = "\x1f"
_BASE = [c for c in memories.c if c.name not in ("tsv", "window_tsv")]

# Take a memory out of its conversation's ``follows`` chain: whatever followed it now follows
# whatever it followed (chains stay inside one conversation). Returns those neighbours' ids.
_SPLICE = (
    "INSERT INTO memory_edges (tenant_id, source, target, kind, weight) "
    "SELECT n.tenant_id, n.source, p.target, 'follows', 1 "
    "FROM memory_edges n JOIN memory_edges p ON p.tenant_id = n.tenant_id AND p.source = n.target "
    "AND p.kind = 'follows' "
    "WHERE n.tenant_id = :t AND n.target = :drop AND n.kind = 'follows' AND n.source <> p.target "
    "ON CONFLICT DO NOTHING"
)
_NEIGHBOURS = (
    "SELECT CASE WHEN source = :drop THEN target ELSE source END AS id FROM memory_edges "
    "WHERE tenant_id = :t AND kind = 'follows' AND (source = :drop OR target = :drop)"
)


async def _splice(conn: AsyncConnection, tenant_id: str, drop_id: str) -> set[str]:
    params = {"t": tenant_id, "drop": drop_id}
    neighbours = set((await conn.execute(sa.text(_NEIGHBOURS), params)).scalars().all())
    await conn.execute(sa.text(_SPLICE), params)
    return neighbours


def encode_fact_key(subject: str, predicate: str) -> str:
    return _SEP.join(fact_key(subject, predicate))


def _ts(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def _stored(m: Mapping[str, object]) -> StoredMemory:
    return StoredMemory(
        id=m["id"],  # type: ignore[arg-type]
        tenant_id=m["tenant_id"],  # type: ignore[arg-type]
        user_id=m["user_id"],  # type: ignore[arg-type]
        conversation_id=m["conversation_id"],  # type: ignore[arg-type]
        tier=Tier(m["tier"]),
        text=m["text"],  # type: ignore[arg-type]
        at=m["occurred_at"].timestamp(),  # type: ignore[attr-defined]
        role=m["role"],  # type: ignore[arg-type]
        importance=float(m["importance"]),  # type: ignore[arg-type]
        topic_id=m["topic_id"],  # type: ignore[arg-type]
        entities=tuple(m["entities"]),  # type: ignore[arg-type]
        source_id=m["source_id"],  # type: ignore[arg-type]
    )


def _view(row: sa.Row[tuple[object, ...]]) -> MemoryView:
    m = row._mapping
    valid_to = m["valid_to"]
    return MemoryView(
        _stored(m),
        subject=m["subject"],
        predicate=m["predicate"],
        object=m["object"],
        valid_to=None if valid_to is None else valid_to.timestamp(),
    )


def _filtered(statement: sa.Select[tuple[object, ...]], filters: MemoryFilter | None) -> sa.Select[tuple[object, ...]]:
    if filters is None:
        return statement
    c = memories.c
    if filters.tiers is not None:
        statement = statement.where(c.tier.in_(sorted(t.value for t in filters.tiers)))
    if filters.start is not None:
        statement = statement.where(c.occurred_at >= _ts(filters.start))
    if filters.end is not None:
        statement = statement.where(c.occurred_at < _ts(filters.end))
    if filters.topics is not None:
        statement = statement.where(c.topic_id.in_(sorted(filters.topics)))
    if filters.entities is not None:
        statement = statement.where(c.entities.overlap(sorted(filters.entities)))
    return statement


class PostgresMemoryStore(PostgresMemoryRepository):
    # --- MemoryAdminStore ---------------------------------------------------------------------

    async def views(self, tenant_id: str, ids: Iterable[str]) -> list[MemoryView]:
        wanted = sorted(set(ids))
        if not wanted:
            return []
        statement = sa.select(*_BASE).where(memories.c.tenant_id == tenant_id, memories.c.id.in_(wanted))
        async with translate_errors("memory views"), self._engine.connect() as conn:
            return [_view(r) for r in (await conn.execute(statement)).all()]

    async def page(
        self, tenant_id: str, user_id: str, after: tuple[float, str] | None, limit: int, filters: MemoryFilter | None
    ) -> list[MemoryView]:
        c = memories.c
        statement = sa.select(*_BASE).where(c.tenant_id == tenant_id, c.user_id == user_id)
        if after is not None:
            statement = statement.where(sa.tuple_(c.occurred_at, c.id) > sa.tuple_(sa.literal(_ts(after[0])), sa.literal(after[1])))
        statement = _filtered(statement, filters).order_by(c.occurred_at, c.id).limit(limit)
        async with translate_errors("memory page"), self._engine.connect() as conn:
            return [_view(r) for r in (await conn.execute(statement)).all()]

    async def topic_views(self, tenant_id: str, user_id: str) -> list[TopicView]:
        t = memory_topics.c
        statement = (
            sa.select(t.id, t.label, t.size).where(t.tenant_id == tenant_id, t.user_id == user_id).order_by(t.seq)
        )
        async with translate_errors("memory topics"), self._engine.connect() as conn:
            return [TopicView(r.id, r.label, r.size) for r in (await conn.execute(statement)).all()]

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
        values: dict[str, object] = {}
        if text is not None:
            values["text"] = text
        if importance is not None:
            values["importance"] = importance
            values["importance_at"] = _ts(at) if at is not None else sa.func.now()
        if tier is not None:
            values["tier"] = tier.value
        if entities is not None:
            values["entities"] = list(entities)
        if not values:
            return
        statement = memories.update().where(memories.c.tenant_id == tenant_id, memories.c.id == memory_id).values(values)
        async with translate_errors("memory update"), self._engine.begin() as conn:
            await conn.execute(statement)

    async def replace_mentions(self, tenant_id: str, memory_id: str, entities: dict[str, str]) -> None:
        e = memory_edges.c
        async with translate_errors("memory mentions"), self._engine.begin() as conn:
            await conn.execute(
                memory_edges.delete().where(e.tenant_id == tenant_id, e.source == memory_id, e.kind == "mentions")
            )
            if entities:
                await conn.execute(
                    sa.text(
                        "INSERT INTO memory_entities (tenant_id, id, label) VALUES (:t, :id, :label) "
                        "ON CONFLICT DO NOTHING"
                    ),
                    [{"t": tenant_id, "id": i, "label": label} for i, label in sorted(entities.items())],
                )
                await conn.execute(
                    insert(memory_edges).on_conflict_do_nothing(),
                    [{"tenant_id": tenant_id, "source": memory_id, "target": i, "kind": "mentions", "weight": 1.0} for i in sorted(entities)],
                )

    async def delete(self, tenant_id: str, ids: Sequence[str]) -> list[str]:
        wanted = sorted(set(ids))
        if not wanted:
            return []
        e, o = memory_edges.c, memory_observations.c
        neighbours: set[str] = set()
        async with translate_errors("memory delete"), self._engine.begin() as conn:
            for memory_id in wanted:
                neighbours |= await _splice(conn, tenant_id, memory_id)
            await conn.execute(memories.delete().where(memories.c.tenant_id == tenant_id, memories.c.id.in_(wanted)))
            await conn.execute(
                memory_edges.delete().where(e.tenant_id == tenant_id, sa.or_(e.source.in_(wanted), e.target.in_(wanted)))
            )
            await conn.execute(memory_observations.delete().where(o.tenant_id == tenant_id, o.turn_id.in_(wanted)))
        return sorted(neighbours - set(wanted))

    # --- ConsolidationStore -------------------------------------------------------------------

    @asynccontextmanager
    async def lock(self, tenant_id: str, user_id: str) -> AsyncIterator[None]:
        key = int.from_bytes(hashlib.blake2b(f"memory\0{tenant_id}\0{user_id}".encode(), digest_size=8).digest(), "big", signed=True)
        async with translate_errors("memory lock"), self._engine.connect() as conn:
            await conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            await conn.commit()
            try:
                yield
            finally:
                await conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                await conn.commit()

    async def pending(self, tenant_id: str, user_id: str, limit: int) -> list[StoredMemory]:
        c = memories.c
        statement = (
            sa.select(*_BASE)
            .where(
                c.tenant_id == tenant_id,
                c.user_id == user_id,
                sa.not_(c.consolidated),
                c.tier == Tier.EPISODIC.value,
                c.role != "summary",
            )
            .order_by(c.occurred_at, c.id)
            .limit(limit)
        )
        async with translate_errors("memory pending"), self._engine.connect() as conn:
            return [_stored(r._mapping) for r in (await conn.execute(statement)).all()]

    async def mark_consolidated(self, tenant_id: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        statement = (
            memories.update()
            .where(memories.c.tenant_id == tenant_id, memories.c.id.in_(sorted(set(ids))))
            .values(consolidated=True)
        )
        async with translate_errors("memory mark consolidated"), self._engine.begin() as conn:
            await conn.execute(statement)

    async def merge(self, tenant_id: str, keep_id: str, drop_id: str, importance: float, at: float) -> list[str]:
        params = {"t": tenant_id, "keep": keep_id, "drop": drop_id}
        async with translate_errors("memory merge"), self._engine.begin() as conn:
            neighbours = await _splice(conn, tenant_id, drop_id)
            await conn.execute(
                sa.text(
                    "INSERT INTO memory_edges (tenant_id, source, target, kind, weight) "
                    "SELECT tenant_id, CASE WHEN source = :drop THEN :keep ELSE source END, "
                    "CASE WHEN target = :drop THEN :keep ELSE target END, kind, weight "
                    "FROM memory_edges WHERE tenant_id = :t AND (source = :drop OR target = :drop) "
                    "AND kind <> 'follows' AND NOT (source IN (:drop, :keep) AND target IN (:drop, :keep)) "
                    "ON CONFLICT DO NOTHING"
                ),
                params,
            )
            await conn.execute(
                sa.text("DELETE FROM memory_edges WHERE tenant_id = :t AND (source = :drop OR target = :drop)"), params
            )
            await conn.execute(
                sa.text("DELETE FROM memory_observations WHERE tenant_id = :t AND turn_id = :drop"), params
            )
            await conn.execute(sa.text("DELETE FROM memories WHERE tenant_id = :t AND id = :drop"), params)
            await conn.execute(
                memories.update()
                .where(memories.c.tenant_id == tenant_id, memories.c.id == keep_id)
                .values(importance=importance, importance_at=_ts(at))
            )
        return sorted(neighbours - {drop_id})

    async def add_observations(self, tenant_id: str, user_id: str, observations: Sequence[Observation]) -> None:
        if not observations:
            return
        rows = {
            (o.turn_id, o.session_id, encode_fact_key(o.subject, o.predicate), normalize_term(o.object)): {
                "tenant_id": tenant_id,
                "turn_id": o.turn_id,
                "fact_key": encode_fact_key(o.subject, o.predicate),
                "object_key": normalize_term(o.object),
                "user_id": user_id,
                "subject": o.subject,
                "predicate": o.predicate,
                "object": o.object,
                "text": o.text,
                "session_id": o.session_id,
                "occurred_at": _ts(o.at),
            }
            for o in observations
        }
        async with translate_errors("memory observations add"), self._engine.begin() as conn:
            await conn.execute(insert(memory_observations).on_conflict_do_nothing(), list(rows.values()))

    async def forget_observations(self, tenant_id: str, user_id: str, retraction: Observation) -> None:
        o = memory_observations.c
        statement = memory_observations.delete().where(
            o.tenant_id == tenant_id,
            o.user_id == user_id,
            o.fact_key == encode_fact_key(retraction.subject, retraction.predicate),
            o.occurred_at <= _ts(retraction.at),
        )
        if normalize_term(retraction.object):
            statement = statement.where(o.object_key == normalize_term(retraction.object))
        async with translate_errors("memory observations forget"), self._engine.begin() as conn:
            await conn.execute(statement)

    async def observations(self, tenant_id: str, user_id: str, keys: Iterable[tuple[str, str]]) -> list[Observation]:
        wanted = sorted({_SEP.join(k) for k in keys})
        if not wanted:
            return []
        o = memory_observations.c
        statement = (
            sa.select(o.subject, o.predicate, o.object, o.text, o.session_id, o.turn_id, o.occurred_at)
            .where(o.tenant_id == tenant_id, o.user_id == user_id, o.fact_key.in_(wanted))
            .order_by(o.occurred_at, o.turn_id)
        )
        async with translate_errors("memory observations"), self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [
            Observation(r.subject, r.predicate, r.object, r.text, r.session_id, r.turn_id, r.occurred_at.timestamp())
            for r in rows
        ]

    async def facts(self, tenant_id: str, user_id: str, keys: Iterable[tuple[str, str]]) -> list[Fact]:
        wanted = sorted({_SEP.join(k) for k in keys})
        if not wanted:
            return []
        c, e = memories.c, memory_edges.c
        sources = (
            sa.select(sa.func.array_agg(aggregate_order_by(e.target, e.target)))
            .where(e.tenant_id == c.tenant_id, e.source == c.id, e.kind == "derived_from")
            .scalar_subquery()
        )
        supersedes = (
            sa.select(e.target)
            .where(e.tenant_id == c.tenant_id, e.source == c.id, e.kind == "supersedes")
            .limit(1)
            .scalar_subquery()
        )
        statement = (
            sa.select(*_BASE, sources.label("sources"), supersedes.label("supersedes"))
            .where(c.tenant_id == tenant_id, c.user_id == user_id, c.fact_key.in_(wanted))
            .order_by(c.occurred_at, c.id)
        )
        async with translate_errors("memory facts"), self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        facts = []
        for r in rows:
            m = r._mapping
            facts.append(
                Fact(
                    id=m["id"],
                    subject=m["subject"],
                    predicate=m["predicate"],
                    object=m["object"],
                    text=m["text"],
                    source_turn_ids=tuple(m["sources"] or ()) or (m["id"],),
                    valid_from=m["occurred_at"].timestamp(),
                    valid_to=None if m["valid_to"] is None else m["valid_to"].timestamp(),
                    importance=float(m["importance"]),
                    entities=tuple(m["entities"]),
                    supersedes=m["supersedes"],
                )
            )
        return facts

    async def save_facts(
        self, tenant_id: str, user_id: str, facts: Sequence[Fact], conversations: Mapping[str, str]
    ) -> None:
        if not facts:
            return
        rows = [
            {
                "tenant_id": tenant_id,
                "id": f.id,
                "user_id": user_id,
                "conversation_id": conversations.get(f.id, "_facts"),
                "tier": Tier.SEMANTIC.value,
                "role": "",
                "text": f.text,
                "occurred_at": _ts(f.valid_from),
                "importance": f.importance,
                "topic_id": None,
                "entities": list(f.entities),
                "source_id": None,
                "subject": f.subject,
                "predicate": f.predicate,
                "object": f.object,
                "fact_key": encode_fact_key(f.subject, f.predicate),
                "valid_to": None if f.valid_to is None else _ts(f.valid_to),
                "consolidated": True,
            }
            for f in facts
        ]
        statement = insert(memories)
        statement = statement.on_conflict_do_update(
            index_elements=[memories.c.tenant_id, memories.c.id],
            set_={k: statement.excluded[k] for k in rows[0] if k not in ("tenant_id", "id", "user_id")},
            where=memories.c.user_id == user_id,
        )
        async with translate_errors("memory facts save"), self._engine.begin() as conn:
            await conn.execute(statement, rows)

    async def conversation_turns(
        self, tenant_id: str, user_id: str, conversation_id: str, limit: int
    ) -> list[StoredMemory]:
        c = memories.c
        statement = (
            sa.select(*_BASE)
            .where(
                c.tenant_id == tenant_id,
                c.conversation_id == conversation_id,
                c.user_id == user_id,
                c.tier == Tier.EPISODIC.value,
                c.role != "summary",
            )
            .order_by(c.occurred_at.desc(), c.id.desc())
            .limit(limit)
        )
        async with translate_errors("memory conversation"), self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [_stored(r._mapping) for r in reversed(rows)]

    async def importance_rows(self, tenant_id: str, user_id: str) -> list[tuple[str, float, float]]:
        c = memories.c
        statement = sa.select(c.id, c.importance, c.importance_at).where(c.tenant_id == tenant_id, c.user_id == user_id)
        async with translate_errors("memory importance"), self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [(r.id, float(r.importance), r.importance_at.timestamp()) for r in rows]

    async def set_importance(self, tenant_id: str, values: Mapping[str, float], at: float) -> None:
        if not values:
            return
        statement = sa.text(
            "UPDATE memories SET importance = :v, importance_at = :at WHERE tenant_id = :t AND id = :id"
        )
        rows = [{"t": tenant_id, "id": i, "v": v, "at": _ts(at)} for i, v in sorted(values.items())]
        async with translate_errors("memory importance set"), self._engine.begin() as conn:
            await conn.execute(statement, rows)

    async def scopes(self, after: tuple[str, str] | None, limit: int) -> list[tuple[str, str]]:
        c = memories.c
        statement = sa.select(c.tenant_id, c.user_id).distinct().order_by(c.tenant_id, c.user_id).limit(limit)
        if after is not None:
            statement = statement.where(sa.tuple_(c.tenant_id, c.user_id) > sa.tuple_(sa.literal(after[0]), sa.literal(after[1])))
        async with translate_errors("memory scopes"), self._engine.connect() as conn:
            return [(r.tenant_id, r.user_id) for r in (await conn.execute(statement)).all()]

    async def add_edges(self, tenant_id: str, edges: Sequence[Edge]) -> None:
        await super().add_edges(tenant_id, list({(e.source, e.target, e.kind): e for e in edges}.values()))
