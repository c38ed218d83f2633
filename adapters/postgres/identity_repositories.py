"""Identity repositories in SQLAlchemy Core over the unit of work's ``AsyncSession``: rows map to
the domain's frozen Structs here, so the domain stays unaware of SQLAlchemy. The single-use
operations (TOTP timecode, recovery code, reset token, challenge, OIDC state, sign count) are one
conditional statement each, atomic under concurrency. Secrets that must be read back (TOTP seeds,
OIDC client secrets) are sealed here with the ``Kms`` port, bound to their row's identity, so the
domain and the use cases only ever see them plain and the database never does."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.postgres import identity_tables as t
from adapters.postgres.errors import translate_errors
from adapters.secrets import KmsError
from application.identity.ports import Kms, MailMessage
from domain.errors import InvalidRequest, Unavailable
from domain.identity import (
    ApiKey,
    CeremonyPurpose,
    Membership,
    OidcIdentity,
    OidcLoginState,
    OidcProvider,
    PasskeyCredential,
    PasswordResetToken,
    RecoveryCode,
    Role,
    Session,
    Team,
    Tenant,
    TenantPolicy,
    TotpCredential,
    User,
    WebAuthnChallenge,
)

__all__ = [
    "SqlApiKeyRepository",
    "SqlChallengeRepository",
    "SqlMailOutbox",
    "SqlMembershipRepository",
    "SqlOidcIdentityRepository",
    "SqlOidcProviderRepository",
    "SqlOidcStateRepository",
    "SqlPasskeyRepository",
    "SqlRecoveryCodeRepository",
    "SqlResetTokenRepository",
    "SqlSessionRepository",
    "SqlTeamRepository",
    "SqlTenantRepository",
    "SqlTotpRepository",
    "SqlUserRepository",
]


class _Repo:
    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    async def _exec(self, what: str, stmt: Any) -> Any:
        async with translate_errors(what):
            return await self._s.execute(stmt)


class _Sealing(_Repo):
    def __init__(self, session: AsyncSession, kms: Kms) -> None:
        super().__init__(session)
        self._kms = kms

    def _seal(self, plaintext: str, context: dict[str, str]) -> bytes:
        return self._kms.encrypt(plaintext.encode(), context)

    def _unseal(self, what: str, ciphertext: bytes, context: dict[str, str]) -> str:
        try:
            return self._kms.decrypt(bytes(ciphertext), context).decode()
        except KmsError as exc:  # the message names no secret; the key file or the row is wrong
            raise Unavailable(f"cannot unseal the {what}: {exc}") from exc


def totp_seed_context(tenant_id: str, user_id: str) -> dict[str, str]:
    return {"purpose": "totp_seed", "tenant_id": tenant_id, "user_id": user_id}


def oidc_secret_context(tenant_id: str, issuer: str, client_id: str) -> dict[str, str]:
    return {"purpose": "oidc_client_secret", "tenant_id": tenant_id, "issuer": issuer, "client_id": client_id}


class SqlTenantRepository(_Repo):
    async def add(self, tenant: Tenant) -> None:
        values = dict(id=tenant.id, name=tenant.name, created_at=tenant.created_at, require_mfa=tenant.policy.require_mfa,
                      oidc_jit_users=tenant.policy.oidc_jit_users,
                      oidc_link_by_verified_email=tenant.policy.oidc_link_by_verified_email,
                      memory_enabled=tenant.policy.memory_enabled)
        try:
            async with self._s.begin_nested():
                await self._exec("tenants.add", sa.insert(t.tenants).values(**values))
        except IntegrityError as exc:
            raise InvalidRequest.single("tenant_id", "already exists") from exc

    async def get(self, tenant_id: str) -> Tenant | None:
        row = (await self._exec("tenants.get", sa.select(t.tenants).where(t.tenants.c.id == tenant_id))).first()
        if row is None:
            return None
        return Tenant(
            id=row.id, name=row.name, created_at=row.created_at,
            policy=TenantPolicy(require_mfa=row.require_mfa, oidc_jit_users=row.oidc_jit_users,
                                oidc_link_by_verified_email=row.oidc_link_by_verified_email,
                                memory_enabled=row.memory_enabled),
        )

    async def set_policy(self, tenant_id: str, policy: TenantPolicy) -> None:
        await self._exec("tenants.set_policy", sa.update(t.tenants).where(t.tenants.c.id == tenant_id).values(
            require_mfa=policy.require_mfa, oidc_jit_users=policy.oidc_jit_users,
            oidc_link_by_verified_email=policy.oidc_link_by_verified_email, memory_enabled=policy.memory_enabled))


class SqlTeamRepository(_Repo):
    async def add(self, team: Team) -> None:
        try:
            async with self._s.begin_nested():
                await self._exec("teams.add", sa.insert(t.teams).values(
                    id=team.id, tenant_id=team.tenant_id, name=team.name, created_at=team.created_at))
        except IntegrityError as exc:
            raise InvalidRequest.single("name", "a team of that name exists") from exc

    async def list(self, tenant_id: str) -> Sequence[Team]:
        rows = await self._exec("teams.list", sa.select(t.teams).where(t.teams.c.tenant_id == tenant_id).order_by(t.teams.c.name))
        return [Team(id=r.id, tenant_id=r.tenant_id, name=r.name, created_at=r.created_at) for r in rows]


def _user(row: Any) -> User:
    return User(id=row.id, tenant_id=row.tenant_id, email=row.email, display_name=row.display_name,
                created_at=row.created_at, password_hash=row.password_hash, email_verified=row.email_verified,
                disabled=row.disabled)


class SqlUserRepository(_Repo):
    async def add(self, user: User) -> None:
        try:
            async with self._s.begin_nested():
                await self._exec("users.add", sa.insert(t.users).values(
                    id=user.id, tenant_id=user.tenant_id, email=user.email, display_name=user.display_name,
                    password_hash=user.password_hash, email_verified=user.email_verified, disabled=user.disabled,
                    created_at=user.created_at))
        except IntegrityError as exc:
            raise InvalidRequest.single("email", "cannot register this address") from exc

    async def get(self, tenant_id: str, user_id: str) -> User | None:
        stmt = sa.select(t.users).where(t.users.c.tenant_id == tenant_id, t.users.c.id == user_id)
        row = (await self._exec("users.get", stmt)).first()
        return None if row is None else _user(row)

    async def by_email(self, tenant_id: str, email: str) -> User | None:
        stmt = sa.select(t.users).where(t.users.c.tenant_id == tenant_id, t.users.c.email == email)
        row = (await self._exec("users.by_email", stmt)).first()
        return None if row is None else _user(row)

    async def set_password_hash(self, tenant_id: str, user_id: str, password_hash: str) -> None:
        await self._exec("users.set_password_hash", sa.update(t.users).where(
            t.users.c.tenant_id == tenant_id, t.users.c.id == user_id).values(password_hash=password_hash))

    async def set_email_verified(self, tenant_id: str, user_id: str) -> None:
        await self._exec("users.set_email_verified", sa.update(t.users).where(
            t.users.c.tenant_id == tenant_id, t.users.c.id == user_id).values(email_verified=True))


class SqlMembershipRepository(_Repo):
    async def put(self, membership: Membership) -> None:
        stmt = insert(t.memberships).values(tenant_id=membership.tenant_id, user_id=membership.user_id,
                                            team_id=membership.team_id, role=membership.role.value)
        stmt = stmt.on_conflict_do_update(index_elements=["tenant_id", "user_id", "team_id"], set_={"role": stmt.excluded.role})
        await self._exec("memberships.put", stmt)

    async def list_for_user(self, tenant_id: str, user_id: str) -> Sequence[Membership]:
        rows = await self._exec("memberships.list", sa.select(t.memberships).where(
            t.memberships.c.tenant_id == tenant_id, t.memberships.c.user_id == user_id))
        return [Membership(tenant_id=r.tenant_id, user_id=r.user_id, role=Role(r.role), team_id=r.team_id) for r in rows]


def _session(r: Any) -> Session:
    return Session(id=r.id, token_hash=r.token_hash, tenant_id=r.tenant_id, user_id=r.user_id, created_at=r.created_at,
                   last_seen_at=r.last_seen_at, assurance_level=r.assurance_level,
                   pending_second_factor=r.pending_second_factor, second_factor_at=r.second_factor_at)


class SqlSessionRepository(_Repo):
    async def add(self, session: Session) -> None:
        await self._exec("sessions.add", sa.insert(t.auth_sessions).values(
            id=session.id, token_hash=session.token_hash, tenant_id=session.tenant_id, user_id=session.user_id,
            created_at=session.created_at, last_seen_at=session.last_seen_at, assurance_level=session.assurance_level,
            pending_second_factor=session.pending_second_factor, second_factor_at=session.second_factor_at))

    async def by_token_hash(self, token_hash: str) -> Session | None:
        row = (await self._exec("sessions.get", sa.select(t.auth_sessions).where(
            t.auth_sessions.c.token_hash == token_hash))).first()
        return None if row is None else _session(row)

    async def touch(self, session_id: str, last_seen_at: datetime) -> None:
        await self._exec("sessions.touch", sa.update(t.auth_sessions).where(
            t.auth_sessions.c.id == session_id).values(last_seen_at=last_seen_at))

    async def delete(self, session_id: str) -> None:
        await self._exec("sessions.delete", sa.delete(t.auth_sessions).where(t.auth_sessions.c.id == session_id))

    async def delete_for_user(self, tenant_id: str, user_id: str, *, except_id: str = "") -> int:
        c = t.auth_sessions.c
        result = await self._exec("sessions.delete_for_user", sa.delete(t.auth_sessions).where(
            c.tenant_id == tenant_id, c.user_id == user_id, c.id != except_id))
        return int(result.rowcount or 0)

    async def list_for_user(self, tenant_id: str, user_id: str) -> Sequence[Session]:
        c = t.auth_sessions.c
        rows = await self._exec("sessions.list", sa.select(t.auth_sessions).where(
            c.tenant_id == tenant_id, c.user_id == user_id).order_by(c.created_at))
        return [_session(r) for r in rows]


class SqlTotpRepository(_Sealing):
    """Seeds are sealed (``seed_ciphertext``); a plaintext seed left by a revision before 0008 is
    sealed, and its plaintext cleared, the first time it is read."""

    async def put(self, credential: TotpCredential) -> None:
        sealed = self._seal(credential.secret, totp_seed_context(credential.tenant_id, credential.user_id))
        values = dict(user_id=credential.user_id, tenant_id=credential.tenant_id, secret=None, seed_ciphertext=sealed,
                      confirmed=credential.confirmed, created_at=credential.created_at,
                      last_timecode=credential.last_timecode)
        stmt = insert(t.totp_credentials).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=["user_id"], set_={k: v for k, v in values.items() if k != "user_id"})
        await self._exec("totp.put", stmt)

    async def get(self, tenant_id: str, user_id: str) -> TotpCredential | None:
        c = t.totp_credentials.c
        row = (await self._exec("totp.get", sa.select(t.totp_credentials).where(
            c.tenant_id == tenant_id, c.user_id == user_id))).first()
        if row is None:
            return None
        context = totp_seed_context(row.tenant_id, row.user_id)
        if row.seed_ciphertext is not None:
            seed = self._unseal("TOTP seed", row.seed_ciphertext, context)
        elif row.secret:
            seed = row.secret
            await self._exec("totp.seal_legacy", sa.update(t.totp_credentials).where(c.user_id == row.user_id).values(
                seed_ciphertext=self._seal(seed, context), secret=None))
        else:
            return None
        return TotpCredential(user_id=row.user_id, tenant_id=row.tenant_id, secret=seed, confirmed=row.confirmed,
                              created_at=row.created_at, last_timecode=row.last_timecode)

    async def delete(self, tenant_id: str, user_id: str) -> None:
        c = t.totp_credentials.c
        await self._exec("totp.delete", sa.delete(t.totp_credentials).where(c.tenant_id == tenant_id, c.user_id == user_id))

    async def advance_timecode(self, tenant_id: str, user_id: str, timecode: int) -> bool:
        # Row lock + re-check under READ COMMITTED: a concurrent transaction with the same code
        # waits for ours and then finds the condition false.
        c = t.totp_credentials.c
        stmt = (
            sa.update(t.totp_credentials)
            .where(c.tenant_id == tenant_id, c.user_id == user_id, c.confirmed.is_(True),
                   sa.or_(c.last_timecode.is_(None), c.last_timecode < timecode))
            .values(last_timecode=timecode)
            .returning(c.user_id)
        )
        return (await self._exec("totp.advance", stmt)).first() is not None


class SqlRecoveryCodeRepository(_Repo):
    async def replace(self, user_id: str, codes: Sequence[RecoveryCode]) -> None:
        await self._exec("recovery.clear", sa.delete(t.recovery_codes).where(t.recovery_codes.c.user_id == user_id))
        if codes:
            await self._exec("recovery.add", sa.insert(t.recovery_codes).values(
                [dict(id=c.id, user_id=c.user_id, code_hash=c.code_hash, used_at=c.used_at) for c in codes]))

    async def unused(self, user_id: str) -> Sequence[RecoveryCode]:
        c = t.recovery_codes.c
        rows = await self._exec("recovery.unused", sa.select(t.recovery_codes).where(c.user_id == user_id, c.used_at.is_(None)))
        return [RecoveryCode(id=r.id, user_id=r.user_id, code_hash=r.code_hash, used_at=r.used_at) for r in rows]

    async def use(self, code_id: str, used_at: datetime) -> bool:
        c = t.recovery_codes.c
        stmt = sa.update(t.recovery_codes).where(c.id == code_id, c.used_at.is_(None)).values(used_at=used_at).returning(c.id)
        return (await self._exec("recovery.use", stmt)).first() is not None


def _passkey(r: Any) -> PasskeyCredential:
    return PasskeyCredential(credential_id=bytes(r.credential_id), user_id=r.user_id, tenant_id=r.tenant_id,
                             public_key=bytes(r.public_key), sign_count=r.sign_count, name=r.name,
                             created_at=r.created_at, last_used_at=r.last_used_at, transports=tuple(r.transports or ()))


class SqlPasskeyRepository(_Repo):
    async def add(self, credential: PasskeyCredential) -> None:
        await self._exec("passkeys.add", sa.insert(t.passkeys).values(
            credential_id=credential.credential_id, user_id=credential.user_id, tenant_id=credential.tenant_id,
            public_key=credential.public_key, sign_count=credential.sign_count, name=credential.name,
            created_at=credential.created_at, last_used_at=credential.last_used_at, transports=list(credential.transports)))

    async def get(self, credential_id: bytes) -> PasskeyCredential | None:
        row = (await self._exec("passkeys.get", sa.select(t.passkeys).where(t.passkeys.c.credential_id == credential_id))).first()
        return None if row is None else _passkey(row)

    async def list_for_user(self, tenant_id: str, user_id: str) -> Sequence[PasskeyCredential]:
        c = t.passkeys.c
        rows = await self._exec("passkeys.list", sa.select(t.passkeys).where(
            c.tenant_id == tenant_id, c.user_id == user_id).order_by(c.created_at))
        return [_passkey(r) for r in rows]

    async def update_sign_count(self, credential_id: bytes, expected: int, new: int, used_at: datetime) -> bool:
        c = t.passkeys.c
        stmt = (sa.update(t.passkeys).where(c.credential_id == credential_id, c.sign_count == expected)
                .values(sign_count=new, last_used_at=used_at).returning(c.credential_id))
        return (await self._exec("passkeys.sign_count", stmt)).first() is not None

    async def delete(self, tenant_id: str, user_id: str, credential_id: bytes) -> bool:
        c = t.passkeys.c
        stmt = sa.delete(t.passkeys).where(c.tenant_id == tenant_id, c.user_id == user_id,
                                           c.credential_id == credential_id).returning(c.credential_id)
        return (await self._exec("passkeys.delete", stmt)).first() is not None


class SqlChallengeRepository(_Repo):
    async def add(self, challenge: WebAuthnChallenge) -> None:
        await self._exec("challenges.add", sa.insert(t.webauthn_challenges).values(
            id=challenge.id, purpose=challenge.purpose.value, challenge=challenge.challenge,
            expires_at=challenge.expires_at, tenant_id=challenge.tenant_id, user_id=challenge.user_id))

    async def take(self, challenge_id: str) -> WebAuthnChallenge | None:
        c = t.webauthn_challenges.c
        row = (await self._exec("challenges.take", sa.delete(t.webauthn_challenges).where(c.id == challenge_id)
                                .returning(*t.webauthn_challenges.c))).first()
        if row is None:
            return None
        return WebAuthnChallenge(id=row.id, purpose=CeremonyPurpose(row.purpose), challenge=bytes(row.challenge),
                                 expires_at=row.expires_at, tenant_id=row.tenant_id, user_id=row.user_id)


class SqlResetTokenRepository(_Repo):
    async def add(self, token: PasswordResetToken) -> None:
        await self._exec("reset_tokens.add", sa.insert(t.password_reset_tokens).values(
            token_hash=token.token_hash, user_id=token.user_id, tenant_id=token.tenant_id,
            expires_at=token.expires_at, used_at=token.used_at))

    async def consume(self, token_hash: str, now: datetime) -> PasswordResetToken | None:
        c = t.password_reset_tokens.c
        stmt = (sa.update(t.password_reset_tokens)
                .where(c.token_hash == token_hash, c.used_at.is_(None), c.expires_at > now)
                .values(used_at=now).returning(*t.password_reset_tokens.c))
        row = (await self._exec("reset_tokens.consume", stmt)).first()
        if row is None:
            return None
        return PasswordResetToken(token_hash=row.token_hash, user_id=row.user_id, tenant_id=row.tenant_id,
                                  expires_at=row.expires_at, used_at=row.used_at)


def _api_key(r: Any) -> ApiKey:
    return ApiKey(id=r.id, prefix=r.prefix, secret_hash=r.secret_hash, tenant_id=r.tenant_id, user_id=r.user_id,
                  name=r.name, created_at=r.created_at, expires_at=r.expires_at, revoked_at=r.revoked_at,
                  last_used_at=r.last_used_at)


class SqlApiKeyRepository(_Repo):
    async def add(self, key: ApiKey) -> None:
        await self._exec("api_keys.add", sa.insert(t.api_keys).values(
            id=key.id, prefix=key.prefix, secret_hash=key.secret_hash, tenant_id=key.tenant_id, user_id=key.user_id,
            name=key.name, created_at=key.created_at, expires_at=key.expires_at, revoked_at=key.revoked_at,
            last_used_at=key.last_used_at))

    async def by_prefix(self, prefix: str) -> ApiKey | None:
        row = (await self._exec("api_keys.get", sa.select(t.api_keys).where(t.api_keys.c.prefix == prefix))).first()
        return None if row is None else _api_key(row)

    async def list_for_tenant(self, tenant_id: str) -> Sequence[ApiKey]:
        c = t.api_keys.c
        rows = await self._exec("api_keys.list", sa.select(t.api_keys).where(c.tenant_id == tenant_id).order_by(c.created_at))
        return [_api_key(r) for r in rows]

    async def revoke(self, tenant_id: str, key_id: str, at: datetime) -> bool:
        c = t.api_keys.c
        stmt = (sa.update(t.api_keys).where(c.tenant_id == tenant_id, c.id == key_id, c.revoked_at.is_(None))
                .values(revoked_at=at).returning(c.id))
        return (await self._exec("api_keys.revoke", stmt)).first() is not None

    async def touch(self, key_id: str, at: datetime) -> None:
        await self._exec("api_keys.touch", sa.update(t.api_keys).where(t.api_keys.c.id == key_id).values(last_used_at=at))


class SqlMailOutbox(_Repo):
    async def add(self, message: MailMessage) -> None:
        await self._exec("mail.add", sa.insert(t.mail_outbox).values(
            id=message.id, recipient=message.to, subject=message.subject, body=message.body))

    async def claim_unsent(self, limit: int) -> Sequence[MailMessage]:
        c = t.mail_outbox.c
        stmt = (sa.select(c.id, c.recipient, c.subject, c.body).where(c.sent_at.is_(None)).order_by(c.seq)
                .limit(limit).with_for_update(skip_locked=True))
        rows = await self._exec("mail.claim", stmt)
        return [MailMessage(id=r.id, to=r.recipient, subject=r.subject, body=r.body) for r in rows]

    async def mark_sent(self, message_id: str, at: datetime) -> None:
        await self._exec("mail.sent", sa.update(t.mail_outbox).where(t.mail_outbox.c.id == message_id).values(sent_at=at, body=""))

    async def mark_failed(self, message_id: str, at: datetime, error: str) -> None:
        await self._exec("mail.failed", sa.update(t.mail_outbox).where(t.mail_outbox.c.id == message_id).values(
            sent_at=at, body="", error=error[:500]))


class SqlOidcProviderRepository(_Sealing):
    async def put(self, provider: OidcProvider) -> None:
        now = provider.created_at
        values = dict(
            tenant_id=provider.tenant_id, issuer=provider.issuer, client_id=provider.client_id,
            client_secret_ciphertext=self._seal(
                provider.client_secret, oidc_secret_context(provider.tenant_id, provider.issuer, provider.client_id)),
            redirect_uris=list(provider.redirect_uris), scopes=list(provider.scopes),
            created_at=now or sa.func.now(), updated_at=now or sa.func.now(),
        )
        stmt = insert(t.oidc_providers).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id"],
            set_={k: v for k, v in values.items() if k not in ("tenant_id", "created_at")},
        )
        await self._exec("oidc_providers.put", stmt)

    async def get(self, tenant_id: str) -> OidcProvider | None:
        row = (await self._exec("oidc_providers.get", sa.select(t.oidc_providers).where(
            t.oidc_providers.c.tenant_id == tenant_id))).first()
        if row is None:
            return None
        secret = self._unseal("OIDC client secret", row.client_secret_ciphertext,
                              oidc_secret_context(row.tenant_id, row.issuer, row.client_id))
        return OidcProvider(tenant_id=row.tenant_id, issuer=row.issuer, client_id=row.client_id, client_secret=secret,
                            redirect_uris=tuple(row.redirect_uris), scopes=tuple(row.scopes), created_at=row.created_at)

    async def delete(self, tenant_id: str) -> bool:
        c = t.oidc_providers.c
        stmt = sa.delete(t.oidc_providers).where(c.tenant_id == tenant_id).returning(c.tenant_id)
        return (await self._exec("oidc_providers.delete", stmt)).first() is not None


def _oidc_identity(r: Any) -> OidcIdentity:
    return OidcIdentity(tenant_id=r.tenant_id, issuer=r.issuer, subject=r.subject, user_id=r.user_id,
                        created_at=r.created_at, email=r.email, last_login_at=r.last_login_at)


class SqlOidcIdentityRepository(_Repo):
    async def add(self, identity: OidcIdentity) -> bool:
        c = t.oidc_identities.c
        stmt = (insert(t.oidc_identities).values(
            tenant_id=identity.tenant_id, issuer=identity.issuer, subject=identity.subject, user_id=identity.user_id,
            email=identity.email, created_at=identity.created_at, last_login_at=identity.last_login_at)
            .on_conflict_do_nothing(index_elements=["tenant_id", "issuer", "subject"]).returning(c.subject))
        return (await self._exec("oidc_identities.add", stmt)).first() is not None

    async def get(self, tenant_id: str, issuer: str, subject: str) -> OidcIdentity | None:
        c = t.oidc_identities.c
        row = (await self._exec("oidc_identities.get", sa.select(t.oidc_identities).where(
            c.tenant_id == tenant_id, c.issuer == issuer, c.subject == subject))).first()
        return None if row is None else _oidc_identity(row)

    async def list_for_user(self, tenant_id: str, user_id: str) -> Sequence[OidcIdentity]:
        c = t.oidc_identities.c
        rows = await self._exec("oidc_identities.list", sa.select(t.oidc_identities).where(
            c.tenant_id == tenant_id, c.user_id == user_id).order_by(c.created_at))
        return [_oidc_identity(r) for r in rows]

    async def touch(self, tenant_id: str, issuer: str, subject: str, at: datetime) -> None:
        c = t.oidc_identities.c
        await self._exec("oidc_identities.touch", sa.update(t.oidc_identities).where(
            c.tenant_id == tenant_id, c.issuer == issuer, c.subject == subject).values(last_login_at=at))


class SqlOidcStateRepository(_Repo):
    async def add(self, state: OidcLoginState) -> None:
        await self._exec("oidc_states.add", sa.insert(t.oidc_login_states).values(
            state_hash=state.state_hash, tenant_id=state.tenant_id, nonce=state.nonce,
            code_verifier=state.code_verifier, redirect_uri=state.redirect_uri, expires_at=state.expires_at))

    async def take(self, state_hash: str) -> OidcLoginState | None:
        c = t.oidc_login_states.c
        row = (await self._exec("oidc_states.take", sa.delete(t.oidc_login_states).where(c.state_hash == state_hash)
                                .returning(*t.oidc_login_states.c))).first()
        if row is None:
            return None
        return OidcLoginState(state_hash=row.state_hash, tenant_id=row.tenant_id, nonce=row.nonce,
                              code_verifier=row.code_verifier, redirect_uri=row.redirect_uri, expires_at=row.expires_at)

    async def purge_expired(self, now: datetime) -> int:
        c = t.oidc_login_states.c
        result = await self._exec("oidc_states.purge", sa.delete(t.oidc_login_states).where(c.expires_at <= now))
        return int(result.rowcount or 0)
