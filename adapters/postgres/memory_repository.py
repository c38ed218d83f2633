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
both maintained by statement triggers on ``memories``, migration 0011). One statement (``_bm25_sql``):
the query lexemes' statistics, then the scoring of the candidates: the memories containing a
*selective* query lexeme (df <= ``cutoff`` * N, default 5%; all lexemes
when none is); the common lexemes only add to the scores (the "common terms" cut, which keeps a
speaker's name, present in every window, from making every memory a candidate). Ties go to the
smaller id. ``scoring="ts_rank"`` (the previous ranking: no idf) is kept for comparison.

With ``search_collection`` (the pgvector collection of the memories' vectors), ``hybrid`` reads
both candidate lists, the ``follows`` edges around the hits and every row they need in ONE
statement (``_hybrid_sql``), after the HNSW settings (``hnsw_settings``, with custom plans: a
generic plan of it joined by sequential scans, ~10x slower). Reads that need no transaction
(``fulltext``, ``with_neighbours``, ``count``) run in autocommit: no BEGIN/ROLLBACK round trips.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.postgres.autocommit import KeptConnections
from adapters.postgres.errors import translate_errors
from adapters.postgres.memory_tables import (
    memories,
    memory_edges,
    memory_entities,
    memory_topics,
)
from adapters.postgres.vector_tables import collection_table
from adapters.vectorstores.pgvector import EF_PER_RESULT, filter_sql, hnsw_settings
from application.memory.ports import HybridHits, StoredMemory
from domain.memory.graph import Edge
from domain.memory.ranking import MemoryFilter
from domain.memory.tiers import Tier
from domain.memory.topics import Topic
from domain.memory.vectors import MetadataFilter

__all__ = ["PostgresMemoryRepository", "websearch_any"]

_WORD = re.compile(r"[^\W_]+")
_OPERATORS = {"or", "and", "not"}


def websearch_any(query: str) -> str:
    """``query``'s words joined by ``or`` (websearch syntax): any of them may match."""
    return " or ".join(w for w in _WORD.findall(query) if w.casefold() not in _OPERATORS)


def _vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


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

# BM25 with binary tf: the user's statistics (``st``) and the query lexemes' (``terms``: idf, and
# whether the lexeme is selective, df <= ``:cutoff`` * N). No rows when the user has no memories
# or none of the lexemes.
_BM25_CTES = """
st AS MATERIALIZED (
    SELECT CAST(docs AS float8) AS n, greatest(CAST(lexemes AS float8) / docs, 1.0) AS avgdl
    FROM memory_search_stats WHERE tenant_id = :tenant AND user_id = :user AND docs > 0
), terms AS MATERIALIZED (
    SELECT CAST(quote_literal(l.lexeme) AS tsquery) AS q, quote_literal(l.lexeme) AS operand,
           ln(1 + (st.n - l.df + 0.5) / (l.df + 0.5)) AS idf, l.df <= CAST(:cutoff AS float8) * st.n AS selective
    FROM st JOIN memory_lexemes l
        ON l.tenant_id = :tenant AND l.user_id = :user AND l.df > 0
        AND l.lexeme = ANY (tsvector_to_array(to_tsvector('english'::regconfig, :words)))
    WHERE strpos(l.lexeme, E'\\\\') = 0
)"""


def _bm25_select(where: str, *, scored: bool = False) -> str:
    """The ids of the best ``:k`` candidates by BM25 (needs ``_BM25_CTES``): candidates contain a
    selective lexeme (every lexeme when none is); the score is the sum of the idf of the query
    lexemes a candidate contains times the length norm ``(k1 + 1) / (1 + k1 * (1 - b + b * dl /
    avgdl))``, dl = the document's number of lexemes. Ties go to the smaller id."""
    k1, b = "CAST(:k1 AS float8)", "CAST(:b AS float8)"
    norm = f"({k1} + 1) / (1 + {k1} * (1 - {b} + {b} * length({_DOC}) / (SELECT avgdl FROM st)))"
    # a join with the (few) query lexemes and a sum per memory: no correlated subquery per row
    score = f"sum(terms.idf) * {norm}"
    return f"""SELECT id{f", {score} AS score" if scored else ""}
FROM memories JOIN terms ON {_DOC} @@ terms.q
WHERE {where} AND {_DOC} @@ (
    SELECT CAST(coalesce(string_agg(operand, ' | ') FILTER (WHERE selective), string_agg(operand, ' | ')) AS tsquery)
    FROM terms
)
GROUP BY tenant_id, id
ORDER BY {"score" if scored else score} DESC, id LIMIT :k"""


def _bm25_sql(where: str) -> str:
    """BM25 full-text search in ONE statement (statistics and scoring)."""
    return f"WITH {_BM25_CTES}\n{_bm25_select(where)}"


def _hybrid_sql(where: str, vector_table: str, vector_conditions: Sequence[str]) -> str:
    """``hybrid`` in ONE statement: the BM25 list (``ft``) and the nearest vectors (``vec``, the
    HNSW index of ``vector_table``, ``vector_conditions`` on its metadata), each ``:k`` deep with
    its ranks; the ``follows`` edges touching a hit (``fol``: two index lookups); and the rows of
    the hits and of those edges' other ends, each with its ranks and the ids it follows."""
    columns = ", ".join(f"m.{c.name}" for c in _COLUMNS)
    vector_where = " AND ".join(["tenant_id = :tenant", *vector_conditions])
    return f"""WITH {_BM25_CTES},
ft AS MATERIALIZED (
    SELECT id, row_number() OVER (ORDER BY score DESC, id) AS r FROM ({_bm25_select(where, scored=True)}) x
), vec AS MATERIALIZED (
    SELECT id, row_number() OVER (ORDER BY distance, id) AS r FROM (
        SELECT id, embedding <=> CAST(:q AS vector) AS distance FROM {vector_table}
        WHERE {vector_where} ORDER BY distance LIMIT :k
    ) y
), hits AS (
    SELECT id FROM ft UNION SELECT id FROM vec
), fol AS MATERIALIZED (
    SELECT source, target FROM memory_edges
    WHERE tenant_id = :tenant AND kind = 'follows' AND source = ANY (ARRAY(SELECT id FROM hits))
    UNION
    SELECT source, target FROM memory_edges
    WHERE tenant_id = :tenant AND kind = 'follows' AND target = ANY (ARRAY(SELECT id FROM hits))
)
SELECT {columns},
       array_position((SELECT array_agg(id ORDER BY r) FROM ft), m.id) AS ft_rank,
       array_position((SELECT array_agg(id ORDER BY r) FROM vec), m.id) AS vec_rank,
       coalesce(f.targets, '{{}}') AS follows
FROM memories m
LEFT JOIN (SELECT source, array_agg(target ORDER BY target) AS targets FROM fol GROUP BY source) f ON f.source = m.id
WHERE m.tenant_id = :tenant AND m.id = ANY (ARRAY(
    SELECT id FROM hits UNION SELECT source FROM fol UNION SELECT target FROM fol
))"""


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


_COUNT_SQL = "SELECT coalesce(max(docs), 0) FROM memory_search_stats WHERE tenant_id = $1 AND user_id = $2"


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
        search_collection: str | None = None,
        ef_search: int = 40,
        max_scan_tuples: int = 20_000,
        ef_per_result: int = EF_PER_RESULT,
        read_engine: AsyncEngine | None = None,
    ) -> None:
        """``read_engine``: the pool for the chat path's cheap reads (the memory count, full-text
        search, reads of rows), e.g. one without a pre-ping round trip per checkout (default:
        ``engine``)."""
        if scoring not in ("bm25", "ts_rank"):
            raise ValueError("scoring must be 'bm25' or 'ts_rank'")
        if k1 < 0 or not 0.0 <= b <= 1.0 or not 0.0 < cutoff <= 1.0:
            raise ValueError("BM25 needs k1 >= 0, 0 <= b <= 1 and 0 < cutoff <= 1")
        self._engine = engine
        self._reads = read_engine or engine
        self._counts = KeptConnections(self._reads)  # the count runs for every chat request: kept connections
        self._scoring = scoring
        self._k1 = k1
        self._b = b
        self._cutoff = cutoff
        self._search_table = None if search_collection is None else collection_table(search_collection)
        self._ef_search = ef_search
        self._max_scan_tuples = max_scan_tuples
        self._ef_per_result = ef_per_result
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

    async def aclose(self) -> None:
        """Close the read pool when it is this repository's own (not ``engine``)."""
        await self._counts.aclose()
        if self._reads is not self._engine:
            await self._reads.dispose()

    @asynccontextmanager
    async def _read(self, what: str) -> AsyncIterator[AsyncConnection]:
        """A pooled connection in autocommit mode for reads: no BEGIN/ROLLBACK round trips (each
        statement reads its own snapshot)."""
        async with translate_errors(what), self._reads.connect() as conn:
            try:
                yield await conn.execution_options(isolation_level="AUTOCOMMIT")
            except BaseException:
                if self._reads is not self._engine:  # no pre-ping there: never hand a broken connection on
                    await conn.invalidate()
                raise

    async def count(self, tenant_id: str, user_id: str) -> int:
        """From ``memory_search_stats`` (kept exact by the statement triggers on ``memories``): one
        statement on the driver's connection, outside any transaction (the chat path asks this for
        every request of a user without memories)."""
        return int(await self._counts.fetchval(_COUNT_SQL, tenant_id, user_id, what="memory count"))

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
        async with self._read("memory full-text search") as conn:
            if self._scoring == "ts_rank":
                return [r.id for r in (await conn.execute(sa.text(_TS_RANK_SQL.format(where=where)), params)).all()]
            params |= {"k1": self._k1, "b": self._b, "cutoff": self._cutoff}
            return [r.id for r in (await conn.execute(sa.text(_bm25_sql(where)), params)).all()]

    async def hybrid(
        self,
        tenant_id: str,
        user_id: str,
        query: str,
        vector: Sequence[float] | Awaitable[Sequence[float]],
        k: int,
        filters: MemoryFilter | None,
        where: MetadataFilter,
    ) -> HybridHits:
        """Full-text (BM25) and vector candidates, their ``follows`` neighbours and every row, in
        one statement (``_hybrid_sql``) after the HNSW settings of ``PgVectorStore``
        (``hnsw_settings``, one statement) in the same transaction. ``vector`` may be an awaitable
        (the query being embedded): the connection and the settings are made ready meanwhile. Needs ``search_collection``,
        BM25 scoring, and ``where`` limited to what ``PgVectorStore`` filters by (it is its
        metadata filter)."""
        if self._search_table is None or self._scoring != "bm25":
            raise ValueError("hybrid needs search_collection and BM25 scoring")
        params: dict[str, object] = {
            "tenant": tenant_id, "user": user_id, "words": websearch_any(query), "k": k,
            "k1": self._k1, "b": self._b, "cutoff": self._cutoff,
        }
        where_ft = " AND ".join(["tenant_id = :tenant", "user_id = :user", *_filter_sql(filters, params)])
        sql = _hybrid_sql(where_ft, self._search_table, filter_sql(where, params))
        settings = hnsw_settings(k, self._ef_search, self._max_scan_tuples, self._ef_per_result)
        async with translate_errors("memory hybrid search"), self._engine.begin() as conn:
            await conn.execute(sa.text(settings))  # while the query may still be embedding
            params["q"] = _vector_literal(await vector if inspect.isawaitable(vector) else vector)
            rows = (await conn.execute(sa.text(sql), params)).all()
        memories_ = [_memory(r) for r in rows]
        fulltext = sorted((r.ft_rank, r.id) for r in rows if r.ft_rank is not None)
        nearest = sorted((r.vec_rank, r.id) for r in rows if r.vec_rank is not None)
        follows = sorted((r.id, target) for r in rows for target in r.follows)
        return HybridHits(
            fulltext_ids=[i for _, i in fulltext],
            vector_ids=[i for _, i in nearest],
            memories=memories_,
            follows=[Edge(source, target, "follows") for source, target in follows],
        )

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
        async with self._read("memory get") as conn:
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
