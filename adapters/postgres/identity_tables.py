"""Identity schema (revisions 0004 and 0008) on the shared ``tables.metadata``: tenants, teams,
users, memberships, sessions, second factors, API keys, reset tokens, WebAuthn challenges, mail
outbox, OIDC providers, identities and login states. Secrets are stored as hashes, or sealed by the
key-management port where they must be read back (TOTP seeds, OIDC client secrets). Constraint
names follow the metadata's naming convention, so the revisions spell them out the same."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import BYTEA, JSONB

from adapters.postgres.tables import metadata

__all__ = [
    "api_keys",
    "auth_sessions",
    "mail_outbox",
    "memberships",
    "oidc_identities",
    "oidc_login_states",
    "oidc_providers",
    "passkeys",
    "password_reset_tokens",
    "recovery_codes",
    "teams",
    "tenants",
    "totp_credentials",
    "users",
    "webauthn_challenges",
]

_now = sa.text("now()")
_ts = sa.DateTime(timezone=True)


def _user_fk() -> sa.ForeignKey:
    return sa.ForeignKey("users.id", ondelete="CASCADE")


tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("require_mfa", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("oidc_jit_users", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("oidc_link_by_verified_email", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("memory_enabled", sa.Boolean, nullable=False, server_default=sa.true()),
)

teams = sa.Table(
    "teams",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", _ts, nullable=False),
    sa.UniqueConstraint("tenant_id", "name", name="uq_teams_tenant_id"),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text, nullable=False, server_default=""),
    sa.Column("password_hash", sa.Text, nullable=True),
    sa.Column("email_verified", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", _ts, nullable=False),
    sa.UniqueConstraint("tenant_id", "email", name="uq_users_tenant_id"),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("tenant_id", sa.Text, sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.Text, _user_fk(), primary_key=True),
    sa.Column("team_id", sa.Text, primary_key=True, server_default=""),  # '' = the whole tenant
    sa.Column("role", sa.Text, nullable=False),
)

auth_sessions = sa.Table(
    "auth_sessions",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("token_hash", sa.Text, nullable=False, unique=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("user_id", sa.Text, _user_fk(), nullable=False),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("last_seen_at", _ts, nullable=False),
    sa.Column("assurance_level", sa.SmallInteger, nullable=False),
    sa.Column("pending_second_factor", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("second_factor_at", _ts, nullable=True),
    sa.Index("ix_auth_sessions_tenant_user", "tenant_id", "user_id"),
)

totp_credentials = sa.Table(
    "totp_credentials",
    metadata,
    sa.Column("user_id", sa.Text, _user_fk(), primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("secret", sa.Text, nullable=True),  # legacy plaintext seed (before 0008); sealed on first read
    sa.Column("seed_ciphertext", BYTEA, nullable=True),  # the seed sealed by the Kms port
    sa.Column("confirmed", sa.Boolean, nullable=False),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("last_timecode", sa.BigInteger, nullable=True),
)

recovery_codes = sa.Table(
    "recovery_codes",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, _user_fk(), nullable=False, index=True),
    sa.Column("code_hash", sa.Text, nullable=False),
    sa.Column("used_at", _ts, nullable=True),
)

passkeys = sa.Table(
    "passkeys",
    metadata,
    sa.Column("credential_id", BYTEA, primary_key=True),
    sa.Column("user_id", sa.Text, _user_fk(), nullable=False, index=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("public_key", BYTEA, nullable=False),
    sa.Column("sign_count", sa.BigInteger, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("last_used_at", _ts, nullable=True),
    sa.Column("transports", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
)

webauthn_challenges = sa.Table(
    "webauthn_challenges",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("purpose", sa.Text, nullable=False),
    sa.Column("challenge", BYTEA, nullable=False),
    sa.Column("expires_at", _ts, nullable=False),
    sa.Column("tenant_id", sa.Text, nullable=False, server_default=""),
    sa.Column("user_id", sa.Text, nullable=False, server_default=""),
)

password_reset_tokens = sa.Table(
    "password_reset_tokens",
    metadata,
    sa.Column("token_hash", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, _user_fk(), nullable=False, index=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("expires_at", _ts, nullable=False),
    sa.Column("used_at", _ts, nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("prefix", sa.Text, nullable=False, unique=True),
    sa.Column("secret_hash", sa.Text, nullable=False),
    sa.Column("tenant_id", sa.Text, nullable=False, index=True),
    sa.Column("user_id", sa.Text, _user_fk(), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("expires_at", _ts, nullable=True),
    sa.Column("revoked_at", _ts, nullable=True),
    sa.Column("last_used_at", _ts, nullable=True),
)

mail_outbox = sa.Table(
    "mail_outbox",
    metadata,
    sa.Column("seq", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("id", sa.Text, nullable=False, unique=True),
    sa.Column("recipient", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # wiped once sent (may hold a reset link)
    sa.Column("created_at", _ts, nullable=False, server_default=_now),
    sa.Column("sent_at", _ts, nullable=True),  # sent, or given up on (error set)
    sa.Column("error", sa.Text, nullable=True),
    sa.Index("ix_mail_outbox_unsent", "seq", postgresql_where=sa.text("sent_at IS NULL")),
)

oidc_providers = sa.Table(
    "oidc_providers",
    metadata,
    sa.Column("tenant_id", sa.Text, sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("issuer", sa.Text, nullable=False),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("client_secret_ciphertext", BYTEA, nullable=False),  # sealed by the Kms port
    sa.Column("redirect_uris", JSONB, nullable=False),
    sa.Column("scopes", JSONB, nullable=False),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("updated_at", _ts, nullable=False),
)

oidc_identities = sa.Table(
    "oidc_identities",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("issuer", sa.Text, primary_key=True),
    sa.Column("subject", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Text, _user_fk(), nullable=False, index=True),
    sa.Column("email", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("last_login_at", _ts, nullable=True),
)

oidc_login_states = sa.Table(
    "oidc_login_states",
    metadata,
    sa.Column("state_hash", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("nonce", sa.Text, nullable=False),
    sa.Column("code_verifier", sa.Text, nullable=False),
    sa.Column("redirect_uri", sa.Text, nullable=False),
    sa.Column("expires_at", _ts, nullable=False, index=True),
)
