"""The posting tables' foreign keys to the ledger's own rows, replaced like 0014's to reference data;
and autovacuum that keeps up with an append-only ledger.

Entries, lots and lot movements referred to their transaction (and movements to their lot) by
foreign key. Each check is a query per inserted row that also locks the referenced row (a WAL
record of its own per posting): a redemption writes a transaction, two entries and a movement
per consumed lot, and paid about 10 % of its database time for checks that cannot fail — the
rows are written together by the posting functions, from ids those functions just inserted,
and the referenced rows are never deleted (append-only triggers on transactions, the guard
below on lots). ``ledger_verify`` checks every such reference instead, as 0014 did for
reference data.

Autovacuum: PostgreSQL vacuums an insert-only table after 20 % of it is new, so on a large
ledger the visibility map lags behind by hundreds of thousands of rows, and the index-only scans
of the posting path (the member's rolling points for the tier check, balances from open lots)
fetch heap pages for them. Vacuuming after 1 % brought an earn's database time down by ~10 %
on the benchmark's dataset.

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

from alliance.db.migrate import function_from_script

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

REFERENCES = (  # (table, constraint, column, referenced) dropped by this revision
    ("ledger_entries", "ledger_entries_transaction_id_fkey", "transaction_id", "ledger_transactions(id)"),
    ("lots", "lots_transaction_id_fkey", "transaction_id", "ledger_transactions(id)"),
    ("lot_movements", "lot_movements_transaction_id_fkey", "transaction_id", "ledger_transactions(id)"),
    ("lot_movements", "lot_movements_lot_id_fkey", "lot_id", "lots(id)"),
)
APPEND_ONLY = ("ledger_transactions", "ledger_entries", "lot_movements", "idempotency_records", "lots")
VACUUM_AFTER = "autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02"

# The references ledger_verify checks from now on, added to 0014's reference check.
INTERNAL_REFERENCES = """
        UNION ALL
        SELECT 'entry ' || e.transaction_id || '/' || e.account_id FROM ledger_entries e
        WHERE NOT EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.id = e.transaction_id)
        UNION ALL
        SELECT 'lot ' || l.id FROM lots l
        WHERE NOT EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.id = l.transaction_id)
        UNION ALL
        SELECT 'movement of lot ' || mv.lot_id FROM lot_movements mv
        WHERE NOT EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.id = mv.transaction_id)
      ) x"""


def upgrade() -> None:
    for table, constraint, _, _ in REFERENCES:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}")
    # Lots are updated (remaining) but never deleted or re-keyed; transactions are append-only,
    # and TRUNCATE is refused for both, as for the reference data in 0014.
    op.execute(
        "CREATE TRIGGER ledger_reference BEFORE DELETE OR UPDATE OF id ON lots"
        " FOR EACH ROW EXECUTE FUNCTION ledger_refuse_reference_change('id')"
    )
    for table in ("lots", "ledger_transactions"):
        op.execute(
            f"CREATE TRIGGER ledger_reference_truncate BEFORE TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_reference_change('id')"
        )
    verify_0014 = function_from_script("0014_ledger_hot_path.sql", "ledger_verify")
    head, tail = verify_0014.rsplit("\n      ) x", 1)  # the end of the reference check
    verify = head + INTERNAL_REFERENCES + tail
    verify = verify.replace(
        "'ledger rows refer to existing members, tenants, stores, accounts and assets'",
        "'ledger rows refer to existing members, tenants, stores, accounts, assets, transactions and lots'",
    )
    assert INTERNAL_REFERENCES in verify and "transactions and lots'" in verify
    op.execute(verify)
    for table in APPEND_ONLY:
        op.execute(f"ALTER TABLE {table} SET ({VACUUM_AFTER})")


def downgrade() -> None:
    for table in APPEND_ONLY:
        op.execute(
            f"ALTER TABLE {table} RESET (autovacuum_vacuum_insert_scale_factor, autovacuum_analyze_scale_factor)"
        )
    op.execute(function_from_script("0014_ledger_hot_path.sql", "ledger_verify"))
    for table in ("lots", "ledger_transactions"):
        op.execute(f"DROP TRIGGER ledger_reference_truncate ON {table}")
    op.execute("DROP TRIGGER ledger_reference ON lots")
    for table, constraint, column, referenced in REFERENCES:
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {constraint} FOREIGN KEY ({column}) REFERENCES {referenced}"
        )
