"""Tenant policy: ``tenants.memory_enabled`` (long-term memory in the chat path; on by default, as
for existing tenants).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE tenants ADD COLUMN memory_enabled boolean NOT NULL DEFAULT true")


def downgrade() -> None:
    op.execute("ALTER TABLE tenants DROP COLUMN memory_enabled")
