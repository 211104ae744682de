"""Tier upgrades after a credit, set-based: the members the check keeps move up together.

``migrations/sql/0024_tier_upgrades_set_based.sql`` says what was measured and which decisions
are kept; ``tier_upgrade_if_qualified`` still decides for a single member.

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-24
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from alliance.db.migrate import execute_script, function_from_script

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

SIGNATURE = "tier_upgrade_members_if_qualified(bigint[])"
SQL = Path(__file__).parents[1] / "sql"


def upgrade() -> None:
    execute_script((SQL / "0024_tier_upgrades_set_based.sql").read_text())
    # CREATE OR REPLACE keeps the function's grants but not its settings (0014).
    op.execute(f"ALTER FUNCTION {SIGNATURE} SET plan_cache_mode = force_generic_plan")


def downgrade() -> None:
    execute_script(function_from_script("0014_ledger_hot_path.sql", "tier_upgrade_members_if_qualified"))
    op.execute(f"ALTER FUNCTION {SIGNATURE} SET plan_cache_mode = force_generic_plan")
    op.execute("DROP FUNCTION tier_targets(bigint[])")
