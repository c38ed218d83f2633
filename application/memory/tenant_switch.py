"""A tenant's long-term memory switch (``TenantPolicy.memory_enabled``), read by any member and
set by a tenant admin (or owner), audited.

``SetTenantMemory(actor, enabled)`` writes the switch and an ``AuthenticationAudited`` event
(method ``tenant_policy``, outcome ``changed``, reason ``memory_enabled=on|off``, the actor's user:
the same audit record as the tenant's other policy changes) in one transaction (outbox), only when
it changes; then it forgets this process's cached value (``on_change``: the chat hook's
``CachedTenantPolicies.invalidate``), so this replica honours the flip on its next request. Other
replicas forget theirs when the audit event reaches them over JetStream (``switched_tenant``, the
backend's listener in ``api.memory.follow_tenant_switches``), and in any case when their cache
entry expires (``MEMORY_TENANT_CACHE_SECONDS``, 30 s) — e.g. when no worker relays the outbox.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import msgspec

from domain.errors import NotFound
from domain.events import AuthenticationAudited, DomainEvent
from domain.identity import Principal, Role
from domain.ports import Clock, IdGenerator

__all__ = ["GetTenantMemory", "SetTenantMemory", "TenantMemory", "TenantMemoryStore", "switched_tenant"]

SWITCH_REASONS = frozenset({"memory_enabled=on", "memory_enabled=off"})


def switched_tenant(event: DomainEvent) -> str | None:
    """The tenant whose memory switch ``event`` (the audit ``SetTenantMemory`` records) changed."""
    if isinstance(event, AuthenticationAudited) and event.method == "tenant_policy" and event.reason in SWITCH_REASONS:
        return event.tenant_id
    return None


class TenantMemory(msgspec.Struct, frozen=True):
    enabled: bool
    changed: bool = False
    cache_seconds: float = 0.0  # how long other replicas may still act on the old value


class TenantMemoryStore(Protocol):
    async def memory_enabled(self, tenant_id: str) -> bool | None:
        """The tenant's switch; None when there is no such tenant."""
        ...

    async def set_memory_enabled(self, tenant_id: str, enabled: bool, events: Sequence[DomainEvent]) -> bool | None:
        """Set the switch and write ``events`` to the outbox, in one transaction, when it differs;
        returns the previous value (None: no such tenant, nothing written)."""
        ...


class GetTenantMemory:
    def __init__(self, store: TenantMemoryStore, *, cache_seconds: float = 0.0) -> None:
        self._store = store
        self._cache_seconds = cache_seconds

    async def __call__(self, actor: Principal) -> TenantMemory:
        actor.require(Role.VIEWER, "read the tenant's memory setting")
        enabled = await self._store.memory_enabled(actor.tenant_id)
        # a tenant known only to its credentials (no row yet) has the default policy: memory on
        return TenantMemory(True if enabled is None else enabled, cache_seconds=self._cache_seconds)


class SetTenantMemory:
    def __init__(
        self, store: TenantMemoryStore, clock: Clock, ids: IdGenerator, *, cache_seconds: float = 0.0,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._ids = ids
        self._cache_seconds = cache_seconds
        self._on_change = on_change

    async def __call__(self, actor: Principal, enabled: bool, *, client: str = "") -> TenantMemory:
        actor.require(Role.ADMIN, "turn the tenant's memory on or off")
        audit = AuthenticationAudited(
            event_id=self._ids.new_id(), tenant_id=actor.tenant_id, occurred_at=self._clock.now(), method="tenant_policy",
            outcome="changed", user_id=actor.user_id, reason=f"memory_enabled={'on' if enabled else 'off'}",
            client_address=client,
        )
        previous = await self._store.set_memory_enabled(actor.tenant_id, enabled, [audit])
        if previous is None:
            raise NotFound("tenant", actor.tenant_id)
        if self._on_change is not None:
            self._on_change(actor.tenant_id)
        return TenantMemory(enabled, changed=previous != enabled, cache_seconds=self._cache_seconds)
