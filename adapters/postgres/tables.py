"""The schema as SQLAlchemy Core ``Table``s: alembic's target metadata and the mappers' source."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import BYTEA, JSONB

import msgspec

from domain.registry import ModelCapabilities, ModelSource, ProviderKind

__all__ = [
    "CapabilitiesType",
    "ModelSourceType",
    "ProviderKindType",
    "metadata",
    "model_prices",
    "models",
    "outbox",
    "processed_events",
    "provider_secrets",
    "providers",
    "spend_daily",
    "usage_records",
]

# Deterministic constraint names, so migrations can refer to them.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_now = sa.text("now()")


class ProviderKindType(sa.types.TypeDecorator[ProviderKind]):
    """``ProviderKind`` stored as its text value (a new kind needs no schema change)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: ProviderKind | str | None, dialect: sa.Dialect) -> str | None:
        return None if value is None else ProviderKind(value).value

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> ProviderKind | None:
        return None if value is None else ProviderKind(value)


class ModelSourceType(sa.types.TypeDecorator[ModelSource]):
    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: ModelSource | str | None, dialect: sa.Dialect) -> str | None:
        return None if value is None else ModelSource(value).value

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> ModelSource | None:
        return None if value is None else ModelSource(value)


class CapabilitiesType(sa.types.TypeDecorator[ModelCapabilities]):
    """``ModelCapabilities`` as a JSONB object; missing keys take the struct's defaults."""

    impl = JSONB
    cache_ok = True

    def process_bind_param(self, value: ModelCapabilities | None, dialect: sa.Dialect) -> object:
        return None if value is None else msgspec.to_builtins(value)

    def process_result_value(self, value: object, dialect: sa.Dialect) -> ModelCapabilities | None:
        return None if value is None else msgspec.convert(value, ModelCapabilities)


# --- registry (revision 0001) ---------------------------------------------------------------

providers = sa.Table(
    "providers",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("kind", ProviderKindType(), nullable=False),
    sa.Column("base_url", sa.Text, nullable=True),
    sa.Column("label", sa.Text, nullable=False, server_default=""),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column(
        "provider",
        sa.Text,
        sa.ForeignKey("providers.name", onupdate="CASCADE", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("upstream_model", sa.Text, nullable=False),
    sa.Column("input_per_mtok", sa.Float, nullable=False, server_default="0"),
    sa.Column("output_per_mtok", sa.Float, nullable=False, server_default="0"),
    sa.Column("cached_input_per_mtok", sa.Float, nullable=False, server_default="0"),
    sa.Column("is_default", sa.Boolean, nullable=False, server_default=sa.false()),
    # revision 0003
    sa.Column("capabilities", CapabilitiesType(), nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("available", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("priced", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("source", ModelSourceType(), nullable=False, server_default="manual"),
)

# --- price history and provider secrets (revision 0003) -------------------------------------

model_prices = sa.Table(
    "model_prices",
    metadata,
    sa.Column(
        "model",
        sa.Text,
        sa.ForeignKey("models.name", onupdate="CASCADE", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("effective_from", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("input_per_mtok", sa.Float, nullable=False),
    sa.Column("output_per_mtok", sa.Float, nullable=False),
    sa.Column("cached_input_per_mtok", sa.Float, nullable=False),
)

provider_secrets = sa.Table(
    "provider_secrets",
    metadata,
    sa.Column(
        "provider",
        sa.Text,
        sa.ForeignKey("providers.name", onupdate="CASCADE", ondelete="CASCADE"),
        primary_key=True,
    ),
    # Envelope-encrypted API key (see adapters.secrets); never the plaintext.
    sa.Column("ciphertext", BYTEA, nullable=False),
    sa.Column("hint", sa.Text, nullable=False, server_default=""),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
)

# --- usage (revision 0001) ------------------------------------------------------------------

usage_records = sa.Table(
    "usage_records",
    metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("input_tokens", sa.Integer, nullable=False),
    sa.Column("output_tokens", sa.Integer, nullable=False),
    sa.Column("cached_input_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("reasoning_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cost_micros", sa.BigInteger, nullable=False),
    sa.Column("latency_ms", sa.Integer, nullable=False),
    sa.Column("finish_reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("conversation_id", sa.Text, nullable=True),
    # revision 0007: the principal (user, and API key when it called with one)
    sa.Column("user_id", sa.Text, nullable=True),
    sa.Column("api_key_id", sa.Text, nullable=True),
    # revision 0013: what the call was for (chat; memory.embedding, memory.summary, memory.extraction)
    sa.Column("operation", sa.Text, nullable=False, server_default="chat"),
    sa.Index("ix_usage_records_tenant_created", "tenant_id", "created_at"),
)

# --- messaging and roll-ups (revision 0002) -------------------------------------------------

outbox = sa.Table(
    "outbox",
    metadata,
    # The identity gives insertion order; relays claim in that order.
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("event_id", sa.Text, nullable=False, unique=True),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("payload", BYTEA, nullable=False),
    sa.Column("headers", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_outbox_unsent", "id", postgresql_where=sa.text("sent_at IS NULL")),
)

processed_events = sa.Table(
    "processed_events",
    metadata,
    sa.Column("consumer", sa.Text, primary_key=True),
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
)

spend_daily = sa.Table(
    "spend_daily",
    metadata,
    sa.Column("tenant_id", sa.Text, primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("model", sa.Text, primary_key=True),
    sa.Column("cost_micros", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("tokens", sa.BigInteger, nullable=False, server_default="0"),
)
