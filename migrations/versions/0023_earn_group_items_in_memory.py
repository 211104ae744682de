"""Earn groups without a work table: ``ledger_earn_group`` keeps its items in a PL/pgSQL array.

A transaction that touches a temporary table pays for it at commit (~0.3 ms here), and an earn
group is one short transaction. ``migrations/sql/0023_earn_group_items_in_memory.sql`` says
what was measured; the checks, the rows written and the answers are revision 0022's.

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-24
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from alliance.db.migrate import execute_script

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

SIGNATURE = "ledger_earn_group(jsonb)"
SQL = Path(__file__).parents[1] / "sql"


def upgrade() -> None:
    execute_script((SQL / "0023_earn_group_items_in_memory.sql").read_text())
    # CREATE OR REPLACE keeps the function's grants but not its settings (0022).
    op.execute(f"ALTER FUNCTION {SIGNATURE} SET plan_cache_mode = force_generic_plan")


def downgrade() -> None:
    execute_script((SQL / "0022_earn_groups.sql").read_text())
    op.execute(f"ALTER FUNCTION {SIGNATURE} SET plan_cache_mode = force_generic_plan")
    op.execute("DROP TYPE ledger_earn_group_item")
