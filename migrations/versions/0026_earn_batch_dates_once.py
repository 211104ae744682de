"""``ledger_earn_batch`` computes expiry and the closed-period check once per (asset, instant).

Revision 0014 meant its staging query to evaluate ``ledger_period_closed`` and
``ledger_asset_expiry`` once for each distinct (asset, instant) of a batch (usually one: every
item posted now). Its ``dated`` CTE was not materialized, so PostgreSQL pulled it up into the
join and evaluated both PL/pgSQL calls, each with its own query, in the final projection: once
per item. A 1000-item batch made 2,000 calls instead of 2.

Measured on the ledger benchmark's database (PostgreSQL 15, this project's 2-core machine),
replaying the same captured 1000-item batches alternately through both versions: 7-10 ms less
database time per batch (~150 -> ~142 ms, and ~101 -> ~94 ms after a VACUUM).

The one change is ``dated AS MATERIALIZED``; the function is otherwise revision 0014's, taken
from its script so the two cannot drift apart.

Revision ID: 0026
Revises: 0025
Create Date: 2026-11-24
"""

from __future__ import annotations

import re
from pathlib import Path

from alembic import op

from alliance.db.migrate import execute_script, function_from_script

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

SIGNATURE = "ledger_earn_batch(text, text, text, bigint, jsonb)"
SQL = Path(__file__).parents[1] / "sql"


def _revision_0014_earn_batch() -> str:
    return function_from_script("0014_ledger_hot_path.sql", "ledger_earn_batch")


def upgrade() -> None:
    definition, replaced = re.subn(
        r"\), dated AS \(", "), dated AS MATERIALIZED (", _revision_0014_earn_batch()
    )
    assert replaced == 1, "revision 0014's staging query has one dated CTE"
    execute_script(definition)
    # CREATE OR REPLACE keeps the function's grants but not its settings (0014).
    op.execute(f"ALTER FUNCTION {SIGNATURE} SET plan_cache_mode = force_generic_plan")


def downgrade() -> None:
    execute_script(_revision_0014_earn_batch())
    op.execute(f"ALTER FUNCTION {SIGNATURE} SET plan_cache_mode = force_generic_plan")
