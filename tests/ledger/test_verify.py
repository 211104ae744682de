"""`alliance ledger verify` and ledger_verify(): a clean book passes, a corrupted one is caught."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from alliance.api.ids import from_global_id
from alliance.db.database import OPERATOR
from alliance.ledger.service import verify_ledger
from tests.conftest import random_phone, unique
from tests.ledger.test_worked_example import EARN, REDEEM, enroll

LOT_CHECK = "lot remaining = amount + movements"
WALLET_CHECK = "member wallet balance = sum of lot remaining"
REFERENCE_CHECK = (
    "ledger rows refer to existing members, tenants, stores, accounts, assets, transactions and lots"
)


@pytest.fixture(scope="module")
async def owner(settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(settings.database_url)
    yield engine
    await engine.dispose()


async def run_cli(settings) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLIANCE_") and k != "DATABASE_URL"}
    env |= {"DATABASE_URL": settings.database_url, "ALLIANCE_APP_ROLE": settings.app_role}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "alliance.cli", "ledger", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def a_lot_with_points(make_merchant) -> int:
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    earned = await merchant.api(
        EARN, i={"memberNumber": number, "amount": "100", "orderRef": "E-1", "idempotencyKey": unique("k")}
    )
    spent = await merchant.api(
        REDEEM, i={"memberNumber": number, "points": 30, "orderRef": "R-1", "idempotencyKey": unique("k")}
    )
    assert spent["redeemPoints"]["balance"]["available"] == 70
    return from_global_id(earned["earnPoints"]["transaction"]["id"])[1]


async def test_cli_passes_on_the_test_database(make_merchant, settings):
    await a_lot_with_points(make_merchant)  # something to verify, whatever ran before
    result = await run_cli(settings)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "ledger verified: every invariant holds" in result.stdout


async def test_a_corrupted_lot_is_detected(make_merchant, db, owner):
    earn_tx = await a_lot_with_points(make_merchant)
    async with owner.connect() as conn:
        transaction = await conn.begin()
        try:
            lot_id = (
                await conn.execute(
                    text(
                        "UPDATE lots SET remaining = remaining - 1 WHERE transaction_id = :t AND remaining > 0 RETURNING id"
                    ),
                    {"t": earn_tx},
                )
            ).scalar_one()
            rows = (await conn.execute(text("SELECT * FROM ledger_verify()"))).all()
            failed = {row.check_name: (row.failures, row.example) for row in rows}
            assert failed[LOT_CHECK] == (1, str(lot_id))
            assert failed[WALLET_CHECK][0] == 1
            assert set(failed) == {LOT_CHECK, WALLET_CHECK}, failed
        finally:
            await transaction.rollback()
    # Rolled back: the shared book is whole again.
    async with db.transaction(OPERATOR) as session:
        assert await verify_ledger(session) == []


async def test_cli_fails_on_a_corrupted_book(make_merchant, db, owner, settings):
    """Committed corruption (restored right after) makes the command exit 1 and name the checks."""
    earn_tx = await a_lot_with_points(make_merchant)
    async with owner.begin() as conn:
        lot_id = (
            await conn.execute(
                text("UPDATE lots SET remaining = remaining - 1 WHERE transaction_id = :t RETURNING id"),
                {"t": earn_tx},
            )
        ).scalar_one()
    try:
        result = await run_cli(settings)
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert "ledger verification FAILED (2 checks)" in result.stderr
        assert f"{LOT_CHECK}: 1 failing (e.g. {lot_id})" in result.stderr
        assert WALLET_CHECK in result.stderr
    finally:
        async with owner.begin() as conn:
            await conn.execute(
                text("UPDATE lots SET remaining = remaining + 1 WHERE id = :id"), {"id": lot_id}
            )
    async with db.transaction(OPERATOR) as session:
        assert await verify_ledger(session) == []


async def test_reference_data_the_ledger_points_at_cannot_be_deleted_or_rekeyed(make_merchant, owner):
    """The posting tables have no foreign keys to members, tenants, stores, accounts and assets
    (each check locked the referenced row): those rows are guarded instead, for the owner too."""
    earn_tx = await a_lot_with_points(make_merchant)
    refused = [
        "DELETE FROM members WHERE id = (SELECT member_id FROM ledger_transactions WHERE id = :t)",
        "UPDATE members SET id = DEFAULT WHERE id = (SELECT member_id FROM ledger_transactions WHERE id = :t)",
        "DELETE FROM tenants WHERE id = (SELECT tenant_id FROM ledger_transactions WHERE id = :t)",
        "DELETE FROM accounts WHERE member_id = (SELECT member_id FROM ledger_transactions WHERE id = :t)",
        "UPDATE assets SET code = 'POINTS2' WHERE code = 'POINTS' AND :t > 0",
        "TRUNCATE stores CASCADE",
        # The ledger's own rows that entries, lots and movements point at (no foreign keys either).
        "DELETE FROM lots WHERE transaction_id = :t",
        "UPDATE lots SET id = DEFAULT WHERE transaction_id = :t",
        "TRUNCATE lots CASCADE",
        "TRUNCATE ledger_transactions CASCADE",
    ]
    for statement in refused:
        async with owner.connect() as conn:
            transaction = await conn.begin()
            try:
                with pytest.raises(DBAPIError, match="the ledger refers to"):
                    await conn.execute(text(statement), {"t": earn_tx})
            finally:
                await transaction.rollback()
    async with owner.begin() as conn:  # other changes to those rows are fine
        renamed = await conn.execute(
            text("UPDATE assets SET name = name WHERE code = 'POINTS' AND :t > 0"), {"t": earn_tx}
        )
        assert renamed.rowcount == 1


async def test_an_entry_pointing_at_no_account_is_detected(make_merchant, db, owner):
    earn_tx = await a_lot_with_points(make_merchant)
    async with owner.connect() as conn:
        transaction = await conn.begin()
        try:
            await conn.execute(
                text(
                    "INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount)"
                    " SELECT id, -1, member_id, asset, 1 FROM ledger_transactions WHERE id = :t"
                    " UNION ALL SELECT id, -2, member_id, asset, -1 FROM ledger_transactions WHERE id = :t"
                ),
                {"t": earn_tx},
            )
            rows = (await conn.execute(text("SELECT * FROM ledger_verify()"))).all()
            failed = {row.check_name: (row.failures, row.example) for row in rows}
            assert failed == {REFERENCE_CHECK: (2, f"entry {earn_tx}/-1")}, failed
        finally:
            await transaction.rollback()
    async with db.transaction(OPERATOR) as session:
        assert await verify_ledger(session) == []


async def test_entries_and_movements_pointing_at_no_transaction_are_detected(make_merchant, db, owner):
    """Entries, lots and movements refer to their transaction without a foreign key (0021)."""
    earn_tx = await a_lot_with_points(make_merchant)
    async with owner.connect() as conn:
        transaction = await conn.begin()
        try:
            # A balanced pair between two non-wallet accounts of a missing transaction: only the
            # reference check can tell.
            await conn.execute(
                text(
                    "INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount)"
                    " SELECT -7, a.id, t.member_id, t.asset, CASE WHEN a.n = 1 THEN 1 ELSE -1 END"
                    " FROM ledger_transactions t, LATERAL (SELECT id, row_number() OVER (ORDER BY id) AS n"
                    "   FROM accounts WHERE asset = t.asset AND kind = 'tenant_issuance' LIMIT 2) a"
                    " WHERE t.id = :t"
                ),
                {"t": earn_tx},
            )
            await conn.execute(
                text(
                    # A point out and back in: the lot's own check still balances.
                    "INSERT INTO lot_movements (lot_id, transaction_id, member_id, kind, points)"
                    " SELECT l.id, m.tx, l.member_id, m.kind, m.points FROM lots l,"
                    " (VALUES (-7, 'consume', -1), (-8, 'restore', 1)) m(tx, kind, points)"
                    " WHERE l.transaction_id = :t"
                ),
                {"t": earn_tx},
            )
            rows = (await conn.execute(text("SELECT * FROM ledger_verify()"))).all()
            failed = {row.check_name: (row.failures, row.example) for row in rows}
            assert set(failed) == {REFERENCE_CHECK}, failed
            assert failed[REFERENCE_CHECK][0] == 4, failed  # two entries, two movements
        finally:
            await transaction.rollback()
    async with db.transaction(OPERATOR) as session:
        assert await verify_ledger(session) == []
