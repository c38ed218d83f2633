"""Usage principal: each usage row names the user who called and, when they called with an API key,
that key (nullable: rows written before identity have neither).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("usage_records", sa.Column("user_id", sa.Text, nullable=True))
    op.add_column("usage_records", sa.Column("api_key_id", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("usage_records", "api_key_id")
    op.drop_column("usage_records", "user_id")
