"""Memory schema (revisions 0006 and 0010) on the shared ``tables.metadata``: memories (with a
generated ``tsvector`` and its GIN index for full-text search; since 0010 also fact columns,
consolidation state and the time importance was last set), topics, entities, graph edges and
observations (fact-shaped statements seen in turns, for promotion). Every table is keyed by
``tenant_id`` first, so every query and index is tenant-scoped."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, DOUBLE_PRECISION, REAL, TSVECTOR

from adapters.postgres.tables import metadata

__all__ = [
    "memories",
    "memory_edges",
    "memory_entities",
    "memory_lexemes",
    "memory_observations",
    "memory_search_stats",
    "memory_topics",
]

_now = sa.text("now()")

memories = sa.Table(
    "memories",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("conversation_id", sa.Text, nullable=False),
    sa.Column("tier", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False, server_default=""),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("importance", REAL, nullable=False, server_default="0.5"),
    sa.Column("topic_id", sa.Text, nullable=True),
    sa.Column("entities", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("source_id", sa.Text, nullable=True),
    sa.Column("tsv", TSVECTOR, sa.Computed("to_tsvector('english'::regconfig, text)", persisted=True)),
    # revision 0010 (memory service): semantic facts, consolidation state, importance decay
    sa.Column("subject", sa.Text, nullable=True),
    sa.Column("predicate", sa.Text, nullable=True),
    sa.Column("object", sa.Text, nullable=True),
    sa.Column("fact_key", sa.Text, nullable=True),
    sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
    sa.Column("consolidated", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("importance_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    # revision 0011 (memory recall): full-text vector of a turn's context window (NULL: use tsv)
    sa.Column("window_tsv", TSVECTOR, nullable=True),
    sa.CheckConstraint("tier IN ('working', 'episodic', 'semantic')", name="tier"),
    sa.CheckConstraint("importance >= 0 AND importance <= 1", name="importance"),
    sa.Index("ix_memories_tsv", "tsv", postgresql_using="gin"),
    sa.Index("ix_memories_user_time", "tenant_id", "user_id", "occurred_at"),
    sa.Index("ix_memories_conversation_time", "tenant_id", "conversation_id", "occurred_at"),
    sa.Index(
        "ix_memories_pending", "tenant_id", "user_id", "occurred_at", postgresql_where=sa.text("NOT consolidated")
    ),
    sa.Index(
        "ix_memories_search_tsv",
        sa.text("(coalesce(window_tsv, tsv))"),
        postgresql_using="gin",
        postgresql_with={"fastupdate": "off"},
    ),
    sa.Index("ix_memories_facts", "tenant_id", "user_id", "fact_key", postgresql_where=sa.text("fact_key IS NOT NULL")),
)

memory_topics = sa.Table(
    "memory_topics",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("centroid", ARRAY(DOUBLE_PRECISION), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("label", sa.Text, nullable=False, server_default=""),
    sa.Column("seq", sa.BigInteger, sa.Identity(always=False), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Index("ix_memory_topics_user", "tenant_id", "user_id", "seq"),
)

memory_entities = sa.Table(
    "memory_entities",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("label", sa.Text, nullable=False),
)

memory_edges = sa.Table(
    "memory_edges",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("target", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("weight", REAL, nullable=False, server_default="1"),
    sa.CheckConstraint(
        "kind IN ('mentions', 'about', 'follows', 'derived_from', 'supersedes')", name="kind"
    ),
    sa.Index("ix_memory_edges_target", "tenant_id", "target", "kind"),
)

memory_observations = sa.Table(
    "memory_observations",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("turn_id", sa.Text, primary_key=True),  # the memory it is attributed to (provenance)
    sa.Column("session_id", sa.Text, primary_key=True),  # the conversation it was said in
    sa.Column("fact_key", sa.Text, primary_key=True),
    sa.Column("object_key", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("predicate", sa.Text, nullable=False),
    sa.Column("object", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_memory_observations_key", "tenant_id", "user_id", "fact_key"),
)

# revision 0011 (memory recall): BM25 statistics of what full-text search matches
# (``coalesce(window_tsv, tsv)``), per user; kept exact by statement triggers on ``memories``.
memory_lexemes = sa.Table(
    "memory_lexemes",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("lexeme", sa.Text, primary_key=True),
    sa.Column("df", sa.BigInteger, nullable=False),
)

memory_search_stats = sa.Table(
    "memory_search_stats",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("docs", sa.BigInteger, nullable=False),
    sa.Column("lexemes", sa.BigInteger, nullable=False),
)
