"""``PostgresTenantPolicies``: a tenant's policy read straight from ``tenants`` (one primary-key
lookup, no unit of work), for ``application.memory.chat_hook.CachedTenantPolicies``;
``PostgresTenantMemory``: the tenant's memory switch, read and set (with its audit event)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.events_codec import encode_event
from adapters.postgres.errors import translate_errors
from adapters.postgres.identity_tables import tenants
from adapters.postgres.tables import outbox
from adapters.telemetry.tracing import inject_headers
from domain.events import DomainEvent
from domain.identity import TenantPolicy

__all__ = ["PostgresTenantMemory", "PostgresTenantPolicies"]

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


class PostgresTenantMemory:
    """``application.memory.tenant_switch.TenantMemoryStore``: the switch in ``tenants`` and the
    change's events in the outbox, in one transaction (the row locked while it is read)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def memory_enabled(self, tenant_id: str) -> bool | None:
        async with translate_errors("tenants.memory"), self._engine.connect() as conn:
            return await conn.scalar(sa.select(tenants.c.memory_enabled).where(tenants.c.id == tenant_id))  # type: ignore[no-any-return]

    async def set_memory_enabled(self, tenant_id: str, enabled: bool, events: Sequence[DomainEvent]) -> bool | None:
        async with translate_errors("tenants.set_memory"), self._engine.begin() as conn:
            previous = await conn.scalar(
                sa.select(tenants.c.memory_enabled).where(tenants.c.id == tenant_id).with_for_update()
            )
            if previous is None or previous == enabled:
                return previous  # type: ignore[no-any-return]
            await conn.execute(sa.update(tenants).where(tenants.c.id == tenant_id).values(memory_enabled=enabled))
            headers = inject_headers()
            for event in events:
                message = encode_event(event, headers)
                await conn.execute(sa.insert(outbox).values(
                    event_id=message.event_id, subject=message.subject, payload=message.payload, headers=dict(message.headers),
                ))
            return previous  # type: ignore[no-any-return]
