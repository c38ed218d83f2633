"""``QueryUsage``: spend and tokens of a tenant over time, grouped by tenant, team, user, API key,
provider or model and bucketed by hour, day, week or month (UTC). Admins see the whole tenant;
other members see their own usage only (the query is narrowed to their user)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from application.budgets.ports import (
    TimeBucket,
    UsageDimension,
    UsageQuery,
    UsageReader,
    UsageRow,
)
from domain.errors import InvalidRequest
from domain.identity import Principal, Role

__all__ = ["QueryUsage"]

MAX_SPAN = timedelta(days=400)
MAX_ROWS = 10_000


class QueryUsage:
    def __init__(self, reader: UsageReader) -> None:
        self._reader = reader

    async def __call__(
        self,
        principal: Principal,
        *,
        start: datetime,
        end: datetime,
        group_by: Sequence[UsageDimension] = (),
        bucket: TimeBucket | None = None,
        filters: dict[UsageDimension, str] | None = None,
        limit: int = MAX_ROWS,
    ) -> list[UsageRow]:
        principal.require(Role.VIEWER, "read usage")
        if start.tzinfo is None or end.tzinfo is None:
            raise InvalidRequest.single("start", "start and end must carry a timezone")
        if not start < end:
            raise InvalidRequest.single("end", "must be after start")
        if end - start > MAX_SPAN:
            raise InvalidRequest.single("end", f"a query spans at most {MAX_SPAN.days} days")
        if len(set(group_by)) != len(group_by):
            raise InvalidRequest.single("group_by", "a dimension is repeated")
        if not 1 <= limit <= MAX_ROWS:
            raise InvalidRequest.single("limit", f"1 to {MAX_ROWS}")
        wanted = dict(filters or {})
        wanted.pop(UsageDimension.TENANT, None)  # always the caller's tenant
        if not principal.role.includes(Role.ADMIN):
            wanted[UsageDimension.USER] = principal.user_id
        query = UsageQuery(
            tenant_id=principal.tenant_id,
            start=start,
            end=end,
            group_by=tuple(group_by),
            bucket=bucket,
            filters=wanted,
            limit=limit,
        )
        return list(await self._reader.query(query))
