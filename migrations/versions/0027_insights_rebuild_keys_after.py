"""A full rebuild of the insight facts builds its primary keys after the rows, with less memory.

See ``migrations/sql/0027_insights_rebuild_keys_after.sql`` for the measurements: from empty, the
four member-level summary tables take their rows without a primary key, added back by one sorted
build each, and the facts step runs with work_mem 16MB (its hash aggregates into millions of
groups ran faster in small partitions than in one large table). Incremental runs are unchanged.

The step is revision 0019's function with those two changes, derived from its script so the two
cannot drift apart.

Revision ID: 0027
Revises: 0026
Create Date: 2026-11-25
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from alliance.db.migrate import execute_script, function_from_script

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

SQL = Path(__file__).parents[1] / "sql"
# The member-level summaries: millions of rows each on the benchmark's 10M transactions.
MEMBER_TABLES = (
    "insights_member_months",
    "insights_member_recent_days",
    "insights_member_categories",
    "insights_member_tags",
)


def _revision_0019_refresh_facts() -> str:
    return function_from_script("0019_insights.sql", "insights_refresh_facts")


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"revision 0019's insights_refresh_facts has one {old!r}"
    return text.replace(old, new)


def _keys_after_rows(function: str) -> str:
    """Revision 0019's step, run with work_mem 16MB, dropping the member-level tables' primary
    keys before a fold from empty and adding them back after it."""
    function = _replace_once(
        function, "SET search_path = public AS $$", "SET search_path = public SET work_mem = '16MB' AS $$"
    )
    function = _replace_once(
        function, "  v_sql text;\n", "  v_sql text;\n  v_restore_keys text[] := '{}';\n  v_statement text;\n"
    )
    fold = "  EXECUTE v_sql INTO v_rows USING p_time_zone, v_from, p_upto, p_keep_since;\n"
    tables = ", ".join(f"'{table}'" for table in MEMBER_TABLES)
    return _replace_once(
        function,
        fold,
        "  IF NOT v_merge THEN  -- from empty: the rows go in without their keys, built once after them\n"
        f"    v_restore_keys := insights_drop_primary_keys(ARRAY[{tables}]::regclass[]);\n"
        "  END IF;\n" + fold + "  FOREACH v_statement IN ARRAY v_restore_keys LOOP\n"
        "    EXECUTE v_statement;\n"
        "  END LOOP;\n",
    )


def upgrade() -> None:
    execute_script((SQL / "0027_insights_rebuild_keys_after.sql").read_text())
    execute_script(_keys_after_rows(_revision_0019_refresh_facts()))


def downgrade() -> None:
    # CREATE OR REPLACE sets the function's settings to those it is given: work_mem goes with it.
    execute_script(_revision_0019_refresh_facts())
    op.execute("DROP FUNCTION insights_drop_primary_keys(regclass[])")
