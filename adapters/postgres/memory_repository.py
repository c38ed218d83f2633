"""``MemoryRepository`` on PostgreSQL (tables in ``memory_tables``). Every statement carries
``tenant_id = :tenant`` (primary keys and indexes lead with it).

With ``vector_collection`` (a pgvector collection, e.g. ``"memory"``), ``get_many``
also reads each memory's embedding (LEFT JOIN on ``(tenant_id, id)`` in the same statement), so
search's MMR compares candidates by cosine; a memory without a row there has ``vector=None``. Off
by default: on the LoCoMo slice it cost recall and time (see docs/memory.md).

Full-text search (``fulltext``) matches ``coalesce(window_tsv, tsv)``: a turn's context window
(itself and its neighbours, written by ``set_windows``) when ingest gave it one, else its own text
(GIN index ``ix_memories_search_tsv``, ``fastupdate = off``: with the pending list on, every query
scanned the recent inserts linearly). Ranking is Okapi BM25 (``k1`` 1.2, ``b`` 0.75, the textbook
values) with binary tf, from statistics the database keeps exact (``memory_lexemes``: df per
lexeme and user; ``memory_search_stats``: the user's memories and their total length in lexemes;
both maintained by statement triggers on ``memories``, migration 0011). Two statements on one
connection: the query lexemes' statistics, then the scoring query, whose candidates are the
memories containing a *selective* query lexeme (df <= ``cutoff`` * N, default 5%; all lexemes
when none is); the common lexemes only add to the scores (the "common terms" cut, which keeps a
speaker's name, present in every window, from making every memory a candidate). Ties go to the
smaller id. ``scoring="ts_rank"`` (the previous ranking: no idf) is kept for comparison.
"""

from __future__ import annotations

import math
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


_COLUMNS = [c for c in memories.c if c.name not in ("tsv", "window_tsv")]

# What full-text search matches (GIN index ix_memories_search_tsv on this very expression).
_DOC = "coalesce(window_tsv, tsv)"
_QUERY = "websearch_to_tsquery('english'::regconfig, :words)"

_TS_RANK_SQL = f"""
SELECT id FROM memories
WHERE {{where}} AND {_DOC} @@ {_QUERY}
ORDER BY ts_rank({_DOC}, {_QUERY}, 1) DESC, id LIMIT :k
"""

# BM25 statistics of the query's lexemes (one row per known lexeme; a single row of NULLs when the
# user has memories but none of the lexemes; no row when the user has no memories).
_STATS_SQL = """
SELECT s.lexeme, s.df, st.docs, st.lexemes
FROM memory_search_stats st
LEFT JOIN memory_lexemes s
    ON s.tenant_id = st.tenant_id AND s.user_id = st.user_id AND s.df > 0
    AND s.lexeme = ANY (tsvector_to_array(to_tsvector('english'::regconfig, :words)))
WHERE st.tenant_id = :tenant AND st.user_id = :user AND st.docs > 0
"""


def _tsquery_term(lexeme: str) -> str:
    """A lexeme as a tsquery operand, quoted so that it is matched verbatim."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _bm25_sql(where: str, terms: int) -> str:
    """Okapi BM25 with binary tf over the memories matching ``:find``: the sum of ``:w<i>`` (the
    idf of query lexeme i, matched by tsquery ``:t<i>``) times the length norm
    ``(k1 + 1) / (1 + k1 * (1 - b + b * dl / avgdl))``, dl = the document's number of lexemes."""
    matched = " + ".join(
        f"CASE WHEN {_DOC} @@ CAST(:t{i} AS tsquery) THEN CAST(:w{i} AS float8) ELSE 0.0 END" for i in range(terms)
    )
    k1, b, avgdl = "CAST(:k1 AS float8)", "CAST(:b AS float8)", "CAST(:avgdl AS float8)"
    norm = f"({k1} + 1) / (1 + {k1} * (1 - {b} + {b} * length({_DOC}) / {avgdl}))"
    return (
        f"SELECT id FROM memories WHERE {where} AND {_DOC} @@ CAST(:find AS tsquery) "
        f"ORDER BY ({matched}) * {norm} DESC, id LIMIT :k"
    )


def _filter_sql(filters: MemoryFilter | None, params: dict[str, object]) -> list[str]:
    """SQL conditions on ``memories`` for ``filters`` (values bound into ``params``)."""
    if filters is None:
        return []
    clauses: list[str] = []
    if filters.tiers is not None:
        params["tiers"] = sorted(t.value for t in filters.tiers)
        clauses.append("tier = ANY (:tiers)")
    if filters.start is not None:
        params["start"] = _ts(filters.start)
        clauses.append("occurred_at >= :start")
    if filters.end is not None:
        params["end"] = _ts(filters.end)
        clauses.append("occurred_at < :end")
    if filters.topics is not None:
        params["topics"] = sorted(filters.topics)
        clauses.append("topic_id = ANY (:topics)")
    if filters.entities is not None:
        params["entities"] = sorted(filters.entities)
        clauses.append("entities && CAST(:entities AS text[])")
    return clauses


class PostgresMemoryRepository:
    def __init__(
        self,
        engine: AsyncEngine,
        vector_collection: str | None = None,
        *,
        scoring: str = "bm25",
        k1: float = 1.2,
        b: float = 0.75,
        cutoff: float = 0.05,
    ) -> None:
        if scoring not in ("bm25", "ts_rank"):
            raise ValueError("scoring must be 'bm25' or 'ts_rank'")
        if k1 < 0 or not 0.0 <= b <= 1.0 or not 0.0 < cutoff <= 1.0:
            raise ValueError("BM25 needs k1 >= 0, 0 <= b <= 1 and 0 < cutoff <= 1")
        self._engine = engine
        self._scoring = scoring
        self._k1 = k1
        self._b = b
        self._cutoff = cutoff
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
        rows = [_row(m) for m in memories_]
        # One multi-row statement per chunk (not executemany): the BM25 statistics trigger is a
        # statement trigger, so it then runs once per chunk instead of once per memory.
        async with translate_errors("memory add"), self._engine.begin() as conn:
            for start in range(0, len(rows), 1000):
                statement = insert(memories).values(rows[start : start + 1000])
                statement = statement.on_conflict_do_update(
                    index_elements=[memories.c.tenant_id, memories.c.id],
                    set_={
                        c.name: statement.excluded[c.name]
                        for c in _COLUMNS
                        if c.name not in ("tenant_id", "id", "created_at")
                    },
                )
                await conn.execute(statement)

    async def get_many(self, tenant_id: str, ids: Iterable[str]) -> list[StoredMemory]:
        wanted = sorted(set(ids))
        if not wanted:
            return []
        async with translate_errors("memory get"), self._engine.connect() as conn:
            return [_memory(r) for r in (await conn.execute(self._rows(tenant_id, wanted))).all()]

    def _rows(self, tenant_id: str, ids: list[str]) -> sa.Select[tuple[object, ...]]:
        """The memories among ``ids`` (with their embeddings when ``vector_collection`` is set)."""
        statement = sa.select(*_COLUMNS).where(memories.c.tenant_id == tenant_id, memories.c.id.in_(ids))
        if self._vectors is not None:
            v = self._vectors.c
            statement = statement.add_columns(sa.cast(v.embedding, ARRAY(sa.REAL)).label("vector")).outerjoin(
                self._vectors, sa.and_(v.tenant_id == memories.c.tenant_id, v.id == memories.c.id)
            )
        return statement

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
        params: dict[str, object] = {"tenant": tenant_id, "user": user_id, "words": words, "k": k}
        where = " AND ".join(["tenant_id = :tenant", "user_id = :user", *_filter_sql(filters, params)])
        async with translate_errors("memory full-text search"), self._engine.connect() as conn:
            if self._scoring == "ts_rank":
                return [r.id for r in (await conn.execute(sa.text(_TS_RANK_SQL.format(where=where)), params)).all()]
            stats = (await conn.execute(sa.text(_STATS_SQL), {"tenant": tenant_id, "user": user_id, "words": words})).all()
            terms = sorted((r.lexeme, float(r.df)) for r in stats if r.lexeme is not None and "\\" not in r.lexeme)
            if not terms:
                return []
            n, total = float(stats[0].docs), float(stats[0].lexemes)
            # The "common terms" cut: only memories with a selective lexeme (in at most ``cutoff``
            # of the user's memories; every lexeme when none is) are scored; the common ones still
            # add to their scores.
            selective = [lex for lex, df in terms if df <= self._cutoff * n] or [lex for lex, _ in terms]
            params |= {
                "find": " | ".join(_tsquery_term(lex) for lex in selective),
                "k1": self._k1,
                "b": self._b,
                "avgdl": max(total / n, 1.0),
            }
            for i, (lex, df) in enumerate(terms):
                params[f"t{i}"] = _tsquery_term(lex)
                params[f"w{i}"] = math.log(1 + (n - df + 0.5) / (df + 0.5))
            rows = (await conn.execute(sa.text(_bm25_sql(where, len(terms))), params)).all()
            return [r.id for r in rows]

    async def set_windows(self, tenant_id: str, windows: Mapping[str, str]) -> None:
        """Index each memory (id -> window text) by its context window: ``window_tsv`` becomes
        ``to_tsvector('english', text)``; an empty text clears it (search falls back to ``tsv``)."""
        if not windows:
            return
        ids, texts = zip(*sorted(windows.items()), strict=True)
        statement = sa.text(
            "UPDATE memories m SET window_tsv = CASE WHEN w.text = '' THEN NULL "
            "ELSE to_tsvector('english'::regconfig, w.text) END "
            "FROM unnest(CAST(:ids AS text[]), CAST(:texts AS text[])) AS w(id, text) "
            "WHERE m.tenant_id = :tenant AND m.id = w.id"
        )
        async with translate_errors("memory windows"), self._engine.begin() as conn:
            await conn.execute(statement, {"tenant": tenant_id, "ids": list(ids), "texts": list(texts)})

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

    async def with_neighbours(
        self, tenant_id: str, ids: Iterable[str], hops: int = 1
    ) -> tuple[list[StoredMemory], list[Edge]]:
        """The memories among ``ids`` and those within ``hops`` ``follows`` edges of them, with
        those edges: on one connection (search reads candidates and their context at once)."""
        wanted = set(ids)
        e = memory_edges.c
        edges: dict[tuple[str, str], Edge] = {}
        async with translate_errors("memory get"), self._engine.connect() as conn:
            frontier = sorted(wanted)
            for _ in range(hops):
                if not frontier:
                    break
                statement = sa.select(e.source, e.target, e.weight).where(
                    e.tenant_id == tenant_id,
                    e.kind == "follows",
                    sa.or_(e.source.in_(frontier), e.target.in_(frontier)),
                )
                found = (await conn.execute(statement)).all()
                frontier = []
                for r in found:
                    edges[(r.source, r.target)] = Edge(r.source, r.target, "follows", float(r.weight))
                    for end in (r.source, r.target):
                        if end not in wanted:
                            wanted.add(end)
                            frontier.append(end)
                frontier.sort()
            if not wanted:
                return [], []
            rows = [_memory(r) for r in (await conn.execute(self._rows(tenant_id, sorted(wanted)))).all()]
        return rows, [edges[key] for key in sorted(edges)]

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
