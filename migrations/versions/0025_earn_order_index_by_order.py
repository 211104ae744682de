"""The duplicate-order index is keyed by order reference before member.

``ledger_transactions_earn_order`` makes an order earn once per member at a merchant. Keyed
(tenant, member, order), every earn wrote a leaf page chosen by its member: a random page of a
~100 MB index, which on a server whose buffers do not hold the posting indexes is a read, and
often the write of another dirty page to make room. Keyed (tenant, order, member), the earns of
one POS import (order references that share a prefix, or count up) land on a few adjacent pages.

Measured on the benchmark's data (PostgreSQL 15, 128 MB of shared buffers): inserting the
transactions of a 1000-earn batch read 1086 pages and wrote 511 to make room before, 216 and 221
after. The uniqueness is the same set of columns, so the ``ON CONFLICT (tenant_id, member_id,
order_ref) WHERE kind = 'earn'`` of the posting functions infers this index unchanged, and their
duplicate checks give all three columns.

Revision ID: 0025
Revises: 0024
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def _key_earn_orders_by(columns: str) -> None:
    op.execute(
        "CREATE UNIQUE INDEX ledger_transactions_earn_order_rekeyed"
        f" ON ledger_transactions ({columns}) WHERE kind = 'earn'"
    )
    op.execute("DROP INDEX ledger_transactions_earn_order")
    op.execute("ALTER INDEX ledger_transactions_earn_order_rekeyed RENAME TO ledger_transactions_earn_order")


def upgrade() -> None:
    _key_earn_orders_by("tenant_id, order_ref, member_id")


def downgrade() -> None:
    _key_earn_orders_by("tenant_id, member_id, order_ref")
