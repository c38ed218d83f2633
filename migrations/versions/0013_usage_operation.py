"""Usage rows say what the provider call was for: ``usage_records.operation`` (``chat`` for every
existing row and the chat path; ``memory.embedding``, ``memory.summary``, ``memory.extraction``
for the calls long-term memory makes on its own).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE usage_records ADD COLUMN operation text NOT NULL DEFAULT 'chat'")


def downgrade() -> None:
    op.execute("ALTER TABLE usage_records DROP COLUMN operation")
