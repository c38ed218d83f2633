"""Memory recall: context windows and BM25 statistics for full-text search.

- ``memories.window_tsv``: the full-text vector of a turn's context window (the turn with its
  neighbours in the conversation; set by ingest, NULL for memories that are not turns), and a GIN
  index on what full-text search matches: ``coalesce(window_tsv, tsv)``.
- ``memory_lexemes`` (document frequency of each lexeme among a user's memories) and
  ``memory_search_stats`` (a user's number of memories and total length in lexemes): what BM25
  needs, kept exact by statement-level triggers on ``memories`` (insert, update, delete; every
  writer of memories is covered, not only ingest). Lexemes are upserted in sorted order so that
  concurrent writers lock rows in one order.

Layout: ``adapters/postgres/memory_tables.py``; the SQL is written out here so this revision never
changes when that module does. Existing memories keep ``window_tsv = NULL`` (search falls back to
their own ``tsv``) until they are re-ingested or re-indexed (``IngestTurns.reindex``); their
statistics are counted at upgrade.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DOC = "coalesce(window_tsv, tsv)"

# Adds ``sign`` times the given documents (parallel arrays) to the statistics.
_ADD = """
CREATE FUNCTION memory_search_stats_add(tenants text[], users text[], docs tsvector[], sign int)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO memory_lexemes (tenant_id, user_id, lexeme, df)
    SELECT x.t, x.u, l, sign * count(*)
    FROM unnest(tenants, users, docs) AS x(t, u, d), unnest(tsvector_to_array(x.d)) AS l
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (tenant_id, user_id, lexeme) DO UPDATE SET df = memory_lexemes.df + excluded.df;
    INSERT INTO memory_search_stats (tenant_id, user_id, docs, lexemes)
    SELECT x.t, x.u, sign * count(*), sign * coalesce(sum(length(x.d)), 0)
    FROM unnest(tenants, users, docs) AS x(t, u, d)
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (tenant_id, user_id) DO UPDATE
        SET docs = memory_search_stats.docs + excluded.docs,
            lexemes = memory_search_stats.lexemes + excluded.lexemes;
$$
"""

# An update only counts when it changes what is searched (or whose it is): importance or
# consolidation updates cost nothing here.
_TRIGGER = f"""
CREATE FUNCTION memory_search_stats_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM memory_search_stats_add(array_agg(tenant_id), array_agg(user_id), array_agg({_DOC}), 1)
        FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM memory_search_stats_add(array_agg(tenant_id), array_agg(user_id), array_agg({_DOC}), -1)
        FROM old_rows;
    ELSE
        PERFORM memory_search_stats_add(
            array_agg(o.tenant_id), array_agg(o.user_id), array_agg(coalesce(o.window_tsv, o.tsv)), -1)
        FROM old_rows o JOIN new_rows n ON n.tenant_id = o.tenant_id AND n.id = o.id
        WHERE coalesce(o.window_tsv, o.tsv) IS DISTINCT FROM coalesce(n.window_tsv, n.tsv)
            OR o.user_id <> n.user_id;
        PERFORM memory_search_stats_add(
            array_agg(n.tenant_id), array_agg(n.user_id), array_agg(coalesce(n.window_tsv, n.tsv)), 1)
        FROM old_rows o JOIN new_rows n ON n.tenant_id = o.tenant_id AND n.id = o.id
        WHERE coalesce(o.window_tsv, o.tsv) IS DISTINCT FROM coalesce(n.window_tsv, n.tsv)
            OR o.user_id <> n.user_id;
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute("ALTER TABLE memories ADD COLUMN window_tsv tsvector")
    op.execute(
        "CREATE INDEX ix_memories_search_tsv ON memories USING gin ((coalesce(window_tsv, tsv))) WITH (fastupdate = off)"
    )
    op.execute(
        """CREATE TABLE memory_lexemes (
            tenant_id text NOT NULL,
            user_id text NOT NULL,
            lexeme text NOT NULL,
            df bigint NOT NULL,
            CONSTRAINT pk_memory_lexemes PRIMARY KEY (tenant_id, user_id, lexeme)
        )"""
    )
    op.execute(
        """CREATE TABLE memory_search_stats (
            tenant_id text NOT NULL,
            user_id text NOT NULL,
            docs bigint NOT NULL,
            lexemes bigint NOT NULL,
            CONSTRAINT pk_memory_search_stats PRIMARY KEY (tenant_id, user_id)
        )"""
    )
    op.execute(_ADD)
    op.execute(_TRIGGER)
    for event, tables in (
        ("INSERT", "NEW TABLE AS new_rows"),
        ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
        ("DELETE", "OLD TABLE AS old_rows"),
    ):
        op.execute(
            f"CREATE TRIGGER memories_search_stats_{event.lower()} AFTER {event} ON memories "
            f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION memory_search_stats_apply()"
        )
    op.execute(f"SELECT memory_search_stats_add(array_agg(tenant_id), array_agg(user_id), array_agg({_DOC}), 1) FROM memories")


def downgrade() -> None:
    for event in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER memories_search_stats_{event} ON memories")
    op.execute("DROP FUNCTION memory_search_stats_apply()")
    op.execute("DROP FUNCTION memory_search_stats_add(text[], text[], tsvector[], int)")
    op.execute("DROP TABLE memory_search_stats")
    op.execute("DROP TABLE memory_lexemes")
    op.execute("DROP INDEX ix_memories_search_tsv")
    op.execute("ALTER TABLE memories DROP COLUMN window_tsv")
