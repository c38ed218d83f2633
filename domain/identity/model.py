"""Tenants, teams, users, memberships and roles. Everything in Lumina belongs to a tenant."""

from __future__ import annotations

import enum
import re
from datetime import datetime

import msgspec

from domain.errors import InvalidRequest
from domain.identity.errors import Forbidden

__all__ = [
    "Membership",
    "Principal",
    "PrincipalKind",
    "Role",
    "Team",
    "Tenant",
    "TenantPolicy",
    "User",
    "normalize_email",
    "validate_tenant_id",
]

_TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


def validate_tenant_id(tenant_id: str) -> str:
    """Tenant ids become NATS subject tokens: lowercase letters, digits and '-', 1-63 chars."""
    if not _TENANT_ID.match(tenant_id):
        raise InvalidRequest.single("tenant_id", "lowercase letters, digits and '-', 1 to 63 characters")
    return tenant_id


def normalize_email(email: str) -> str:
    value = email.strip().lower()
    if not _EMAIL.match(value):
        raise InvalidRequest.single("email", "not an email address")
    return value


class Role(enum.StrEnum):
    """Tenant roles, ordered: each includes the rights of the ones before it."""

    VIEWER = "viewer"
    MEMBER = "member"
    ADMIN = "admin"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def includes(self, other: Role) -> bool:
        return self.rank >= other.rank


class TenantPolicy(msgspec.Struct, frozen=True):
    require_mfa: bool = False
    # OIDC: create users on first login, and link an existing user by a verified email.
    oidc_jit_users: bool = False
    oidc_link_by_verified_email: bool = False
    # long-term memory in the chat path (recall and remember); a request may still turn it off
    memory_enabled: bool = True


class Tenant(msgspec.Struct, frozen=True):
    id: str
    name: str
    created_at: datetime
    policy: TenantPolicy = TenantPolicy()

    def __post_init__(self) -> None:
        validate_tenant_id(self.id)


class Team(msgspec.Struct, frozen=True):
    id: str
    tenant_id: str
    name: str
    created_at: datetime


class User(msgspec.Struct, frozen=True):
    id: str
    tenant_id: str
    email: str
    display_name: str
    created_at: datetime
    password_hash: str | None = None  # None: passwordless (passkey or OIDC only)
    email_verified: bool = False
    disabled: bool = False


class Membership(msgspec.Struct, frozen=True):
    """A user's role in the tenant (``team_id`` empty) or in one team of it."""

    tenant_id: str
    user_id: str
    role: Role
    team_id: str = ""


class PrincipalKind(enum.StrEnum):
    USER = "user"  # through a session
    API_KEY = "api_key"


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: resolved by the edges from a session token or an API key."""

    tenant_id: str
    user_id: str
    role: Role
    kind: PrincipalKind
    credential_id: str  # session id or API key id
    assurance_level: int = 1  # 1: one factor; 2: two factors (sessions only)
    team_ids: tuple[str, ...] = ()  # the teams the user belongs to (team budgets and limits)

    def require(self, role: Role, action: str) -> None:
        if not self.role.includes(role):
            raise Forbidden(action)
