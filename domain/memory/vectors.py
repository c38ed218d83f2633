"""Vector records, metadata filters and query hits: the values the ``VectorStore`` port speaks.

A record belongs to exactly one tenant; ids are unique per tenant (two tenants may both own id
``"m1"``). Scores are cosine similarities in [-1, 1], higher is nearer.

Metadata is a flat mapping of identifier-like keys to scalars (str, int, float, bool). Filters are
AND-combined conditions on those keys:

- ``Eq(key, value)`` and ``In(key, values)`` match exactly on str, int or bool values (a bool never
  equals an int);
- ``Range(key, gte=, gt=, lte=, lt=)`` matches numeric (int or float, never bool) values.

A record without the key never matches a condition on it. ``MetadataFilter.matches`` is the
reference semantics every adapter's translation must agree with.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TypeAlias

import msgspec
import msgspec.structs

from domain.errors import FieldViolation, InvalidRequest

__all__ = [
    "MAX_DIMENSION",
    "MAX_K",
    "Condition",
    "Eq",
    "ExactValue",
    "In",
    "MetadataFilter",
    "MetadataValue",
    "QueryHit",
    "Range",
    "VectorRecord",
    "cosine_similarity",
    "validate_ids",
    "validate_query",
    "validate_tenant",
    "validate_vector",
]

MAX_K = 1000
MAX_DIMENSION = 2000  # the HNSW index limit of pgvector's ``vector`` type
MAX_ID_LENGTH = 256
MAX_TENANT_LENGTH = 128
MAX_METADATA_KEYS = 64
MAX_STRING_VALUE = 4096
MAX_IN_VALUES = 256

MetadataValue: TypeAlias = str | int | float | bool
ExactValue: TypeAlias = str | int | bool

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_TENANT = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")


def validate_tenant(tenant_id: str, field: str = "tenant_id") -> str:
    if not isinstance(tenant_id, str) or not _TENANT.fullmatch(tenant_id):
        raise InvalidRequest.single(field, "1-128 letters, digits, '_', '.', ':' or '-'")
    return tenant_id


def _id_problem(record_id: object) -> str | None:
    if not isinstance(record_id, str) or not record_id:
        return "must be a non-empty string"
    if len(record_id) > MAX_ID_LENGTH:
        return f"at most {MAX_ID_LENGTH} characters"
    if not record_id.isprintable():
        return "must not contain control characters"
    return None


def validate_ids(ids: Sequence[str], field: str = "ids") -> tuple[str, ...]:
    problems = [FieldViolation(f"{field}[{i}]", p) for i, rid in enumerate(ids) if (p := _id_problem(rid))]
    if problems:
        raise InvalidRequest(problems)
    return tuple(ids)


def _vector_problem(vector: Sequence[float], dimension: int | None) -> str | None:
    if not vector:
        return "must not be empty"
    if dimension is not None and len(vector) != dimension:
        return f"dimension mismatch: expected {dimension} values, got {len(vector)}"
    if len(vector) > MAX_DIMENSION:
        return f"at most {MAX_DIMENSION} dimensions"
    norm = 0.0
    for x in vector:
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            return "values must be finite numbers"
        norm += float(x) * float(x)
    if norm == 0.0:
        return "must not be the zero vector (cosine is undefined)"
    return None


def validate_vector(vector: Sequence[float], dimension: int | None = None, field: str = "vector") -> tuple[float, ...]:
    """The vector as a tuple of floats; raises ``InvalidRequest`` naming ``field`` when it is empty,
    has the wrong dimension, holds a non-finite value or is all zeros."""
    if (problem := _vector_problem(vector, dimension)) is not None:
        raise InvalidRequest.single(field, problem)
    return tuple(float(x) for x in vector)


def validate_query(vector: Sequence[float], k: int, dimension: int) -> tuple[float, ...]:
    """Check a query's vector against the collection's ``dimension`` and ``k`` against 1..MAX_K."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidRequest.single("k", f"must be an integer between 1 and {MAX_K}")
    return validate_vector(vector, dimension)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _exact_equal(stored: object, wanted: ExactValue) -> bool:
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return isinstance(wanted, bool) and isinstance(stored, bool) and stored is wanted
    if isinstance(wanted, str):
        return isinstance(stored, str) and stored == wanted
    return isinstance(stored, int) and stored == wanted


def _key_problem(key: object) -> str | None:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        return "keys are 1-64 letters, digits or '_', not starting with a digit"
    return None


def _exact_problem(value: object) -> str | None:
    if not isinstance(value, str | int | bool):
        return "must be a string, an integer or a boolean"
    if isinstance(value, str) and len(value) > MAX_STRING_VALUE:
        return f"strings are at most {MAX_STRING_VALUE} characters"
    return None


class Eq(msgspec.Struct, frozen=True, tag="eq"):
    key: str
    value: ExactValue

    def __post_init__(self) -> None:
        problems = [p for p in (_key_problem(self.key), _exact_problem(self.value)) if p]
        if problems:
            raise InvalidRequest([FieldViolation(f"filter.eq.{self.key}", p) for p in problems])

    def matches(self, metadata: Mapping[str, MetadataValue]) -> bool:
        return self.key in metadata and _exact_equal(metadata[self.key], self.value)


class In(msgspec.Struct, frozen=True, tag="in"):
    key: str
    values: tuple[ExactValue, ...]

    def __post_init__(self) -> None:
        problems = [_key_problem(self.key)]
        if not self.values:
            problems.append("needs at least one value")
        elif len(self.values) > MAX_IN_VALUES:
            problems.append(f"at most {MAX_IN_VALUES} values")
        problems += [_exact_problem(v) for v in self.values]
        if real := [p for p in problems if p]:
            raise InvalidRequest([FieldViolation(f"filter.in.{self.key}", p) for p in dict.fromkeys(real)])

    def matches(self, metadata: Mapping[str, MetadataValue]) -> bool:
        return self.key in metadata and any(_exact_equal(metadata[self.key], v) for v in self.values)


class Range(msgspec.Struct, frozen=True, tag="range"):
    """Bounds on a numeric value; at least one of them is given."""

    key: str
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None

    def __post_init__(self) -> None:
        problems = [_key_problem(self.key)]
        bounds = self.bounds()
        if not bounds:
            problems.append("needs at least one bound")
        for name, bound in bounds.items():
            if not _is_number(bound) or not math.isfinite(bound):
                problems.append(f"{name} must be a finite number")
        if real := [p for p in problems if p]:
            raise InvalidRequest([FieldViolation(f"filter.range.{self.key}", p) for p in real])

    def bounds(self) -> dict[str, float]:
        """The given bounds by operator name (``gte``, ``gt``, ``lte``, ``lt``)."""
        pairs = (("gte", self.gte), ("gt", self.gt), ("lte", self.lte), ("lt", self.lt))
        return {name: bound for name, bound in pairs if bound is not None}

    def matches(self, metadata: Mapping[str, MetadataValue]) -> bool:
        value = metadata.get(self.key)
        if not _is_number(value):
            return False
        assert isinstance(value, int | float)
        return (
            (self.gte is None or value >= self.gte)
            and (self.gt is None or value > self.gt)
            and (self.lte is None or value <= self.lte)
            and (self.lt is None or value < self.lt)
        )


Condition: TypeAlias = Eq | In | Range


class MetadataFilter(msgspec.Struct, frozen=True):
    """Conditions that must all hold (AND). An empty filter matches every record."""

    conditions: tuple[Condition, ...] = ()

    @classmethod
    def of(cls, *conditions: Condition) -> MetadataFilter:
        return cls(tuple(conditions))

    def matches(self, metadata: Mapping[str, MetadataValue]) -> bool:
        return all(c.matches(metadata) for c in self.conditions)


def _metadata_problems(metadata: Mapping[str, object]) -> list[FieldViolation]:
    if not isinstance(metadata, Mapping):
        return [FieldViolation("metadata", "must be a mapping")]
    problems: list[FieldViolation] = []
    if len(metadata) > MAX_METADATA_KEYS:
        problems.append(FieldViolation("metadata", f"at most {MAX_METADATA_KEYS} keys"))
    for key, value in metadata.items():
        if p := _key_problem(key):
            problems.append(FieldViolation(f"metadata.{key}", p))
        elif not isinstance(value, str | int | float | bool):
            problems.append(FieldViolation(f"metadata.{key}", "values are strings, numbers or booleans"))
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(FieldViolation(f"metadata.{key}", "numbers must be finite"))
        elif isinstance(value, str) and len(value) > MAX_STRING_VALUE:
            problems.append(FieldViolation(f"metadata.{key}", f"at most {MAX_STRING_VALUE} characters"))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**53:
            problems.append(FieldViolation(f"metadata.{key}", "integers must fit in 53 bits"))
    return problems


class VectorRecord(msgspec.Struct, frozen=True):
    """One embedding with its metadata (and optionally the text it embeds). Validates itself;
    the collection's dimension is checked by the store."""

    id: str
    tenant_id: str
    vector: tuple[float, ...]
    metadata: dict[str, MetadataValue] = msgspec.field(default_factory=dict)
    text: str | None = None

    def __post_init__(self) -> None:
        problems: list[FieldViolation] = []
        if p := _id_problem(self.id):
            problems.append(FieldViolation("id", p))
        if not isinstance(self.tenant_id, str) or not _TENANT.fullmatch(self.tenant_id):
            problems.append(FieldViolation("tenant_id", "1-128 letters, digits, '_', '.', ':' or '-'"))
        if p := _vector_problem(self.vector, None):
            problems.append(FieldViolation("vector", p))
        problems += _metadata_problems(self.metadata)
        if self.text is not None and not isinstance(self.text, str):
            problems.append(FieldViolation("text", "must be a string"))
        if problems:
            raise InvalidRequest(problems)
        if not isinstance(self.vector, tuple) or not all(type(x) is float for x in self.vector):
            msgspec.structs.force_setattr(self, "vector", tuple(float(x) for x in self.vector))


class QueryHit(msgspec.Struct, frozen=True):
    """One result: the record's id, its cosine similarity to the query, its metadata and text."""

    id: str
    score: float
    metadata: dict[str, MetadataValue] = msgspec.field(default_factory=dict)
    text: str | None = None


def cosine_similarity(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb)
