"""Merchant insights: summary tables, their SECURITY DEFINER refresh steps, the insights:read scope.

The tables and steps are in ``migrations/sql/0019_insights.sql`` (see its header). Every summary
table is tenant-scoped under FORCE row-level security: a merchant reads its own rows, the operator
all; nobody but the refresh steps (owner functions, operator context only) writes them. The
cross-tenant activity table behind the cross-merchant counts has no application access at all.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-24
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from alliance.db.migrate import execute_script

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

OPERATOR = "alliance_role() = 'operator'"
OWN_TENANT = "(alliance_role() = 'merchant' AND tenant_id = alliance_tenant_id())"

# Read by merchants (own rows) and the operator.
TENANT_TABLES = (
    "insights_member_months",
    "insights_member_recent_days",
    "insights_member_categories",
    "insights_member_tags",
    "insights_members",
    "insights_tenant_categories",
    "insights_tenant_tags",
    "insights_rising",
    "insights_reward_redemptions",
    "insights_retention",
    "insights_coalition",
    "insights_cross_categories",
)
# Only the refresh steps touch these.
OWNER_TABLES = ("insights_watermarks", "insights_member_redeemers")
STEPS = (
    "insights_refresh_facts(text, bigint, date)",
    "insights_refresh_rising(date, int, int, int)",
    "insights_refresh_segments(date)",
    "insights_refresh_redemptions()",
    "insights_refresh_retention(text, int)",
    "insights_refresh_cross_categories(text, int, date[])",
    "insights_touched_months(text, bigint)",
    "insights_reset()",
)
INTERNAL = ("insights_require_operator()",)

# The scopes each role held by default before this revision (0013 added webhooks:manage, 0012
# clients:manage): clients holding all of them get insights:read too.
MERCHANT_SCOPES_0018 = [
    "tenants:read",
    "stores:write",
    "members:read",
    "members:write",
    "points:earn",
    "points:redeem",
    "ledger:read",
    "settlement:read",
    "catalog:write",
    "rules:write",
    "tiers:read",
    "clients:manage",
    "webhooks:manage",
]
OPERATOR_SCOPES_0018 = [
    *MERCHANT_SCOPES_0018,
    "tenants:write",
    "points:adjust",
    "settlement:write",
    "tiers:write",
]


def _array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join(f"'{value}'" for value in values) + "]::text[]"


def _protect(table: str, app_role: str, read: str | None) -> None:
    """FORCE row-level security: the owner (the refresh steps) sees every row, the application
    role reads what ``read`` allows (nothing when None) and writes nothing."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"""DO $$ BEGIN EXECUTE format('CREATE POLICY owner_all ON {table} TO %I USING (true) WITH CHECK (true)',
        current_user); END $$"""
    )
    if read is not None:
        op.execute(f"GRANT SELECT ON {table} TO {app_role}")
        op.execute(f"CREATE POLICY app_read ON {table} FOR SELECT TO {app_role} USING ({read})")


def upgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    execute_script((Path(__file__).parents[1] / "sql" / "0019_insights.sql").read_text())
    for table in TENANT_TABLES:
        _protect(table, app_role, f"{OPERATOR} OR {OWN_TENANT}")
    for table in OWNER_TABLES:
        _protect(table, app_role, None)
    for function in (*STEPS, *INTERNAL):
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
    for function in STEPS:
        op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {app_role}")
    for role, scopes in (("merchant", MERCHANT_SCOPES_0018), ("operator", OPERATOR_SCOPES_0018)):
        op.execute(
            f"""UPDATE api_clients SET scopes = array_append(scopes, 'insights:read')
            WHERE role = '{role}' AND scopes @> {_array(scopes)} AND NOT scopes @> ARRAY['insights:read']"""
        )


def downgrade() -> None:
    op.execute("UPDATE api_clients SET scopes = array_remove(scopes, 'insights:read')")
    for function in (*STEPS, *INTERNAL):
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.execute(f"DROP TABLE IF EXISTS {', '.join((*TENANT_TABLES, *OWNER_TABLES))}")
