"""``SqlUsageReader``: the ``UsageReader`` port over ``usage_records`` — requests, tokens and cost
grouped by dimension and UTC time bucket. Teams come from the callers' memberships (a user in two
teams counts in both; usage without a team shows under the team ""). Rows without a user or key
(written before identity) show under "" for those dimensions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.postgres.errors import translate_errors
from adapters.postgres.identity_tables import memberships
from adapters.postgres.tables import usage_records
from application.budgets.ports import UsageDimension, UsageQuery, UsageRow

__all__ = ["SqlUsageReader"]

_u = usage_records
_m = memberships.alias("team_membership")


def _column(dim: UsageDimension) -> Any:
    match dim:
        case UsageDimension.TENANT:
            return _u.c.tenant_id
        case UsageDimension.TEAM:
            return sa.func.coalesce(_m.c.team_id, "")
        case UsageDimension.USER:
            return sa.func.coalesce(_u.c.user_id, "")
        case UsageDimension.API_KEY:
            return sa.func.coalesce(_u.c.api_key_id, "")
        case UsageDimension.PROVIDER:
            return _u.c.provider
        case UsageDimension.MODEL:
            return _u.c.model


class SqlUsageReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def query(self, query: UsageQuery) -> Sequence[UsageRow]:
        groups: list[Any] = []
        labels: list[str] = []
        if query.bucket is not None:
            groups.append(sa.func.date_trunc(query.bucket.value, _u.c.created_at, "UTC").label("bucket_start"))
        for dim in query.group_by:
            groups.append(_column(dim).label(f"d_{dim.value}"))
            labels.append(dim.value)
        source: Any = _u
        if UsageDimension.TEAM in query.group_by or UsageDimension.TEAM in query.filters:
            source = _u.outerjoin(
                _m, sa.and_(_m.c.tenant_id == _u.c.tenant_id, _m.c.user_id == _u.c.user_id, _m.c.team_id != "")
            )
        stmt = (
            sa.select(
                *groups,
                sa.func.count().label("requests"),
                sa.func.coalesce(sa.func.sum(_u.c.input_tokens), 0).label("input_tokens"),
                sa.func.coalesce(sa.func.sum(_u.c.output_tokens), 0).label("output_tokens"),
                sa.func.coalesce(sa.func.sum(_u.c.cost_micros), 0).label("cost_micros"),
            )
            .select_from(source)
            .where(_u.c.tenant_id == query.tenant_id, _u.c.created_at >= query.start, _u.c.created_at < query.end)
        )
        for dim, value in query.filters.items():
            stmt = stmt.where(_column(dim) == value)
        if groups:
            stmt = stmt.group_by(*groups).order_by(*groups)
        stmt = stmt.limit(query.limit)
        async with translate_errors("query usage"), self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            UsageRow(
                bucket_start=row.bucket_start if query.bucket is not None else None,
                dimensions={label: getattr(row, f"d_{label}") for label in labels},
                requests=row.requests,
                input_tokens=int(row.input_tokens),
                output_tokens=int(row.output_tokens),
                cost_micros=int(row.cost_micros),
            )
            for row in rows
        ]
