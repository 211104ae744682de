"""Settlement: versioned terms, batches with lines, positions and payments; expiry into breakage.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from alliance.db.migrate import execute_script

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _protect(table: str, app_role: str, using: str) -> None:
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"""DO $$ BEGIN EXECUTE format('CREATE POLICY owner_all ON {table} TO %I USING (true) WITH CHECK (true)',
        current_user); END $$"""
    )
    op.execute(f"CREATE POLICY app_read ON {table} FOR SELECT TO {app_role} USING ({using})")


def upgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    execute_script((Path(__file__).parents[1] / "sql" / "0003_settlement.sql").read_text())
    # A period's redemptions and refunds, found without reading all history.
    op.execute(
        "CREATE INDEX ledger_transactions_settlement ON ledger_transactions (asset, effective_at)"
        " INCLUDE (tenant_id, kind) WHERE kind IN ('redeem', 'capture', 'reverse')"
    )
    operator = "alliance_role() = 'operator'"
    merchant = "alliance_role() = 'merchant'"
    op.execute(
        f"GRANT SELECT ON settlement_terms, settlement_batches, settlement_lines, settlement_positions TO {app_role}"
    )
    _protect("settlement_terms", app_role, "true")
    op.execute(
        f"GRANT SELECT ON tenant_clearing_terms, prepaid_balances, settlement_clearing_lines TO {app_role}"
    )
    own = f"{operator} OR ({merchant} AND tenant_id = alliance_tenant_id())"
    _protect("tenant_clearing_terms", app_role, own)
    _protect("prepaid_balances", app_role, own)
    _protect("settlement_clearing_lines", app_role, own)
    op.execute(f"GRANT SELECT ON prepaid_block_purchases TO {app_role}")
    _protect("prepaid_block_purchases", app_role, own)
    op.execute(f"GRANT SELECT ON settlement_disputes TO {app_role}")
    _protect(
        "settlement_disputes",
        app_role,
        f"{operator} OR ({merchant} AND alliance_tenant_id() IN (issuer_tenant_id, redeemer_tenant_id))",
    )
    op.execute(f"GRANT SELECT ON lot_expiry_extensions TO {app_role}")
    _protect(
        "lot_expiry_extensions",
        app_role,
        f"{operator} OR ({merchant} AND tenant_id = alliance_tenant_id())"
        " OR (alliance_role() = 'member' AND member_id = alliance_member_id())",
    )
    _protect("settlement_batches", app_role, f"{operator} OR {merchant}")
    _protect(
        "settlement_lines",
        app_role,
        f"{operator} OR ({merchant} AND alliance_tenant_id() IN (issuer_tenant_id, redeemer_tenant_id))",
    )
    _protect(
        "settlement_positions", app_role, f"{operator} OR ({merchant} AND tenant_id = alliance_tenant_id())"
    )
    op.execute(
        f"""DO $$ DECLARE f record; BEGIN
          FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
                   WHERE (p.proname LIKE 'settlement\\_%'
                          OR p.proname IN ('ledger_expire', 'ledger_extend_expiry', 'ledger_expiring_points'))
                     AND p.pronamespace = 'public'::regnamespace LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f.sig);
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO {app_role}', f.sig);
          END LOOP;
        END $$"""
    )


def downgrade() -> None:
    op.execute(
        "DROP TABLE IF EXISTS settlement_positions, settlement_lines, settlement_batches, settlement_terms"
    )
    op.execute(
        "DROP FUNCTION IF EXISTS ledger_expire(text, int), settlement_run(text, timestamptz, timestamptz), "
        "settlement_reconcile(bigint), settlement_provenance(text, timestamptz, timestamptz), "
        "settlement_breakage(text, timestamptz, timestamptz), settlement_round(numeric)"
    )
    op.execute(
        "CREATE OR REPLACE FUNCTION ledger_period_closed(p_asset text, p_at timestamptz) "
        "RETURNS boolean LANGUAGE sql STABLE AS $$ SELECT false $$"
    )
