"""Dynamic provider registry: model capabilities and status, price history, encrypted provider keys.

Revision ID: 0003
Revises: 0002
Create Date: 2025-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "models",
        sa.Column("capabilities", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    op.add_column("models", sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()))
    op.add_column("models", sa.Column("available", sa.Boolean, nullable=False, server_default=sa.true()))
    op.add_column("models", sa.Column("priced", sa.Boolean, nullable=False, server_default=sa.true()))
    op.add_column("models", sa.Column("source", sa.Text, nullable=False, server_default="manual"))
    op.create_table(
        "model_prices",
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("input_per_mtok", sa.Float, nullable=False),
        sa.Column("output_per_mtok", sa.Float, nullable=False),
        sa.Column("cached_input_per_mtok", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(
            ["model"], ["models.name"], name="fk_model_prices_model_models", onupdate="CASCADE", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("model", "effective_from", name="pk_model_prices"),
    )
    # Existing models keep their price as the first period of their history.
    op.execute(
        "INSERT INTO model_prices (model, effective_from, input_per_mtok, output_per_mtok, cached_input_per_mtok) "
        "SELECT name, '2000-01-01T00:00:00Z', input_per_mtok, output_per_mtok, cached_input_per_mtok FROM models"
    )
    op.create_table(
        "provider_secrets",
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("ciphertext", postgresql.BYTEA, nullable=False),
        sa.Column("hint", sa.Text, nullable=False, server_default=""),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.ForeignKeyConstraint(
            ["provider"],
            ["providers.name"],
            name="fk_provider_secrets_provider_providers",
            onupdate="CASCADE",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("provider", name="pk_provider_secrets"),
    )


def downgrade() -> None:
    op.drop_table("provider_secrets")
    op.drop_table("model_prices")
    for column in ("source", "priced", "available", "enabled", "capabilities"):
        op.drop_column("models", column)
