"""A principal and a static authenticator for tests that build a backend on fake units of work
(``build_backend(..., authenticator=authenticator())``), and the credential they accept."""

from __future__ import annotations

from api.auth import StaticAuthenticator
from domain.identity import Principal, PrincipalKind, Role

__all__ = ["KEY", "KEY_ID", "METADATA", "authenticator", "bearer", "principal"]

KEY = "lum_0123456789ab_unit-test-key-0123456789"
KEY_ID = "key-1"
METADATA = (("authorization", f"Bearer {KEY}"),)


def bearer(credential: str = KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


def principal(tenant: str = "acme", role: Role = Role.ADMIN, *, user_id: str = "user-1", key_id: str = KEY_ID) -> Principal:
    return Principal(tenant_id=tenant, user_id=user_id, role=role, kind=PrincipalKind.API_KEY, credential_id=key_id)


def authenticator(tenant: str = "acme", role: Role = Role.ADMIN, **more: Principal) -> StaticAuthenticator:
    """Accepts ``KEY`` as an API key of ``tenant`` (and any ``credential=principal`` given)."""
    return StaticAuthenticator({KEY: principal(tenant, role), **more})
