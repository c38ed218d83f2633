"""Second factors and machine credentials: TOTP, recovery codes, passkeys, API keys, reset tokens,
WebAuthn challenges. Secrets appear here only as hashes (TOTP seeds excepted: verification needs
them; the repository seals them at rest with the key-management port)."""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec

from domain.identity.errors import InvalidCredentials

__all__ = [
    "API_KEY_SCHEME",
    "ApiKey",
    "CeremonyPurpose",
    "PasskeyCredential",
    "PasswordResetToken",
    "RecoveryCode",
    "TotpCredential",
    "WebAuthnChallenge",
    "format_api_key",
    "parse_api_key",
]

API_KEY_SCHEME = "lum"


class TotpCredential(msgspec.Struct, frozen=True):
    user_id: str
    tenant_id: str
    secret: str  # base32 seed
    confirmed: bool
    created_at: datetime
    last_timecode: int | None = None  # the last accepted 30 s step; each code is usable once


class RecoveryCode(msgspec.Struct, frozen=True):
    id: str
    user_id: str
    code_hash: str
    used_at: datetime | None = None


class PasskeyCredential(msgspec.Struct, frozen=True):
    credential_id: bytes
    user_id: str
    tenant_id: str
    public_key: bytes  # COSE key
    sign_count: int
    name: str
    created_at: datetime
    last_used_at: datetime | None = None
    transports: tuple[str, ...] = ()


class CeremonyPurpose(enum.StrEnum):
    REGISTRATION = "registration"
    AUTHENTICATION = "authentication"


class WebAuthnChallenge(msgspec.Struct, frozen=True):
    id: str
    purpose: CeremonyPurpose
    challenge: bytes
    expires_at: datetime
    tenant_id: str = ""
    user_id: str = ""  # set for registration and second-factor ceremonies


class PasswordResetToken(msgspec.Struct, frozen=True):
    token_hash: str
    user_id: str
    tenant_id: str
    expires_at: datetime
    used_at: datetime | None = None


class ApiKey(msgspec.Struct, frozen=True):
    id: str
    prefix: str
    secret_hash: str
    tenant_id: str
    user_id: str
    name: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    def usable(self, now: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at


def format_api_key(prefix: str, secret: str) -> str:
    return f"{API_KEY_SCHEME}_{prefix}_{secret}"


def parse_api_key(raw: str) -> tuple[str, str]:
    """``lum_<prefix>_<secret>`` -> (prefix, secret); anything else is InvalidCredentials."""
    parts = raw.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_SCHEME or not parts[1].isalnum() or len(parts[2]) < 20:
        raise InvalidCredentials("malformed api key")
    return parts[1], parts[2]
