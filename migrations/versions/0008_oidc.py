"""OIDC sign-in (a provider per tenant with its client secret sealed, identities linking (issuer,
subject) to users, single-use login states); TOTP seeds sealed by the Kms port; failed mail.

``totp_credentials.secret`` (plaintext) becomes nullable: rows written before this revision keep it
until the repository first reads them, seals the seed into ``seed_ciphertext`` and clears it
(the key lives outside the database, so SQL cannot seal them here).

Downgrade: seeds that exist only sealed cannot be written back as plaintext without the key, so
those TOTP enrolments are deleted (their users sign in with one factor until they enrol again).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "oidc_providers",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("issuer", sa.Text, nullable=False),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("client_secret_ciphertext", postgresql.BYTEA, nullable=False),
        sa.Column("redirect_uris", postgresql.JSONB, nullable=False),
        sa.Column("scopes", postgresql.JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_oidc_providers"),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_oidc_providers_tenant_id_tenants", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "oidc_identities",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("issuer", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("email", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_login_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "issuer", "subject", name="pk_oidc_identities"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_oidc_identities_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_oidc_identities_user_id", "oidc_identities", ["user_id"])
    op.create_table(
        "oidc_login_states",
        sa.Column("state_hash", sa.Text, nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("nonce", sa.Text, nullable=False),
        sa.Column("code_verifier", sa.Text, nullable=False),
        sa.Column("redirect_uri", sa.Text, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("state_hash", name="pk_oidc_login_states"),
    )
    op.create_index("ix_oidc_login_states_expires_at", "oidc_login_states", ["expires_at"])
    op.add_column("totp_credentials", sa.Column("seed_ciphertext", postgresql.BYTEA, nullable=True))
    op.alter_column("totp_credentials", "secret", existing_type=sa.Text, nullable=True)
    op.add_column("mail_outbox", sa.Column("error", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("mail_outbox", "error")
    op.execute("DELETE FROM totp_credentials WHERE secret IS NULL")
    op.alter_column("totp_credentials", "secret", existing_type=sa.Text, nullable=False)
    op.drop_column("totp_credentials", "seed_ciphertext")
    op.drop_index("ix_oidc_login_states_expires_at", table_name="oidc_login_states")
    op.drop_table("oidc_login_states")
    op.drop_index("ix_oidc_identities_user_id", table_name="oidc_identities")
    op.drop_table("oidc_identities")
    op.drop_table("oidc_providers")
