"""The whole schema's metadata: every table module registers its tables on ``tables.metadata``;
importing this module makes sure all of them are loaded (alembic and the schema test use it)."""

from __future__ import annotations

import pgvector.sqlalchemy  # noqa: F401 - registers the vector type, so reflection knows it

from adapters.postgres import budget_tables, identity_tables, memory_tables  # noqa: F401 - they register their tables
from adapters.postgres.tables import metadata

__all__ = ["metadata"]
