"""The posting hot path: the same ledger rules with less work per call.

``migrations/sql/0014_ledger_hot_path.sql`` redefines helpers and the batch path, trims the
indexes of the posting tables and replaces their foreign keys to reference data (see its
header). Here the per-request posting functions also get ``plan_cache_mode =
force_generic_plan``: every statement in them is a lookup or a write keyed by an id, for which
the generic plan is the right plan, and PostgreSQL would otherwise plan many of them again on
every call (a custom plan wins its cost comparison whenever a parameter folds a condition such
as ``p_tenant IS NULL OR ...``) — measured at more than a third of an earn's database time.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-24
"""

from __future__ import annotations

import re
from pathlib import Path

from alembic import op
from alembic.script import ScriptDirectory

from alliance.db.migrate import execute_script

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

SQL = Path(__file__).parents[1] / "sql"

# Called once per API request that moves points (not the jobs, whose statements scan ranges).
POSTING_FUNCTIONS = (
    "ledger_earn",
    "ledger_earn_batch",
    "ledger_redeem",
    "ledger_hold",
    "ledger_close_hold",
    "ledger_reverse",
    "ledger_adjust",
    "catalog_redeem_reward",
    "catalog_pay_with_points",
    "catalog_cancel_redemption",
    "catalog_fulfil_redemption",
    "tier_upgrade_members_if_qualified",
)

# Functions this revision redefines, restored from the revisions before it on downgrade.
REDEFINED = (
    "ledger_asset_expiry",
    "ledger_balance_json",
    "ledger_member_for",
    "ledger_period_closed",
    "member_tier_rank",
    "tier_upgrade_members_if_qualified",
    "tier_rolling_points",
    "tier_for_points",
    "tier_lock_member",
    "ledger_earn_batch",
    "ledger_member_balance",
    "ledger_verify",
    "ledger_credit",
    "ledger_check_context",
    "ledger_earn",
)

REFERENCES = (  # (table, constraint, column, referenced) dropped by this revision
    ("ledger_transactions", "ledger_transactions_asset_fkey", "asset", "assets(code)"),
    ("ledger_transactions", "ledger_transactions_member_id_fkey", "member_id", "members(id)"),
    ("ledger_transactions", "ledger_transactions_tenant_id_fkey", "tenant_id", "tenants(id)"),
    ("ledger_transactions", "ledger_transactions_store_id_fkey", "store_id", "stores(id)"),
    ("ledger_entries", "ledger_entries_account_id_fkey", "account_id", "accounts(id)"),
    ("lots", "lots_member_id_fkey", "member_id", "members(id)"),
    ("lots", "lots_asset_fkey", "asset", "assets(code)"),
    ("lots", "lots_issuer_tenant_id_fkey", "issuer_tenant_id", "tenants(id)"),
)
GUARDED = ("members", "tenants", "stores", "accounts", "assets")


def _set_plan_cache_mode(value: str | None) -> None:
    clause = "RESET plan_cache_mode" if value is None else f"SET plan_cache_mode = {value}"
    names = ", ".join(f"'{name}'" for name in POSTING_FUNCTIONS)
    op.execute(
        f"""DO $$ DECLARE f record; BEGIN
          FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
                   WHERE p.proname IN ({names}) AND p.pronamespace = 'public'::regnamespace LOOP
            EXECUTE format('ALTER FUNCTION %s {clause}', f.sig);
          END LOOP;
        END $$"""
    )


def upgrade() -> None:
    execute_script((SQL / "0014_ledger_hot_path.sql").read_text())
    _set_plan_cache_mode("force_generic_plan")


def _previous_definition(name: str) -> str:
    """The last definition of ``name`` in the revisions before this one (SQL files and 0004's tables)."""
    scripts = ScriptDirectory.from_config(op.get_context().config)
    sources = [
        (SQL / "0002_ledger_functions.sql").read_text(),
        (SQL / "0003_settlement.sql").read_text(),
        scripts.get_revision("0004").module.TIERS,  # type: ignore[union-attr]
        (SQL / "0004_tiers.sql").read_text(),
    ]
    pattern = re.compile(rf"CREATE (?:OR REPLACE )?FUNCTION {name}\(.*?\$\$;", re.DOTALL)
    found = [match.group(0) for source in sources for match in pattern.finditer(source)]
    assert found, f"no earlier definition of {name}"
    return re.sub(r"^CREATE (OR REPLACE )?FUNCTION", "CREATE OR REPLACE FUNCTION", found[-1])


def downgrade() -> None:
    _set_plan_cache_mode(None)
    for table in GUARDED:
        op.execute(f"DROP TRIGGER ledger_reference ON {table}")
        op.execute(f"DROP TRIGGER ledger_reference_truncate ON {table}")
    op.execute("DROP FUNCTION ledger_refuse_reference_change()")
    for table, constraint, column, referenced in REFERENCES:
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {constraint} FOREIGN KEY ({column}) REFERENCES {referenced}"
        )
    execute_script(
        """DROP INDEX lots_open;
        CREATE INDEX lots_open ON lots (member_id, asset, expires_at, issued_at, id) WHERE remaining > 0;
        CREATE INDEX ledger_entries_account ON ledger_entries (account_id);
        DROP INDEX ledger_transactions_member;
        CREATE INDEX ledger_transactions_member ON ledger_transactions (member_id, id);
        CREATE INDEX ledger_transactions_tier_credits ON ledger_transactions (member_id, effective_at)
          INCLUDE (asset, points, id) WHERE kind IN ('earn', 'award', 'compensate');"""
    )
    for name in REDEFINED:
        execute_script(_previous_definition(name))
