"""``VectorStore`` on a Weaviate server (REST + GraphQL over ``httpx``; the ``weaviate-client``
SDK is not used because it pins grpcio/protobuf below the versions Lumina runs on).

One Weaviate class per collection, with native multi-tenancy (``multiTenancyConfig``, tenants
created on first write): each Lumina tenant is a Weaviate tenant, a physically separate shard, and
every call names it. Metadata keys become properties ``m_<key>`` (declared on first use, text with
``field`` tokenisation so ``Equal`` is exact); the metadata is also kept verbatim as JSON so values
come back with their types. Vectors are supplied (``vectorizer: none``), distance cosine.

CI here has no Weaviate server: the contract suite runs this adapter only when
``LUMINA_TEST_WEAVIATE_URL`` is set.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

import httpx

from adapters.vectorstores._common import (
    VectorStoreUnavailable,
    check_delete,
    check_query,
    check_upsert,
    record_uuid,
)
from domain.errors import InvalidRequest
from domain.memory.vectors import Eq, ExactValue, In, MetadataFilter, MetadataValue, QueryHit, Range, VectorRecord

__all__ = ["WeaviateVectorStore", "weaviate_tenant", "weaviate_where"]

_TENANT_OK = re.compile(r"[A-Za-z0-9_-]{1,64}")
_RANGE_OPS = {"gte": "GreaterThanEqual", "gt": "GreaterThan", "lte": "LessThanEqual", "lt": "LessThan"}


def weaviate_tenant(tenant_id: str) -> str:
    """Weaviate tenant names allow ``[A-Za-z0-9_-]{1,64}``; other ids map to a stable hash."""
    if _TENANT_OK.fullmatch(tenant_id):
        return tenant_id
    return "h-" + hashlib.blake2b(tenant_id.encode(), digest_size=20).hexdigest()


def _data_type(value: MetadataValue) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "text"
    return "number"


def _value(value: ExactValue | float) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"valueBoolean": value}
    if isinstance(value, str):
        return {"valueText": value}
    return {"valueNumber": float(value)}


def weaviate_where(where: MetadataFilter) -> dict[str, Any] | None:
    operands: list[dict[str, Any]] = []
    for condition in where.conditions:
        match condition:
            case Eq(key=key, value=value):
                operands.append({"path": [f"m_{key}"], "operator": "Equal", **_value(value)})
            case In(key=key, values=values):
                operands.append(
                    {
                        "operator": "Or",
                        "operands": [{"path": [f"m_{key}"], "operator": "Equal", **_value(v)} for v in values],
                    }
                )
            case Range(key=key):
                operands += [
                    {"path": [f"m_{key}"], "operator": _RANGE_OPS[op], "valueNumber": float(bound)}
                    for op, bound in condition.bounds().items()
                ]
    if not operands:
        return None
    return operands[0] if len(operands) == 1 else {"operator": "And", "operands": operands}


def _graphql_value(value: object, key: str = "") -> str:
    """A GraphQL input literal: object keys unquoted, ``operator`` values as enum names, every
    other string JSON-escaped."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_graphql_value(v, k)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_graphql_value(v) for v in value) + "]"
    if key == "operator" and isinstance(value, str) and value.isalpha():
        return value
    return json.dumps(value)


class WeaviateVectorStore:
    def __init__(self, http: httpx.AsyncClient, class_name: str, dimension: int, properties: set[str]) -> None:
        self._http = http
        self._class = class_name
        self._dimension = dimension
        self._properties = properties

    @classmethod
    async def open(cls, http: httpx.AsyncClient, class_name: str, dimension: int) -> WeaviateVectorStore:
        """``http`` has the server as ``base_url`` (and an ``Authorization`` header when needed);
        the class is created when missing. The caller closes ``http``."""
        got = await cls._request(http, "GET", f"/v1/schema/{class_name}", ok=(200, 404))
        if got.status_code == 404:
            await cls._request(
                http,
                "POST",
                "/v1/schema",
                json={
                    "class": class_name,
                    "vectorizer": "none",
                    "vectorIndexConfig": {"distance": "cosine"},
                    "multiTenancyConfig": {"enabled": True, "autoTenantCreation": True},
                    "properties": [
                        {"name": "record_id", "dataType": ["text"], "tokenization": "field"},
                        {"name": "body", "dataType": ["text"], "indexFilterable": False, "indexSearchable": False},
                        {"name": "metadata_json", "dataType": ["text"], "indexFilterable": False, "indexSearchable": False},
                    ],
                },
            )
            properties = {"record_id", "body", "metadata_json"}
        else:
            properties = {p["name"] for p in got.json().get("properties", [])}
        return cls(http, class_name, dimension, properties)

    @property
    def dimension(self) -> int:
        return self._dimension

    @staticmethod
    async def _request(http: httpx.AsyncClient, method: str, url: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> httpx.Response:
        try:
            response = await http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise VectorStoreUnavailable(f"Weaviate {method} {url} failed: {type(exc).__name__}") from exc
        if response.status_code in ok:
            return response
        if 400 <= response.status_code < 500:
            raise InvalidRequest.single("weaviate", f"{response.status_code}: {response.text[:300]}")
        raise VectorStoreUnavailable(f"Weaviate {method} {url}: HTTP {response.status_code}")

    async def _declare(self, records: Sequence[VectorRecord]) -> None:
        for record in records:
            for key, value in record.metadata.items():
                name = f"m_{key}"
                if name in self._properties:
                    continue
                prop: dict[str, Any] = {"name": name, "dataType": [_data_type(value)]}
                if isinstance(value, str):
                    prop["tokenization"] = "field"
                await self._request(self._http, "POST", f"/v1/schema/{self._class}/properties", ok=(200, 422), json=prop)
                self._properties.add(name)

    async def upsert(self, tenant_id: str, records: Sequence[VectorRecord]) -> None:
        unique = check_upsert(tenant_id, records, self._dimension)
        if not unique:
            return
        await self._declare(unique)
        tenant = weaviate_tenant(tenant_id)
        objects = [
            {
                "class": self._class,
                "id": record_uuid(tenant_id, r.id),
                "tenant": tenant,
                "vector": list(r.vector),
                "properties": {
                    "record_id": r.id,
                    "body": r.text,
                    "metadata_json": json.dumps(r.metadata),
                    **{f"m_{k}": v for k, v in r.metadata.items()},
                },
            }
            for r in unique
        ]
        response = await self._request(self._http, "POST", "/v1/batch/objects", json={"objects": objects})
        errors = [o["result"]["errors"] for o in response.json() if (o.get("result") or {}).get("errors")]
        if errors:
            raise InvalidRequest.single("records", f"Weaviate rejected {len(errors)} objects: {str(errors[0])[:300]}")

    async def delete(self, tenant_id: str, ids: Sequence[str]) -> None:
        tenant = weaviate_tenant(tenant_id)
        for record_id in check_delete(tenant_id, ids):
            await self._request(
                self._http,
                "DELETE",
                f"/v1/objects/{self._class}/{record_uuid(tenant_id, record_id)}",
                ok=(204, 404, 422),  # 422: the tenant does not exist yet
                params={"tenant": tenant},
            )

    async def query(
        self, tenant_id: str, vector: Sequence[float], k: int, filter: MetadataFilter | None = None
    ) -> list[QueryHit]:
        query, where = check_query(tenant_id, vector, k, filter, self._dimension)
        arguments: dict[str, Any] = {
            "tenant": weaviate_tenant(tenant_id),
            "nearVector": {"vector": list(query)},
            "limit": k,
        }
        if (clause := weaviate_where(where)) is not None:
            arguments["where"] = clause
        args = ", ".join(f"{key}: {_graphql_value(value)}" for key, value in arguments.items())
        graphql = f"{{ Get {{ {self._class}({args}) {{ record_id body metadata_json _additional {{ distance }} }} }} }}"
        response = await self._request(self._http, "POST", "/v1/graphql", json={"query": graphql})
        payload = response.json()
        if payload.get("errors"):
            message = str(payload["errors"][0].get("message", ""))
            if "tenant" in message and "not found" in message:
                return []  # nothing was ever written for this tenant
            raise VectorStoreUnavailable(f"Weaviate query failed: {message[:300]}")
        objects = (payload.get("data") or {}).get("Get", {}).get(self._class) or []
        hits = [
            QueryHit(
                o["record_id"], 1.0 - float(o["_additional"]["distance"]), json.loads(o["metadata_json"] or "{}"), o["body"]
            )
            for o in objects
        ]
        hits.sort(key=lambda h: (-h.score, h.id))
        return hits

    async def drop(self) -> None:
        await self._request(self._http, "DELETE", f"/v1/schema/{self._class}", ok=(200, 404))
