"""Writes of memories are announced: every statement that inserts memories (or moves memories to
another user) notifies channel ``lumina_memories_written``, once per (tenant, user) it wrote, with
``["<tenant>", "<user>"]`` (JSON) as the payload; a statement that wrote more than 100 such scopes,
or a scope too long for a notification payload, sends ``*`` once instead. PostgreSQL delivers a
notification only when its transaction commits, to every session listening then (what
``adapters.postgres.memory_watch`` keeps open in each backend process: a user known to have no
memories then costs the chat path no query at all).

Deletes are not announced: they cannot give a user memories.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "lumina_memories_written"

# A payload must stay under 8000 bytes; a statement writing many users sends one wildcard instead of
# a notification each.
_FUNCTION = f"""
CREATE FUNCTION memories_notify_written() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    scopes text[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT json_build_array(tenant_id, user_id)::text) INTO scopes FROM new_rows;
    ELSE
        SELECT array_agg(DISTINCT json_build_array(n.tenant_id, n.user_id)::text) INTO scopes
        FROM old_rows o JOIN new_rows n ON n.tenant_id = o.tenant_id AND n.id = o.id
        WHERE n.user_id <> o.user_id;
    END IF;
    IF scopes IS NULL THEN
        RETURN NULL;
    END IF;
    IF cardinality(scopes) > 100 OR EXISTS (SELECT 1 FROM unnest(scopes) AS s WHERE octet_length(s) > 7900) THEN
        PERFORM pg_notify('{CHANNEL}', '*');
    ELSE
        PERFORM pg_notify('{CHANNEL}', s) FROM unnest(scopes) AS s;
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(_FUNCTION)
    op.execute(
        "CREATE TRIGGER memories_notify_insert AFTER INSERT ON memories REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION memories_notify_written()"
    )
    op.execute(
        "CREATE TRIGGER memories_notify_update AFTER UPDATE ON memories "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION memories_notify_written()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER memories_notify_update ON memories")
    op.execute("DROP TRIGGER memories_notify_insert ON memories")
    op.execute("DROP FUNCTION memories_notify_written()")
