"""Operator insights: summaries of points flows, liability and redemption latency.

The operator's views (flows between merchants and categories, liability with expected breakage,
merchant health) read these tables, which only the refresh (``insights_refresh_operator``, a
security-definer function the operator context calls) writes. They describe every merchant, so
the application role reads them in the operator context only: a merchant sees no row.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-24
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from alliance.db.migrate import execute_script

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

TABLES = (
    "insight_refresh_state",
    "insight_point_flows",
    "insight_party_flows",
    "insight_redemption_latency",
    "insight_latency_percentiles",
    "insight_liability",
)
FUNCTIONS = (
    "insight_merchant_health(text, date, date, timestamptz, timestamptz, text)",
    "insight_flow_pairs(text, text, date, date, text, boolean, text)",
    "insights_refresh_operator(text, bigint)",
    "insight_latency_delta(bigint, bigint)",
    "insight_flow_delta(bigint, bigint, text)",
)


def _protect(table: str, app_role: str, read: str) -> None:
    """FORCE row-level security: the owner (the refresh function) sees every row, the application
    role what ``read`` allows, and writes nothing."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"""DO $$ BEGIN EXECUTE format('CREATE POLICY owner_all ON {table} TO %I USING (true) WITH CHECK (true)',
        current_user); END $$"""
    )
    op.execute(f"CREATE POLICY app_read ON {table} FOR SELECT TO {app_role} USING ({read})")


def upgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    execute_script((Path(__file__).parents[1] / "sql" / "0018_operator_insights.sql").read_text())
    for table in TABLES:
        op.execute(f"GRANT SELECT ON {table} TO {app_role}")
        _protect(table, app_role, "alliance_role() = 'operator'")


def downgrade() -> None:
    for function in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    for table in TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table}")
