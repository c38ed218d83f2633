"""pgvector collections: one table per collection (one dimension each), hash-partitioned by tenant.

Layout of collection ``NAME`` (dimension D, P partitions)::

    vectors_NAME (tenant_id text, id text, embedding vector(D), metadata jsonb, text text,
                  updated_at timestamptz, PRIMARY KEY (tenant_id, id))  PARTITION BY HASH (tenant_id)
    vectors_NAME_p0 .. vectors_NAME_p{P-1}                              one partition per remainder
    ix_vectors_NAME_embedding  HNSW (embedding vector_cosine_ops)       on every partition
    ix_vectors_NAME_metadata   GIN (metadata jsonb_path_ops)            eq/in filters (``@>``)

Every query carries ``tenant_id = $1``, so the planner prunes to one partition and walks that
partition's HNSW graph; the catalogue table ``vector_collections`` records each collection's
dimension. Migration 0005 creates the catalogue and the default ``memory`` collection (384, the
dimension of all-MiniLM-L6-v2); ``ensure_collection`` creates others at run time.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "CATALOG",
    "DEFAULT_COLLECTION",
    "DEFAULT_DIMENSION",
    "DEFAULT_PARTITIONS",
    "CollectionMismatch",
    "collection_ddl",
    "collection_table",
    "drop_collection",
    "drop_collection_ddl",
    "ensure_collection",
    "validate_collection_name",
]

CATALOG = "vector_collections"
DEFAULT_COLLECTION = "memory"
DEFAULT_DIMENSION = 384
DEFAULT_PARTITIONS = 8
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


class CollectionMismatch(ValueError):
    """The collection exists with another dimension than the one asked for."""


def validate_collection_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"collection name {name!r}: 1-40 lowercase letters, digits or '_', starting with a letter")
    return name


def collection_table(name: str) -> str:
    return f"vectors_{validate_collection_name(name)}"


def catalog_ddl() -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {CATALOG} (
            name text NOT NULL,
            dimension integer NOT NULL,
            partitions integer NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_{CATALOG} PRIMARY KEY (name),
            CONSTRAINT ck_{CATALOG}_dimension CHECK (dimension BETWEEN 1 AND 2000),
            CONSTRAINT ck_{CATALOG}_partitions CHECK (partitions BETWEEN 1 AND 1024)
        )"""
    ]


def collection_ddl(
    name: str,
    dimension: int,
    partitions: int = DEFAULT_PARTITIONS,
    *,
    hnsw_m: int = 16,
    hnsw_ef_construction: int = 64,
) -> list[str]:
    """Statements (idempotent) creating the collection's table, partitions, indexes and catalogue row."""
    table = collection_table(name)
    if not 1 <= dimension <= 2000:
        raise ValueError("dimension must be between 1 and 2000 (the HNSW limit of pgvector's vector type)")
    if not 1 <= partitions <= 1024:
        raise ValueError("partitions must be between 1 and 1024")
    statements = [
        f"""CREATE TABLE IF NOT EXISTS {table} (
            tenant_id text NOT NULL,
            id text NOT NULL,
            embedding vector({int(dimension)}) NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            text text,
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_{table} PRIMARY KEY (tenant_id, id)
        ) PARTITION BY HASH (tenant_id)"""
    ]
    statements += [
        f"CREATE TABLE IF NOT EXISTS {table}_p{r} PARTITION OF {table} "
        f"FOR VALUES WITH (MODULUS {int(partitions)}, REMAINDER {r})"
        for r in range(partitions)
    ]
    statements += [
        f"CREATE INDEX IF NOT EXISTS ix_{table}_embedding ON {table} USING hnsw (embedding vector_cosine_ops) "
        f"WITH (m = {int(hnsw_m)}, ef_construction = {int(hnsw_ef_construction)})",
        f"CREATE INDEX IF NOT EXISTS ix_{table}_metadata ON {table} USING gin (metadata jsonb_path_ops)",
        f"INSERT INTO {CATALOG} (name, dimension, partitions) VALUES ('{name}', {int(dimension)}, {int(partitions)}) "
        "ON CONFLICT (name) DO NOTHING",
    ]
    return statements


def drop_collection_ddl(name: str) -> list[str]:
    table = collection_table(name)
    return [f"DROP TABLE IF EXISTS {table} CASCADE", f"DELETE FROM {CATALOG} WHERE name = '{name}'"]


async def ensure_collection(
    conn: AsyncConnection, name: str, dimension: int, partitions: int = DEFAULT_PARTITIONS
) -> None:
    """Create the collection when missing (serialised by an advisory lock); raise
    ``CollectionMismatch`` when it exists with another dimension. The caller commits."""
    validate_collection_name(name)
    await conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('lumina.vector_collections'))"))
    for statement in catalog_ddl():
        await conn.execute(sa.text(statement))
    existing = await conn.scalar(sa.text(f"SELECT dimension FROM {CATALOG} WHERE name = :n"), {"n": name})
    if existing is not None and existing != dimension:
        raise CollectionMismatch(f"vector collection {name!r} has dimension {existing}, not {dimension}")
    if existing is None:
        for statement in collection_ddl(name, dimension, partitions):
            await conn.execute(sa.text(statement))


async def drop_collection(conn: AsyncConnection, name: str) -> None:
    for statement in drop_collection_ddl(name):
        await conn.execute(sa.text(statement))
