"""Tier upgrades after a credit, set-based: the members the check keeps move up together.

``migrations/sql/0024_tier_upgrades_set_based.sql`` says what was measured and which decisions
are kept; ``tier_upgrade_if_qualified`` still decides for a single member.

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-24
"""

from __future__ import annotations

import re
from pathlib import Path

from alembic import op

from alliance.db.migrate import execute_script

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
    source = (SQL / "0014_ledger_hot_path.sql").read_text()
    pattern = r"CREATE OR REPLACE FUNCTION tier_upgrade_members_if_qualified\(.*?\$\$;"
    found = re.search(pattern, source, re.DOTALL)
    assert found, "revision 0014 defines the per-member loop"
    execute_script(found.group(0))
    op.execute(f"ALTER FUNCTION {SIGNATURE} SET plan_cache_mode = force_generic_plan")
    op.execute("DROP FUNCTION tier_targets(bigint[])")
