"""Limits and operations: query-cost buckets for rate limiting (UNLOGGED), persisted queries,
and the runs of the scheduled jobs (for /metrics). SQL in ``migrations/sql/0010_limits.sql``.

None of these tables is tenant-owned. The gateway charges the buckets directly; persisted
queries are written only by their SECURITY DEFINER function; job runs are written by the CLI
jobs in an operator context, which row-level security requires.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from alliance.db.migrate import execute_script

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

REGISTER = "persisted_query_register(text, text, int)"


def upgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    execute_script((Path(__file__).parents[1] / "sql" / "0010_limits.sql").read_text())
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON rate_limit_buckets TO {app_role}")
    op.execute(f"REVOKE ALL ON FUNCTION {REGISTER} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {REGISTER} TO {app_role}")
    op.execute(f"GRANT SELECT ON persisted_queries TO {app_role}")

    op.execute(f"GRANT SELECT, INSERT, UPDATE ON job_runs TO {app_role}")
    op.execute("ALTER TABLE job_runs ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE job_runs FORCE ROW LEVEL SECURITY")
    op.execute(
        """DO $$ BEGIN EXECUTE format('CREATE POLICY owner_all ON job_runs TO %I USING (true)
        WITH CHECK (true)', current_user); END $$"""
    )
    operator = "alliance_role() = 'operator'"
    op.execute(f"CREATE POLICY app_operator ON job_runs TO {app_role} USING ({operator}) WITH CHECK ({operator})")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS job_runs")
    op.execute(f"DROP FUNCTION IF EXISTS {REGISTER}")
    op.execute("DROP TABLE IF EXISTS persisted_queries")
    op.execute("DROP TABLE IF EXISTS rate_limit_buckets")
