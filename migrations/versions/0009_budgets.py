"""Budgets, rate limits and the durable spend ledger. Layout: ``adapters/postgres/budget_tables.py``;
the SQL is written out here so this revision never changes when that module does.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE budgets (
            id text NOT NULL,
            tenant_id text NOT NULL,
            name text NOT NULL,
            scope text NOT NULL,
            scope_id text NOT NULL,
            provider text NOT NULL DEFAULT '',
            model text NOT NULL DEFAULT '',
            limit_micros bigint NOT NULL,
            period text NOT NULL,
            rolling_seconds integer NOT NULL DEFAULT 0,
            enforcement text NOT NULL,
            thresholds integer[] NOT NULL DEFAULT '{50,80,100}'::integer[],
            enabled boolean NOT NULL DEFAULT true,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_budgets PRIMARY KEY (id),
            CONSTRAINT uq_budgets_tenant_name UNIQUE (tenant_id, name),
            CONSTRAINT ck_budgets_scope CHECK (scope IN ('tenant', 'team', 'user', 'api_key')),
            CONSTRAINT ck_budgets_period CHECK (period IN ('daily', 'weekly', 'monthly', 'rolling')),
            CONSTRAINT ck_budgets_enforcement CHECK (enforcement IN ('hard', 'soft')),
            CONSTRAINT ck_budgets_limit_positive CHECK (limit_micros > 0)
        )"""
    )
    op.execute(
        """CREATE TABLE budget_spend (
            budget_id text NOT NULL,
            bucket_start timestamptz NOT NULL,
            spent_micros bigint NOT NULL DEFAULT 0,
            requests integer NOT NULL DEFAULT 0,
            CONSTRAINT pk_budget_spend PRIMARY KEY (budget_id, bucket_start),
            CONSTRAINT fk_budget_spend_budget_id_budgets FOREIGN KEY (budget_id)
                REFERENCES budgets (id) ON DELETE CASCADE
        )"""
    )
    op.execute(
        """CREATE TABLE budget_ledger (
            reservation_id text NOT NULL,
            tenant_id text NOT NULL,
            request_id text NOT NULL DEFAULT '',
            user_id text NOT NULL DEFAULT '',
            api_key_id text NOT NULL DEFAULT '',
            provider text NOT NULL DEFAULT '',
            model text NOT NULL DEFAULT '',
            task text NOT NULL DEFAULT '',
            reserved_micros bigint NOT NULL,
            actual_micros bigint NOT NULL,
            input_tokens integer NOT NULL DEFAULT 0,
            output_tokens integer NOT NULL DEFAULT 0,
            budget_ids text[] NOT NULL DEFAULT '{}'::text[],
            reserved_at timestamptz NOT NULL,
            settled_at timestamptz NOT NULL,
            CONSTRAINT pk_budget_ledger PRIMARY KEY (reservation_id)
        )"""
    )
    op.execute("CREATE INDEX ix_budget_ledger_model_task ON budget_ledger (model, task, settled_at)")
    op.execute("CREATE INDEX ix_budget_ledger_tenant_settled ON budget_ledger (tenant_id, settled_at)")
    op.execute(
        """CREATE TABLE budget_alerts (
            budget_id text NOT NULL,
            period_key text NOT NULL,
            threshold integer NOT NULL,
            spent_micros bigint NOT NULL,
            alerted_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_budget_alerts PRIMARY KEY (budget_id, period_key, threshold),
            CONSTRAINT fk_budget_alerts_budget_id_budgets FOREIGN KEY (budget_id)
                REFERENCES budgets (id) ON DELETE CASCADE
        )"""
    )
    op.execute(
        """CREATE TABLE rate_limits (
            id text NOT NULL,
            tenant_id text NOT NULL,
            scope text NOT NULL,
            scope_id text NOT NULL,
            requests_per_minute integer NOT NULL DEFAULT 0,
            tokens_per_minute integer NOT NULL DEFAULT 0,
            burst_requests integer NOT NULL DEFAULT 0,
            burst_tokens integer NOT NULL DEFAULT 0,
            CONSTRAINT pk_rate_limits PRIMARY KEY (id),
            CONSTRAINT uq_rate_limits_tenant_scope UNIQUE (tenant_id, scope, scope_id),
            CONSTRAINT ck_rate_limits_scope CHECK (scope IN ('tenant', 'team', 'user', 'api_key', 'model'))
        )"""
    )


def downgrade() -> None:
    for table in ("rate_limits", "budget_alerts", "budget_ledger", "budget_spend", "budgets"):
        op.execute(f"DROP TABLE {table}")
