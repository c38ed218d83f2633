"""``PostgresTenantPolicies``: a tenant's policy read straight from ``tenants`` (one primary-key
lookup, no unit of work), for ``application.memory.chat_hook.CachedTenantPolicies``."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.postgres.errors import translate_errors
from adapters.postgres.identity_tables import tenants
from domain.identity import TenantPolicy

__all__ = ["PostgresTenantPolicies"]

_SELECT = sa.select(
    tenants.c.require_mfa, tenants.c.oidc_jit_users, tenants.c.oidc_link_by_verified_email, tenants.c.memory_enabled
)


class PostgresTenantPolicies:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def policy(self, tenant_id: str) -> TenantPolicy | None:
        async with translate_errors("tenants.policy"), self._engine.connect() as conn:
            row = (await conn.execute(_SELECT.where(tenants.c.id == tenant_id))).first()
        if row is None:
            return None
        return TenantPolicy(
            require_mfa=row.require_mfa, oidc_jit_users=row.oidc_jit_users,
            oidc_link_by_verified_email=row.oidc_link_by_verified_email, memory_enabled=row.memory_enabled,
        )
