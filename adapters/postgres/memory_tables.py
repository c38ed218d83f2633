"""Memory schema (revision 0006) on the shared ``tables.metadata``: memories (with a generated
``tsvector`` and its GIN index for full-text search), topics, entities and graph edges. Every
table is keyed by ``tenant_id`` first, so every query and index is tenant-scoped."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, DOUBLE_PRECISION, REAL, TSVECTOR

from adapters.postgres.tables import metadata

__all__ = ["memories", "memory_edges", "memory_entities", "memory_topics"]

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
    sa.CheckConstraint("tier IN ('working', 'episodic', 'semantic')", name="tier"),
    sa.CheckConstraint("importance >= 0 AND importance <= 1", name="importance"),
    sa.Index("ix_memories_tsv", "tsv", postgresql_using="gin"),
    sa.Index("ix_memories_user_time", "tenant_id", "user_id", "occurred_at"),
    sa.Index("ix_memories_conversation_time", "tenant_id", "conversation_id", "occurred_at"),
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
