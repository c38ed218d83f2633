"""Ports of the identity use cases: one unit of work over the identity repositories (with the
outbox for audit events and the mail outbox), and the security primitives as small Protocols."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol

import msgspec

from domain.events import DomainEvent
from domain.identity import (
    ApiKey,
    Membership,
    OidcIdentity,
    OidcLoginState,
    OidcProvider,
    PasskeyCredential,
    PasswordResetToken,
    RecoveryCode,
    Session,
    StrengthReport,
    Team,
    Tenant,
    TenantPolicy,
    TotpCredential,
    User,
    WebAuthnChallenge,
)

__all__ = [
    "ApiKeyRepository",
    "ChallengeRepository",
    "IdentityUnitOfWork",
    "IdentityUnitOfWorkFactory",
    "Kms",
    "LoginLimiter",
    "MailMessage",
    "MailOutbox",
    "MailRejected",
    "MailSender",
    "MembershipRepository",
    "NewPasskey",
    "OidcIdentityRepository",
    "OidcProviderRepository",
    "OidcStateRepository",
    "PasskeyRepository",
    "PasswordHasher",
    "PasswordStrength",
    "RecoveryCodeRepository",
    "ResetTokenRepository",
    "SecretGenerator",
    "SessionRepository",
    "TeamRepository",
    "TenantRepository",
    "TotpEngine",
    "TotpRepository",
    "UserRepository",
    "WebAuthnRelyingParty",
]


# --- repositories -----------------------------------------------------------------------------


class TenantRepository(Protocol):
    async def add(self, tenant: Tenant) -> None: ...

    async def get(self, tenant_id: str) -> Tenant | None: ...

    async def set_policy(self, tenant_id: str, policy: TenantPolicy) -> None: ...


class TeamRepository(Protocol):
    async def add(self, team: Team) -> None: ...

    async def list(self, tenant_id: str) -> Sequence[Team]: ...


class UserRepository(Protocol):
    async def add(self, user: User) -> None:
        """Raises ``domain.errors.InvalidRequest`` (field email) when the email is taken in the tenant."""
        ...

    async def get(self, tenant_id: str, user_id: str) -> User | None: ...

    async def by_email(self, tenant_id: str, email: str) -> User | None: ...

    async def set_password_hash(self, tenant_id: str, user_id: str, password_hash: str) -> None: ...

    async def set_email_verified(self, tenant_id: str, user_id: str) -> None: ...


class MembershipRepository(Protocol):
    async def put(self, membership: Membership) -> None:
        """Insert or replace the role of (tenant, user, team)."""
        ...

    async def list_for_user(self, tenant_id: str, user_id: str) -> Sequence[Membership]: ...


class SessionRepository(Protocol):
    async def add(self, session: Session) -> None: ...

    async def by_token_hash(self, token_hash: str) -> Session | None: ...

    async def touch(self, session_id: str, last_seen_at: datetime) -> None: ...

    async def delete(self, session_id: str) -> None: ...

    async def delete_for_user(self, tenant_id: str, user_id: str, *, except_id: str = "") -> int:
        """End every session of the user but ``except_id``; how many ended."""
        ...

    async def list_for_user(self, tenant_id: str, user_id: str) -> Sequence[Session]: ...


class TotpRepository(Protocol):
    async def put(self, credential: TotpCredential) -> None: ...

    async def get(self, tenant_id: str, user_id: str) -> TotpCredential | None: ...

    async def delete(self, tenant_id: str, user_id: str) -> None: ...

    async def advance_timecode(self, tenant_id: str, user_id: str, timecode: int) -> bool:
        """Atomically set last_timecode to ``timecode`` only if it is greater than the stored one:
        False when that code (or a later one) was already accepted, even by a concurrent call."""
        ...


class RecoveryCodeRepository(Protocol):
    async def replace(self, user_id: str, codes: Sequence[RecoveryCode]) -> None: ...

    async def unused(self, user_id: str) -> Sequence[RecoveryCode]: ...

    async def use(self, code_id: str, used_at: datetime) -> bool:
        """Mark used if still unused (atomic); False when it already was."""
        ...


class PasskeyRepository(Protocol):
    async def add(self, credential: PasskeyCredential) -> None: ...

    async def get(self, credential_id: bytes) -> PasskeyCredential | None: ...

    async def list_for_user(self, tenant_id: str, user_id: str) -> Sequence[PasskeyCredential]: ...

    async def update_sign_count(self, credential_id: bytes, expected: int, new: int, used_at: datetime) -> bool:
        """Compare-and-set of the sign count; False when another login moved it first."""
        ...

    async def delete(self, tenant_id: str, user_id: str, credential_id: bytes) -> bool: ...


class ChallengeRepository(Protocol):
    async def add(self, challenge: WebAuthnChallenge) -> None: ...

    async def take(self, challenge_id: str) -> WebAuthnChallenge | None:
        """Delete and return (single use); None when unknown or already taken."""
        ...


class ResetTokenRepository(Protocol):
    async def add(self, token: PasswordResetToken) -> None: ...

    async def consume(self, token_hash: str, now: datetime) -> PasswordResetToken | None:
        """Mark used and return it if it exists, is unused and unexpired (atomic), else None."""
        ...


class ApiKeyRepository(Protocol):
    async def add(self, key: ApiKey) -> None: ...

    async def by_prefix(self, prefix: str) -> ApiKey | None: ...

    async def list_for_tenant(self, tenant_id: str) -> Sequence[ApiKey]: ...

    async def revoke(self, tenant_id: str, key_id: str, at: datetime) -> bool: ...

    async def touch(self, key_id: str, at: datetime) -> None: ...


class OidcProviderRepository(Protocol):
    """One identity provider per tenant; the client secret is sealed at rest by the adapter."""

    async def put(self, provider: OidcProvider) -> None:
        """Insert or replace the tenant's provider."""
        ...

    async def get(self, tenant_id: str) -> OidcProvider | None: ...

    async def delete(self, tenant_id: str) -> bool: ...


class OidcIdentityRepository(Protocol):
    async def add(self, identity: OidcIdentity) -> bool:
        """False when (tenant, issuer, subject) is already linked (e.g. a concurrent first login)."""
        ...

    async def get(self, tenant_id: str, issuer: str, subject: str) -> OidcIdentity | None: ...

    async def list_for_user(self, tenant_id: str, user_id: str) -> Sequence[OidcIdentity]: ...

    async def touch(self, tenant_id: str, issuer: str, subject: str, at: datetime) -> None: ...


class OidcStateRepository(Protocol):
    async def add(self, state: OidcLoginState) -> None: ...

    async def take(self, state_hash: str) -> OidcLoginState | None:
        """Delete and return (single use, atomic); None when unknown or already taken."""
        ...

    async def purge_expired(self, now: datetime) -> int: ...


class MailMessage(msgspec.Struct, frozen=True):
    id: str
    to: str
    subject: str
    body: str


class MailOutbox(Protocol):
    """Mail written in the same transaction as the state change; a relay sends it. Bodies may hold
    one-time secrets (reset links), so they never go on the event bus and are wiped once sent."""

    async def add(self, message: MailMessage) -> None: ...

    async def claim_unsent(self, limit: int) -> Sequence[MailMessage]: ...

    async def mark_sent(self, message_id: str, at: datetime) -> None: ...

    async def mark_failed(self, message_id: str, at: datetime, error: str) -> None:
        """Out of the queue for good (body wiped), with why; ``error`` holds no message content."""
        ...


class IdentityUnitOfWork(Protocol):
    tenants: TenantRepository
    teams: TeamRepository
    users: UserRepository
    memberships: MembershipRepository
    sessions: SessionRepository
    totp: TotpRepository
    recovery_codes: RecoveryCodeRepository
    passkeys: PasskeyRepository
    challenges: ChallengeRepository
    reset_tokens: ResetTokenRepository
    api_keys: ApiKeyRepository
    mail: MailOutbox
    oidc_providers: OidcProviderRepository
    oidc_identities: OidcIdentityRepository
    oidc_states: OidcStateRepository

    def record(self, event: DomainEvent) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    async def __aenter__(self) -> IdentityUnitOfWork: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class IdentityUnitOfWorkFactory(Protocol):
    def __call__(self) -> IdentityUnitOfWork: ...


# --- security primitives ----------------------------------------------------------------------


class PasswordHasher(Protocol):
    def hash(self, password: str) -> str: ...

    def verify(self, password_hash: str, password: str) -> bool:
        """Constant-time; False on mismatch or an unreadable hash (never raises for those)."""
        ...

    def needs_rehash(self, password_hash: str) -> bool: ...

    def dummy_verify(self, password: str) -> None:
        """Spend the time of one verification against a fixed hash (unknown accounts)."""
        ...


class PasswordStrength(Protocol):
    def estimate(self, password: str, user_inputs: Sequence[str]) -> StrengthReport: ...


class SecretGenerator(Protocol):
    def token(self, nbytes: int = 32) -> str:
        """URL-safe random text with ``nbytes`` of entropy (CSPRNG)."""
        ...

    def short_code(self) -> str:
        """A human-typable random code (recovery codes)."""
        ...

    def digest(self, secret: str) -> str:
        """Hex SHA-256: how high-entropy secrets (tokens, API keys, codes) are stored."""
        ...

    def equal(self, a: str, b: str) -> bool:
        """Constant-time comparison."""
        ...


class TotpEngine(Protocol):
    def new_secret(self) -> str: ...

    def provisioning_uri(self, secret: str, account: str, issuer: str) -> str: ...

    def qr_svg(self, uri: str) -> str: ...

    def match(self, secret: str, code: str, at: datetime) -> int | None:
        """The timecode (30 s step) ``code`` is valid for at ``at`` (±1 step), else None."""
        ...


class NewPasskey(msgspec.Struct, frozen=True):
    credential_id: bytes
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...] = ()


class WebAuthnRelyingParty(Protocol):
    """py_webauthn behind a port. Verification failures raise ``InvalidCredentials`` (uniform)."""

    def registration_options(
        self, *, user_id: str, user_name: str, display_name: str, exclude: Sequence[bytes]
    ) -> tuple[str, bytes]:
        """(PublicKeyCredentialCreationOptions as JSON, challenge)."""
        ...

    def verify_registration(self, response_json: str, challenge: bytes) -> NewPasskey: ...

    def authentication_options(self, allow: Sequence[bytes]) -> tuple[str, bytes]: ...

    def credential_id_of(self, response_json: str) -> bytes:
        """The raw credential id an assertion names (InvalidCredentials when unreadable)."""
        ...

    def verify_authentication(
        self, response_json: str, challenge: bytes, public_key: bytes, sign_count: int
    ) -> int:
        """Verify an assertion; the new sign count."""
        ...


class LoginLimiter(Protocol):
    """Brute-force limiter over keys such as ``acct:<tenant>:<email>`` and ``ip:<address>`` (failures
    back off exponentially), and a fixed-window counter for actions open to anyone (sign-up, reset
    requests) per address or account."""

    async def check(self, keys: Sequence[str]) -> None:
        """Raise ``TooManyAttempts`` when any key is in its backoff period."""
        ...

    async def failed(self, keys: Sequence[str]) -> None: ...

    async def succeeded(self, keys: Sequence[str]) -> None: ...

    async def hit(self, key: str, *, limit: int, window_seconds: float) -> None:
        """Count one use of ``key``; past ``limit`` uses in the current window (which starts at the
        first use and lasts ``window_seconds``) raise ``TooManyAttempts`` until it ends."""
        ...


class Kms(Protocol):
    """Key management (``adapters.secrets``; same shape as ``application.registry.Kms``): seals
    secrets that must be read back (TOTP seeds, OIDC client secrets), bound to ``context``."""

    def encrypt(self, plaintext: bytes, context: dict[str, str]) -> bytes: ...

    def decrypt(self, ciphertext: bytes, context: dict[str, str]) -> bytes: ...


class MailRejected(Exception):
    """The mail server refused a message for good (a 5xx answer): sending it again cannot help."""


class MailSender(Protocol):
    async def send(self, message: MailMessage) -> None:
        """Deliver or raise: ``MailRejected`` when refused for good, ``Unavailable`` otherwise."""
        ...
