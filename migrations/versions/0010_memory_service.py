"""Memory service: semantic-fact columns, consolidation state and importance decay on ``memories``,
and ``memory_observations`` (fact-shaped statements seen in turns, for promotion to facts).
Layout: ``adapters/postgres/memory_tables.py``; the SQL is written out here so this revision never
changes when that module does.

Existing memories start unconsolidated (``consolidated = false``): the worker's next sweep
consolidates them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """ALTER TABLE memories
            ADD COLUMN subject text,
            ADD COLUMN predicate text,
            ADD COLUMN object text,
            ADD COLUMN fact_key text,
            ADD COLUMN valid_to timestamptz,
            ADD COLUMN consolidated boolean NOT NULL DEFAULT false,
            ADD COLUMN importance_at timestamptz NOT NULL DEFAULT now()"""
    )
    op.execute(
        "CREATE INDEX ix_memories_pending ON memories (tenant_id, user_id, occurred_at) WHERE NOT consolidated"
    )
    op.execute(
        "CREATE INDEX ix_memories_facts ON memories (tenant_id, user_id, fact_key) WHERE fact_key IS NOT NULL"
    )
    op.execute(
        """CREATE TABLE memory_observations (
            tenant_id text NOT NULL,
            turn_id text NOT NULL,
            fact_key text NOT NULL,
            object_key text NOT NULL,
            user_id text NOT NULL,
            subject text NOT NULL,
            predicate text NOT NULL,
            object text NOT NULL,
            text text NOT NULL,
            session_id text NOT NULL,
            occurred_at timestamptz NOT NULL,
            CONSTRAINT pk_memory_observations PRIMARY KEY (tenant_id, turn_id, session_id, fact_key, object_key)
        )"""
    )
    op.execute("CREATE INDEX ix_memory_observations_key ON memory_observations (tenant_id, user_id, fact_key)")


def downgrade() -> None:
    op.execute("DROP TABLE memory_observations")
    op.execute("DROP INDEX ix_memories_facts")
    op.execute("DROP INDEX ix_memories_pending")
    op.execute(
        """ALTER TABLE memories
            DROP COLUMN importance_at,
            DROP COLUMN consolidated,
            DROP COLUMN valid_to,
            DROP COLUMN fact_key,
            DROP COLUMN object,
            DROP COLUMN predicate,
            DROP COLUMN subject"""
    )
