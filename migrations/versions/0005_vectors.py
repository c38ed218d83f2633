"""Vector collections: the catalogue and the default ``memory`` collection (384 dimensions, the
size of all-MiniLM-L6-v2), hash-partitioned by tenant into 8 partitions, HNSW cosine index, GIN
index on metadata. Layout: ``adapters/postgres/vector_tables.py``; the SQL is written out here so
this revision never changes when that module does.

Revision ID: 0005
Revises: 0004
Create Date: 2025-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARTITIONS = 8


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute(
        """CREATE TABLE vector_collections (
            name text NOT NULL,
            dimension integer NOT NULL,
            partitions integer NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_vector_collections PRIMARY KEY (name),
            CONSTRAINT ck_vector_collections_dimension CHECK (dimension BETWEEN 1 AND 2000),
            CONSTRAINT ck_vector_collections_partitions CHECK (partitions BETWEEN 1 AND 1024)
        )"""
    )
    op.execute(
        """CREATE TABLE vectors_memory (
            tenant_id text NOT NULL,
            id text NOT NULL,
            embedding vector(384) NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            text text,
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_vectors_memory PRIMARY KEY (tenant_id, id)
        ) PARTITION BY HASH (tenant_id)"""
    )
    for remainder in range(PARTITIONS):
        op.execute(
            f"CREATE TABLE vectors_memory_p{remainder} PARTITION OF vectors_memory "
            f"FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {remainder})"
        )
    op.execute(
        "CREATE INDEX ix_vectors_memory_embedding ON vectors_memory "
        "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
    )
    op.execute("CREATE INDEX ix_vectors_memory_metadata ON vectors_memory USING gin (metadata jsonb_path_ops)")
    op.execute(
        f"INSERT INTO vector_collections (name, dimension, partitions) VALUES ('memory', 384, {PARTITIONS})"
    )


def downgrade() -> None:
    # Collections created at run time (``ensure_collection``) are listed in the catalogue too.
    names = [row[0] for row in op.get_bind().execute(sa.text("SELECT name FROM vector_collections"))]
    for name in names:
        op.execute(f'DROP TABLE IF EXISTS "vectors_{name}" CASCADE')
    op.execute("DROP TABLE vector_collections")
