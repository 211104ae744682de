"""Earns posted in groups: ``ledger_earn_group``, one transaction for concurrent earn requests.

The function is in ``migrations/sql/0022_earn_groups.sql`` (its header says what it checks and
what it leaves to ``ledger_earn``); ``alliance.ledger.groups`` gathers the requests.

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-24
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from alliance.db.migrate import execute_script

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

SIGNATURE = "ledger_earn_group(jsonb)"


def upgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    execute_script((Path(__file__).parents[1] / "sql" / "0022_earn_groups.sql").read_text())
    # Like the other posting functions (0014): its statements' plans do not depend on the values.
    op.execute(f"ALTER FUNCTION {SIGNATURE} SET plan_cache_mode = force_generic_plan")
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO {app_role}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
