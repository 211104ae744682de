"""Reversals: an earn claws back from its own lot; a redemption puts points back into the lots it used."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from alliance.api.ids import from_global_id
from alliance.db.database import OPERATOR, run_sql
from alliance.ledger.service import verify_ledger
from alliance.tenants.models import TenantCategory
from tests.conftest import random_phone, unique
from tests.ledger.test_worked_example import EARN, REDEEM, enroll

REVERSE = """mutation($i: ReverseTransactionInput!) { reverseTransaction(input: $i) {
  transaction { id kind points shortfall reverses reason asset }
  balance { asset available held } userErrors { field code message } } }"""
HOLD = """mutation($i: HoldPointsInput!) { holdPoints(input: $i) {
  hold { id } balance { available held } userErrors { code } } }"""
RELEASE = """mutation($i: ReleaseHoldInput!) { releaseHold(input: $i) {
  balance { available held } userErrors { code } } }"""
CAPTURE = """mutation($i: CaptureHoldInput!) { captureHold(input: $i) {
  balance { available held } userErrors { code } } }"""
BALANCE = "query($n: String!) { member(memberNumber: $n) { balance { available held } } }"


@pytest.fixture(scope="module")
async def owner(settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(settings.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(autouse=True)
async def books_stay_consistent(db) -> AsyncIterator[None]:
    """After every scenario every ledger invariant holds."""
    yield
    async with db.transaction(OPERATOR) as session:
        assert await verify_ledger(session) == []


def pk(global_id: str) -> int:
    return from_global_id(global_id)[1]


async def earn(merchant, number: str, amount: int, order: str | None = None) -> dict[str, Any]:
    data = await merchant.api(
        EARN,
        i={
            "memberNumber": number,
            "amount": str(amount),
            "orderRef": order or unique("o"),
            "idempotencyKey": unique("k"),
        },
    )
    assert data["earnPoints"]["userErrors"] == []
    return data["earnPoints"]["transaction"]


async def redeem(merchant, number: str, points: int) -> dict[str, Any]:
    data = await merchant.api(
        REDEEM,
        i={"memberNumber": number, "points": points, "orderRef": unique("r"), "idempotencyKey": unique("k")},
    )
    assert data["redeemPoints"]["userErrors"] == []
    return data["redeemPoints"]["transaction"]


async def reverse(api, transaction_id: str, points: int | None = None, force: bool = False) -> dict[str, Any]:
    data = await api(
        REVERSE,
        i={
            "transactionId": transaction_id,
            "points": points,
            "force": force,
            "reason": "refund",
            "idempotencyKey": unique("k"),
        },
    )
    return data["reverseTransaction"]


async def available(api, number: str) -> int:
    return (await api(BALANCE, n=number))["member"]["balance"]["available"]


async def lots(db, number: str) -> list[dict[str, Any]]:
    async with db.transaction(OPERATOR) as session:
        rows = await run_sql(
            session,
            text("""SELECT l.id, l.transaction_id, l.issuer_tenant_id, l.amount, l.remaining, l.expires_at,
                           l.restored_from_lot_id
                    FROM lots l JOIN members m ON m.id = l.member_id WHERE m.member_number = :n ORDER BY l.id"""),
            {"n": number},
        )
        return [dict(r._mapping) for r in rows]


async def lot_of(db, number: str, transaction_id: str) -> dict[str, Any]:
    [lot] = [lot for lot in await lots(db, number) if lot["transaction_id"] == pk(transaction_id)]
    return lot


async def movements(db, transaction_id: str) -> list[tuple[int, str, int]]:
    async with db.transaction(OPERATOR) as session:
        rows = await run_sql(
            session,
            text("SELECT lot_id, kind, points FROM lot_movements WHERE transaction_id = :t ORDER BY lot_id"),
            {"t": pk(transaction_id)},
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def one_member(make_merchant, *categories: TenantCategory) -> tuple[list[Any], str]:
    merchants = [await make_merchant(category) for category in categories]
    phone = random_phone()
    numbers = {await enroll(merchant, phone) for merchant in merchants}
    assert len(numbers) == 1
    return merchants, numbers.pop()


async def test_full_reversal_of_an_earn_claws_back_its_lot(make_merchant, db):
    [shop], number = await one_member(make_merchant, TenantCategory.SUPERMARKET)
    earned = await earn(shop, number, 100)
    reversed_ = await reverse(shop.api, earned["id"])
    assert reversed_["userErrors"] == []
    tx = reversed_["transaction"]
    assert (tx["kind"], tx["points"], tx["shortfall"], tx["reverses"], tx["reason"]) == (
        "REVERSE",
        100,
        0,
        earned["id"],
        "refund",
    )
    assert reversed_["balance"] == {"asset": "POINTS", "available": 0, "held": 0}
    lot = await lot_of(db, number, earned["id"])
    assert (lot["amount"], lot["remaining"]) == (100, 0)
    assert await movements(db, tx["id"]) == [(lot["id"], "clawback", -100)]


async def test_partial_reversal_claws_back_from_the_very_lot(make_merchant, db):
    [shop], number = await one_member(make_merchant, TenantCategory.SUPERMARKET)
    first = await earn(shop, number, 100)
    second = await earn(shop, number, 50)
    # Redemption would use the first (older) lot first; a reversal of the second must not.
    reversed_ = await reverse(shop.api, second["id"], 30)
    assert reversed_["userErrors"] == []
    assert (reversed_["transaction"]["points"], reversed_["transaction"]["shortfall"]) == (30, 0)
    assert reversed_["balance"]["available"] == 120
    lot1, lot2 = await lot_of(db, number, first["id"]), await lot_of(db, number, second["id"])
    assert (lot1["remaining"], lot2["remaining"]) == (100, 20)
    assert await movements(db, reversed_["transaction"]["id"]) == [(lot2["id"], "clawback", -30)]

    rest = await reverse(shop.api, second["id"])
    assert rest["transaction"]["points"] == 20
    assert (await lot_of(db, number, second["id"]))["remaining"] == 0
    assert await available(shop.api, number) == 100


async def test_spent_points_need_the_operator_and_force(make_merchant, operator, db):
    (issuer, spender), number = await one_member(
        make_merchant, TenantCategory.SUPERMARKET, TenantCategory.HOTEL
    )
    earned = await earn(issuer, number, 100)
    await redeem(spender, number, 80)
    lot = await lot_of(db, number, earned["id"])
    assert lot["remaining"] == 20

    for points in (None, 21, 100):
        refused = await reverse(issuer.api, earned["id"], points)
        assert refused["transaction"] is None
        assert [(e["field"], e["code"]) for e in refused["userErrors"]] == [
            ("points", "POINTS_ALREADY_SPENT")
        ]
    # Without force the operator is refused too.
    refused = await reverse(operator, earned["id"])
    assert [e["code"] for e in refused["userErrors"]] == ["POINTS_ALREADY_SPENT"]
    assert (await lot_of(db, number, earned["id"]))["remaining"] == 20
    assert await available(issuer.api, number) == 20

    forced = await reverse(operator, earned["id"], force=True)
    assert forced["userErrors"] == []
    tx = forced["transaction"]
    assert (tx["kind"], tx["points"], tx["shortfall"], tx["reverses"]) == ("REVERSE", 20, 80, earned["id"])
    assert forced["balance"] == {"asset": "POINTS", "available": 0, "held": 0}
    assert (await lot_of(db, number, earned["id"]))["remaining"] == 0
    assert await movements(db, tx["id"]) == [(lot["id"], "clawback", -20)]

    # The shortfall counts as reversed: nothing is left to reverse.
    again = await reverse(operator, earned["id"], 1, force=True)
    assert [e["code"] for e in again["userErrors"]] == ["REVERSAL_EXCEEDS_ORIGINAL"]
    # The forced reversal is the issuer's transaction: the issuer sees it, the spender does not.
    history = "query($n: String!) { member(memberNumber: $n) { transactions { edges { node { kind points shortfall } } } } }"
    seen = await issuer.api(history, n=number)
    assert {"kind": "REVERSE", "points": 20, "shortfall": 80} in [
        e["node"] for e in seen["member"]["transactions"]["edges"]
    ]
    seen = await spender.api(history, n=number)
    assert [e["node"]["kind"] for e in seen["member"]["transactions"]["edges"]] == ["REDEEM"]


async def test_forced_reversal_when_nothing_is_left(make_merchant, operator, db):
    (issuer, spender), number = await one_member(
        make_merchant, TenantCategory.SUPERMARKET, TenantCategory.HOTEL
    )
    earned = await earn(issuer, number, 40)
    await redeem(spender, number, 40)
    forced = await reverse(operator, earned["id"], force=True)
    assert forced["userErrors"] == []
    assert (forced["transaction"]["points"], forced["transaction"]["shortfall"]) == (0, 40)
    assert await movements(db, forced["transaction"]["id"]) == []
    assert await available(operator, number) == 0


async def test_reversal_of_a_cross_merchant_redemption_restores_the_same_lots(make_merchant, db):
    (a, c, b), number = await one_member(
        make_merchant, TenantCategory.SUPERMARKET, TenantCategory.AUTO_SERVICE, TenantCategory.HOTEL
    )
    earned_a = await earn(a, number, 300)
    earned_c = await earn(c, number, 200)
    redeemed = await redeem(b, number, 450)
    lot_a, lot_c = await lot_of(db, number, earned_a["id"]), await lot_of(db, number, earned_c["id"])
    assert (lot_a["remaining"], lot_c["remaining"]) == (0, 50)
    consumed = await movements(db, redeemed["id"])
    assert consumed == sorted([(lot_a["id"], "consume", -300), (lot_c["id"], "consume", -150)])

    # Only the redeeming merchant may reverse its redemption.
    other = await reverse(a.api, redeemed["id"])
    assert [e["code"] for e in other["userErrors"]] == ["TRANSACTION_NOT_FOUND"]

    part = await reverse(b.api, redeemed["id"], 100)
    assert part["userErrors"] == []
    assert (part["transaction"]["points"], part["transaction"]["reverses"]) == (100, redeemed["id"])
    assert part["balance"]["available"] == 150
    restored = await movements(db, part["transaction"]["id"])
    assert {lot_id for lot_id, _, _ in restored} <= {lot_a["id"], lot_c["id"]}
    assert all(kind == "restore" for _, kind, _ in restored)
    assert sum(points for _, _, points in restored) == 100

    rest = await reverse(b.api, redeemed["id"])
    assert rest["userErrors"] == []
    assert rest["transaction"]["points"] == 350
    assert rest["balance"]["available"] == 500
    restored += await movements(db, rest["transaction"]["id"])
    per_lot: dict[int, int] = {}
    for lot_id, kind, points in restored:
        assert kind == "restore"
        per_lot[lot_id] = per_lot.get(lot_id, 0) + points
    # Every point went back where it came from; no new lot was made.
    assert per_lot == {lot_a["id"]: 300, lot_c["id"]: 150}
    after = await lots(db, number)
    assert [(lot["id"], lot["remaining"], lot["restored_from_lot_id"]) for lot in after] == [
        (lot_a["id"], 300, None),
        (lot_c["id"], 200, None),
    ]
    assert [e["code"] for e in (await reverse(b.api, redeemed["id"], 1))["userErrors"]] == [
        "REVERSAL_EXCEEDS_ORIGINAL"
    ]


async def test_reversal_restores_an_expired_lot_as_a_fresh_one(make_merchant, db, owner):
    (a, c, b), number = await one_member(
        make_merchant, TenantCategory.SUPERMARKET, TenantCategory.AUTO_SERVICE, TenantCategory.HOTEL
    )
    earned_a = await earn(a, number, 100)
    earned_c = await earn(c, number, 100)
    redeemed = await redeem(b, number, 150)  # 100 from A's lot, 50 from C's
    lot_a, lot_c = await lot_of(db, number, earned_a["id"]), await lot_of(db, number, earned_c["id"])
    assert (lot_a["remaining"], lot_c["remaining"]) == (0, 50)

    # A's lot expires after the redemption (and before the refund).
    async with owner.begin() as conn:
        result = await conn.execute(
            text("UPDATE lots SET expires_at = now() - interval '1 minute' WHERE id = :id"),
            {"id": lot_a["id"]},
        )
        assert result.rowcount == 1
    assert await available(b.api, number) == 50

    refund = await reverse(b.api, redeemed["id"])
    assert refund["userErrors"] == []
    assert refund["transaction"]["points"] == 150
    assert refund["balance"] == {"asset": "POINTS", "available": 200, "held": 0}
    assert await available(b.api, number) == 200

    after = {lot["id"]: lot for lot in await lots(db, number)}
    fresh = [lot for lot in after.values() if lot["restored_from_lot_id"] is not None]
    assert len(fresh) == 1
    [new] = fresh
    assert new["restored_from_lot_id"] == lot_a["id"]
    assert new["issuer_tenant_id"] == a.tenant_id  # same issuer: settlement provenance is kept
    assert new["transaction_id"] == pk(refund["transaction"]["id"])
    assert (new["amount"], new["remaining"]) == (100, 100)
    assert new["expires_at"] > datetime.now(UTC) + timedelta(days=365)
    assert after[lot_a["id"]]["remaining"] == 0  # the expired lot is not revived
    assert after[lot_c["id"]]["remaining"] == 100  # the unexpired lot gets its own points back
    assert sorted(await movements(db, refund["transaction"]["id"])) == sorted(
        [(lot_c["id"], "restore", 50), (new["id"], "restore", 100)]
    )

    # The restored points are really spendable.
    spent = await b.api(
        REDEEM, i={"memberNumber": number, "points": 200, "orderRef": "R-2", "idempotencyKey": unique("k")}
    )
    assert spent["redeemPoints"]["userErrors"] == []
    assert spent["redeemPoints"]["balance"]["available"] == 0


async def test_partial_reversals_of_a_redemption_with_an_expired_lot(make_merchant, db, owner):
    """Two partial refunds: the second must not restore again what the first already put in a fresh lot."""
    (a, b), number = await one_member(make_merchant, TenantCategory.SUPERMARKET, TenantCategory.HOTEL)
    earned = await earn(a, number, 100)
    redeemed = await redeem(b, number, 60)
    lot = await lot_of(db, number, earned["id"])
    async with owner.begin() as conn:
        await conn.execute(
            text("UPDATE lots SET expires_at = now() - interval '1 minute' WHERE id = :id"), {"id": lot["id"]}
        )
    assert await available(b.api, number) == 0

    first = await reverse(b.api, redeemed["id"], 25)
    assert first["balance"]["available"] == 25
    second = await reverse(b.api, redeemed["id"], 35)
    assert second["userErrors"] == []
    assert second["balance"]["available"] == 60
    fresh = [x for x in await lots(db, number) if x["restored_from_lot_id"] == lot["id"]]
    assert sorted((x["amount"], x["remaining"]) for x in fresh) == [(25, 25), (35, 35)]
    assert [e["code"] for e in (await reverse(b.api, redeemed["id"], 1))["userErrors"]] == [
        "REVERSAL_EXCEEDS_ORIGINAL"
    ]


async def test_a_reversal_is_not_reversible(make_merchant, db):
    [shop], number = await one_member(make_merchant, TenantCategory.SUPERMARKET)
    earned = await earn(shop, number, 10)
    reversed_ = await reverse(shop.api, earned["id"])
    again = await reverse(shop.api, reversed_["transaction"]["id"])
    assert [(e["field"], e["code"]) for e in again["userErrors"]] == [("transactionId", "NOT_REVERSIBLE")]


async def test_reversal_of_an_earn_cannot_claw_back_held_points(make_merchant, operator, db):
    [shop], number = await one_member(make_merchant, TenantCategory.HOTEL)
    earned = await earn(shop, number, 100)
    held = (
        await shop.api(
            HOLD,
            i={"memberNumber": number, "points": 80, "orderRef": "booking", "idempotencyKey": unique("k")},
        )
    )["holdPoints"]
    assert held["balance"] == {"available": 20, "held": 80}
    try:
        # The clawback used to take held points too, driving available to -80 (fixed in e1df94d).
        for points in (None, 21, 100):
            refused = await reverse(shop.api, earned["id"], points)
            assert refused["transaction"] is None
            assert [e["code"] for e in refused["userErrors"]] == ["POINTS_ALREADY_SPENT"]
        assert await available(shop.api, number) == 20
        # Forced, the operator claws back only what is free; the rest is shortfall.
        forced = await reverse(operator, earned["id"], force=True)
        assert (forced["transaction"]["points"], forced["transaction"]["shortfall"]) == (20, 80)
        assert forced["balance"] == {"asset": "POINTS", "available": 0, "held": 80}
        # The hold is intact and still captures in full.
        captured = await shop.api(CAPTURE, i={"holdId": held["hold"]["id"], "idempotencyKey": unique("k")})
        assert captured["captureHold"]["userErrors"] == []
        assert captured["captureHold"]["balance"] == {"available": 0, "held": 0}
    finally:
        # Whatever happened, free the hold so the shared book stays consistent for later tests.
        await shop.api(RELEASE, i={"holdId": held["hold"]["id"], "idempotencyKey": unique("k")})
