"""Rate-limit leases: a take may grant a little more than the request's cost, for the process to
spend locally (see ``alliance.ratelimit``); the bucket row records how much it lent.

Measured with bench/ledger.py: one bucket statement per request made every request of an API
client queue on that client's row — 350 earnPoints/s over HTTP with the limiter, 563 without.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE rate_limit_buckets ADD COLUMN leased numeric NOT NULL DEFAULT 0 CHECK (leased >= 0)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE rate_limit_buckets DROP COLUMN leased")
