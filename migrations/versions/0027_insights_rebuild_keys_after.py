"""A full rebuild of the insight facts builds its primary keys after the rows, with less memory.

See ``migrations/sql/0027_insights_rebuild_keys_after.sql``: from empty, the four member-level
summary tables take their rows without a primary key, added back by one sorted build, and the
facts step runs with work_mem 16MB (its hash aggregates into millions of groups ran faster in
small partitions than in one large table). Incremental runs are unchanged.

Revision ID: 0027
Revises: 0026
Create Date: 2026-11-25
"""

from __future__ import annotations

import re
from pathlib import Path

from alembic import op

from alliance.db.migrate import execute_script

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

SQL = Path(__file__).parents[1] / "sql"


def _revision_0019_refresh_facts() -> str:
    source = (SQL / "0019_insights.sql").read_text()
    found = re.search(r"CREATE FUNCTION insights_refresh_facts\(.*?\nEND \$\$;", source, re.DOTALL)
    assert found, "revision 0019 defines insights_refresh_facts"
    return found.group(0).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def upgrade() -> None:
    execute_script((SQL / "0027_insights_rebuild_keys_after.sql").read_text())


def downgrade() -> None:
    # CREATE OR REPLACE sets the function's settings to those it is given: work_mem goes with it.
    execute_script(_revision_0019_refresh_facts())
    op.execute("DROP FUNCTION insights_drop_primary_keys(regclass[])")
