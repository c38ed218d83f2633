"""Builders of each ``VectorStore`` adapter for the contract suite: a fresh, empty collection per
call, dropped afterwards. Weaviate and Pinecone need a reachable server: set
``LUMINA_TEST_WEAVIATE_URL`` / ``LUMINA_TEST_PINECONE_URL`` (and ``LUMINA_TEST_PINECONE_API_KEY``
for Pinecone's cloud); CI here has neither, so those two skip."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from application.ports import VectorStore

__all__ = ["KINDS", "SERVER_KINDS", "StoreFactory", "skip_reason"]

KINDS = ("memory", "pgvector", "milvus", "qdrant", "weaviate", "pinecone")
SERVER_KINDS = {
    "weaviate": ("LUMINA_TEST_WEAVIATE_URL", "needs a Weaviate server: set LUMINA_TEST_WEAVIATE_URL"),
    "pinecone": ("LUMINA_TEST_PINECONE_URL", "needs a Pinecone server (or Pinecone Local): set LUMINA_TEST_PINECONE_URL"),
}

StoreFactory = Callable[[int], AbstractAsyncContextManager[VectorStore]]


def skip_reason(kind: str) -> str | None:
    if kind in SERVER_KINDS and not os.environ.get(SERVER_KINDS[kind][0]):
        return SERVER_KINDS[kind][1]
    return None


def _name() -> str:
    return f"ct_{uuid.uuid4().hex[:12]}"


def memory_factory() -> StoreFactory:
    from adapters.vectorstores.memory import InMemoryVectorStore

    @asynccontextmanager
    async def make(dimension: int) -> AsyncIterator[VectorStore]:
        yield InMemoryVectorStore(dimension)

    return make


def pgvector_factory(engine: object) -> StoreFactory:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from adapters.postgres.vector_tables import drop_collection
    from adapters.vectorstores.pgvector import PgVectorStore

    assert isinstance(engine, AsyncEngine)

    @asynccontextmanager
    async def make(dimension: int) -> AsyncIterator[VectorStore]:
        name = _name()
        store = await PgVectorStore.open(engine, name, dimension, partitions=2)
        try:
            yield store
        finally:
            async with engine.begin() as conn:
                await drop_collection(conn, name)

    return make


def milvus_factory(client: object) -> StoreFactory:
    from adapters.vectorstores.milvus import MilvusVectorStore

    @asynccontextmanager
    async def make(dimension: int) -> AsyncIterator[VectorStore]:
        store = await MilvusVectorStore.open(client, _name(), dimension)  # type: ignore[arg-type]
        try:
            yield store
        finally:
            await store.drop()

    return make


def qdrant_factory(client: object) -> StoreFactory:
    from adapters.vectorstores.qdrant import QdrantVectorStore

    @asynccontextmanager
    async def make(dimension: int) -> AsyncIterator[VectorStore]:
        store = await QdrantVectorStore.open(client, _name(), dimension)  # type: ignore[arg-type]
        try:
            yield store
        finally:
            await store.drop()

    return make


def weaviate_factory() -> StoreFactory:
    import httpx

    from adapters.vectorstores.weaviate import WeaviateVectorStore

    @asynccontextmanager
    async def make(dimension: int) -> AsyncIterator[VectorStore]:
        headers = {}
        if key := os.environ.get("LUMINA_TEST_WEAVIATE_API_KEY"):
            headers["Authorization"] = f"Bearer {key}"
        async with httpx.AsyncClient(base_url=os.environ["LUMINA_TEST_WEAVIATE_URL"], headers=headers, timeout=30) as http:
            store = await WeaviateVectorStore.open(http, "Ct" + uuid.uuid4().hex[:12], dimension)
            try:
                yield store
            finally:
                await store.drop()

    return make


def pinecone_factory() -> StoreFactory:
    from adapters.vectorstores.pinecone import PineconeVectorStore

    @asynccontextmanager
    async def make(dimension: int) -> AsyncIterator[VectorStore]:
        store = await PineconeVectorStore.open(
            os.environ["LUMINA_TEST_PINECONE_URL"],
            "ct-" + uuid.uuid4().hex[:12],
            dimension,
            api_key=os.environ.get("LUMINA_TEST_PINECONE_API_KEY", "pclocal"),
        )
        try:
            yield store
        finally:
            await store.drop()

    return make


def milvus_path(tmp: Path) -> str:
    return str(tmp / "milvus.db")
