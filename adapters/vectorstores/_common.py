"""Checks and helpers every vector store adapter shares."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from domain.errors import FieldViolation, InvalidRequest, Unavailable
from domain.memory.vectors import (
    MetadataFilter,
    VectorRecord,
    validate_ids,
    validate_query,
    validate_tenant,
)

__all__ = [
    "VectorStoreUnavailable",
    "check_delete",
    "check_query",
    "check_upsert",
    "last_wins",
    "record_uuid",
]

_NAMESPACE = uuid.UUID("6f1d4c1e-8a47-4c1b-9d8e-3b0f4f1a5c20")


class VectorStoreUnavailable(Unavailable):
    """The vector store cannot be reached or failed; retrying later may help."""

    retryable = True


def record_uuid(tenant_id: str, record_id: str) -> str:
    """A stable UUID for (tenant, id), for engines whose point ids must be UUIDs (Qdrant,
    Weaviate): ids are unique per tenant, so the tenant is part of the key."""
    return str(uuid.uuid5(_NAMESPACE, f"{len(tenant_id)}:{tenant_id}:{record_id}"))


def last_wins(records: Sequence[VectorRecord]) -> list[VectorRecord]:
    """One record per id, the last one given winning (what a sequence of upserts would leave)."""
    return list({r.id: r for r in records}.values())


def check_upsert(tenant_id: str, records: Sequence[VectorRecord], dimension: int) -> list[VectorRecord]:
    validate_tenant(tenant_id)
    problems: list[FieldViolation] = []
    for i, record in enumerate(records):
        if record.tenant_id != tenant_id:
            problems.append(FieldViolation(f"records[{i}].tenant_id", "must be the tenant the call is scoped to"))
        if len(record.vector) != dimension:
            problems.append(
                FieldViolation(
                    f"records[{i}].vector",
                    f"dimension mismatch: expected {dimension} values, got {len(record.vector)}",
                )
            )
    if problems:
        raise InvalidRequest(problems)
    return last_wins(records)


def check_delete(tenant_id: str, ids: Sequence[str]) -> list[str]:
    validate_tenant(tenant_id)
    return list(dict.fromkeys(validate_ids(ids)))


def check_query(
    tenant_id: str, vector: Sequence[float], k: int, filter: MetadataFilter | None, dimension: int
) -> tuple[tuple[float, ...], MetadataFilter]:
    validate_tenant(tenant_id)
    return validate_query(vector, k, dimension), filter if filter is not None else MetadataFilter()

