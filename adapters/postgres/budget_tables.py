"""Budgets, rate limits and the durable spend ledger (revision 0009), on the shared metadata.

- ``budgets``: definitions (one name per tenant).
- ``budget_spend``: settled spend per budget and ledger bucket (an hour for calendar periods, the
  rolling bucket for rolling windows): what the live Redis counters are rebuilt from, and the
  history forecasts read.
- ``budget_ledger``: one row per settled reservation (idempotency of settlement, audit, and the
  output-token history of each model and task for predictive reservations).
- ``budget_alerts``: the once-per-period latch of threshold alerts.
- ``rate_limits``: requests/tokens per minute per tenant node (one per tenant, scope and id).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from adapters.postgres.tables import metadata

__all__ = ["budget_alerts", "budget_ledger", "budget_spend", "budgets", "rate_limits"]

_now = sa.text("now()")

budgets = sa.Table(
    "budgets",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("scope_id", sa.Text, nullable=False),
    sa.Column("provider", sa.Text, nullable=False, server_default=""),
    sa.Column("model", sa.Text, nullable=False, server_default=""),
    sa.Column("limit_micros", sa.BigInteger, nullable=False),
    sa.Column("period", sa.Text, nullable=False),
    sa.Column("rolling_seconds", sa.Integer, nullable=False, server_default="0"),
    sa.Column("enforcement", sa.Text, nullable=False),
    sa.Column("thresholds", ARRAY(sa.Integer), nullable=False, server_default=sa.text("'{50,80,100}'::integer[]")),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.UniqueConstraint("tenant_id", "name", name="uq_budgets_tenant_name"),
    sa.CheckConstraint("scope IN ('tenant', 'team', 'user', 'api_key')", name="scope"),
    sa.CheckConstraint("period IN ('daily', 'weekly', 'monthly', 'rolling')", name="period"),
    sa.CheckConstraint("enforcement IN ('hard', 'soft')", name="enforcement"),
    sa.CheckConstraint("limit_micros > 0", name="limit_positive"),
)

budget_spend = sa.Table(
    "budget_spend",
    metadata,
    sa.Column("budget_id", sa.Text, sa.ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("bucket_start", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("spent_micros", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("requests", sa.Integer, nullable=False, server_default="0"),
)

budget_ledger = sa.Table(
    "budget_ledger",
    metadata,
    sa.Column("reservation_id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("request_id", sa.Text, nullable=False, server_default=""),
    sa.Column("user_id", sa.Text, nullable=False, server_default=""),
    sa.Column("api_key_id", sa.Text, nullable=False, server_default=""),
    sa.Column("provider", sa.Text, nullable=False, server_default=""),
    sa.Column("model", sa.Text, nullable=False, server_default=""),
    sa.Column("task", sa.Text, nullable=False, server_default=""),
    sa.Column("reserved_micros", sa.BigInteger, nullable=False),
    sa.Column("actual_micros", sa.BigInteger, nullable=False),
    sa.Column("input_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("output_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("budget_ids", ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'::text[]")),
    sa.Column("reserved_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("settled_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_budget_ledger_model_task", "model", "task", "settled_at"),
    sa.Index("ix_budget_ledger_tenant_settled", "tenant_id", "settled_at"),
)

budget_alerts = sa.Table(
    "budget_alerts",
    metadata,
    sa.Column("budget_id", sa.Text, sa.ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("period_key", sa.Text, primary_key=True),
    sa.Column("threshold", sa.Integer, primary_key=True),
    sa.Column("spent_micros", sa.BigInteger, nullable=False),
    sa.Column("alerted_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
)

rate_limits = sa.Table(
    "rate_limits",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("tenant_id", sa.Text, nullable=False),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("scope_id", sa.Text, nullable=False),
    sa.Column("requests_per_minute", sa.Integer, nullable=False, server_default="0"),
    sa.Column("tokens_per_minute", sa.Integer, nullable=False, server_default="0"),
    sa.Column("burst_requests", sa.Integer, nullable=False, server_default="0"),
    sa.Column("burst_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint("tenant_id", "scope", "scope_id", name="uq_rate_limits_tenant_scope"),
    sa.CheckConstraint("scope IN ('tenant', 'team', 'user', 'api_key', 'model')", name="scope"),
)
