"""Reading the wallet: balances now and as of an instant, expiring points, history and who sees what."""

from __future__ import annotations

import asyncio
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
from tests.conftest import Api, random_phone, unique
from tests.ledger.test_worked_example import EARN, REDEEM, enroll

AS_OF = """query($n: String!, $at: DateTime) { member(memberNumber: $n) {
  balance(asset: "POINTS", asOf: $at) { asset available held } } }"""
EXPIRING = """query($n: String!, $days: Int!) { member(memberNumber: $n) {
  balances { asset available expiringSoon(days: $days) { points expiresAt } }
  balance { expiringSoon(days: $days) { points expiresAt } } } }"""
HISTORY = """query($n: String!, $first: Int, $after: String, $filter: TransactionFilterInput) {
  member(memberNumber: $n) { transactions(first: $first, after: $after, filter: $filter) {
    edges { cursor node { id kind points } } pageInfo { hasNextPage hasPreviousPage endCursor } } } }"""


@pytest.fixture(scope="module")
async def owner(settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(settings.database_url)
    yield engine
    await engine.dispose()


async def earn(merchant, number: str, amount: int, **extra: Any) -> dict[str, Any]:
    data = await merchant.api(
        EARN,
        i={
            "memberNumber": number,
            "amount": str(amount),
            "orderRef": unique("o"),
            "idempotencyKey": unique("k"),
        }
        | extra,
    )
    assert data["earnPoints"]["userErrors"] == []
    return data["earnPoints"]["transaction"]


async def redeem(merchant, number: str, points: int) -> dict[str, Any]:
    data = await merchant.api(
        REDEEM,
        i={"memberNumber": number, "points": points, "orderRef": unique("r"), "idempotencyKey": unique("k")},
    )
    return data["redeemPoints"]


async def as_of(api, number: str, at: datetime | None) -> dict[str, Any]:
    return (await api(AS_OF, n=number, at=None if at is None else at.isoformat()))["member"]["balance"]


async def lot_id_of(db, transaction_id: str) -> int:
    async with db.transaction(OPERATOR) as session:
        return (
            await run_sql(
                session,
                text("SELECT id FROM lots WHERE transaction_id = :t"),
                {"t": from_global_id(transaction_id)[1]},
            )
        ).scalar_one()


async def set_expiry(owner: AsyncEngine, lot_id: int, expression: str) -> None:
    async with owner.begin() as conn:
        result = await conn.execute(
            text(f"UPDATE lots SET expires_at = {expression} WHERE id = :id"), {"id": lot_id}
        )
        assert result.rowcount == 1


async def assert_books_balance(db) -> None:
    async with db.transaction(OPERATOR) as session:
        assert await verify_ledger(session) == []


async def test_balance_as_of_an_instant(make_merchant, db):
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    backdated = datetime.now(UTC) - timedelta(days=2)
    first = await earn(merchant, number, 100, effectiveAt=backdated.isoformat())
    await asyncio.sleep(0.01)
    second = await earn(merchant, number, 50)
    t1 = datetime.fromisoformat(first["effectiveAt"])
    t2 = datetime.fromisoformat(second["effectiveAt"])
    assert t1 == backdated and t1 < t2
    between = t1 + (t2 - t1) / 2

    assert await as_of(merchant.api, number, t1 - timedelta(microseconds=1)) == {
        "asset": "POINTS",
        "available": 0,
        "held": 0,
    }
    assert await as_of(merchant.api, number, t1) == {"asset": "POINTS", "available": 100, "held": 0}
    assert await as_of(merchant.api, number, between) == {"asset": "POINTS", "available": 100, "held": 0}
    assert await as_of(merchant.api, number, datetime.now(UTC) - timedelta(days=1)) == {
        "asset": "POINTS",
        "available": 100,
        "held": 0,
    }
    assert await as_of(merchant.api, number, t2) == {"asset": "POINTS", "available": 150, "held": 0}

    spent = await redeem(merchant, number, 30)
    assert spent["userErrors"] == []
    assert await as_of(merchant.api, number, between) == {"asset": "POINTS", "available": 100, "held": 0}
    assert await as_of(merchant.api, number, datetime.now(UTC)) == {
        "asset": "POINTS",
        "available": 120,
        "held": 0,
    }
    assert await as_of(merchant.api, number, None) == {"asset": "POINTS", "available": 120, "held": 0}


async def test_points_expiring_soon(make_merchant, db, owner):
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    soon = await earn(merchant, number, 100)
    await earn(merchant, number, 40)
    # Freshly earned POINTS expire at the end of the 24th month: nothing is expiring soon.
    data = await merchant.api(EXPIRING, n=number, days=366)
    assert data["member"]["balances"] == [{"asset": "POINTS", "available": 140, "expiringSoon": []}]

    await set_expiry(owner, await lot_id_of(db, soon["id"]), "now() + interval '5 days'")
    for days in (30, 6, 366):
        data = (await merchant.api(EXPIRING, n=number, days=days))["member"]
        [entry] = data["balances"][0]["expiringSoon"]
        assert entry["points"] == 100
        expires = datetime.fromisoformat(entry["expiresAt"])
        assert abs(expires - (datetime.now(UTC) + timedelta(days=5))) < timedelta(minutes=1)
        assert data["balance"]["expiringSoon"] == [entry]
    for days in (1, 4, 0):
        data = (await merchant.api(EXPIRING, n=number, days=days))["member"]
        assert data["balances"][0]["expiringSoon"] == [] and data["balance"]["expiringSoon"] == []

    # Redemption takes the soonest-expiring points first, so fewer are left to lose.
    spent = await redeem(merchant, number, 30)
    assert spent["userErrors"] == []
    data = (await merchant.api(EXPIRING, n=number, days=30))["member"]
    assert [e["points"] for e in data["balances"][0]["expiringSoon"]] == [70]
    assert data["balances"][0]["available"] == 110

    bad = await merchant.api.post(EXPIRING, {"n": number, "days": 367})
    assert "INVALID_DAYS" in bad.text


async def test_an_expired_lot_is_not_available(make_merchant, db, owner):
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    old = await earn(merchant, number, 100)
    await earn(merchant, number, 50)
    old_lot = await lot_id_of(db, old["id"])
    await set_expiry(owner, old_lot, "now() - interval '1 second'")

    assert await as_of(merchant.api, number, None) == {"asset": "POINTS", "available": 50, "held": 0}
    data = await merchant.api(EXPIRING, n=number, days=30)
    assert data["member"]["balances"][0]["expiringSoon"] == []  # already gone, not "expiring"

    refused = await redeem(merchant, number, 60)
    assert refused["transaction"] is None
    assert [(e["code"], e["message"]) for e in refused["userErrors"]] == [
        ("INSUFFICIENT_POINTS", "50 points available, 60 requested")
    ]
    held = await merchant.api(
        "mutation($i: HoldPointsInput!) { holdPoints(input: $i) { userErrors { code } } }",
        i={"memberNumber": number, "points": 51, "orderRef": "h", "idempotencyKey": unique("k")},
    )
    assert [e["code"] for e in held["holdPoints"]["userErrors"]] == ["INSUFFICIENT_POINTS"]

    spent = await redeem(merchant, number, 50)
    assert spent["userErrors"] == []
    assert spent["balance"]["available"] == 0
    async with db.transaction(OPERATOR) as session:
        consumed = (
            (
                await run_sql(
                    session,
                    text("SELECT lot_id FROM lot_movements WHERE transaction_id = :t"),
                    {"t": from_global_id(spent["transaction"]["id"])[1]},
                )
            )
            .scalars()
            .all()
        )
        remaining = (
            await run_sql(session, text("SELECT remaining FROM lots WHERE id = :id"), {"id": old_lot})
        ).scalar_one()
    assert old_lot not in consumed and len(consumed) == 1
    assert remaining == 100  # untouched: expired points are never spent
    await assert_books_balance(db)


def kinds_and_points(data: dict[str, Any]) -> list[tuple[str, int]]:
    return [(e["node"]["kind"], e["node"]["points"]) for e in data["member"]["transactions"]["edges"]]


async def member_api(db, app, http, number: str) -> Api:
    async with db.transaction(OPERATOR) as session:
        member_id = (
            await run_sql(session, text("SELECT id FROM members WHERE member_number = :n"), {"n": number})
        ).scalar_one()
    return Api(http, app.state.token_issuer.for_member(member_id, number).access_token)


async def test_who_sees_which_transactions(make_merchant, operator, db, app, http):
    a = await make_merchant(TenantCategory.SUPERMARKET)
    b = await make_merchant(TenantCategory.HOTEL)
    phone = random_phone()
    number = await enroll(a, phone)
    assert await enroll(b, phone) == number
    await earn(a, number, 100)
    await earn(b, number, 70)
    assert (await redeem(b, number, 120))["userErrors"] == []
    everything = [("REDEEM", 120), ("EARN", 70), ("EARN", 100)]  # newest first

    assert kinds_and_points(await a.api(HISTORY, n=number)) == [("EARN", 100)]
    assert kinds_and_points(await b.api(HISTORY, n=number)) == [("REDEEM", 120), ("EARN", 70)]
    assert kinds_and_points(await operator(HISTORY, n=number)) == everything
    member = await member_api(db, app, http, number)
    assert kinds_and_points(await member(HISTORY, n=number)) == everything
    # Everyone sees the same unified balance, whichever merchant's points they are.
    for api in (a.api, b.api, operator, member):
        assert (await as_of(api, number, None))["available"] == 50

    # A third merchant that never enrolled the member cannot see the member at all.
    c = await make_merchant(TenantCategory.RETAIL)
    assert (await c.api(HISTORY, n=number))["member"] is None
    # Another member cannot read this member.
    stranger_number = await enroll(c, random_phone())
    stranger = await member_api(db, app, http, stranger_number)
    assert (await stranger(HISTORY, n=number))["member"] is None


async def test_transactions_filter_by_kind(make_merchant, operator, db):
    a = await make_merchant(TenantCategory.SUPERMARKET)
    b = await make_merchant(TenantCategory.HOTEL)
    phone = random_phone()
    number = await enroll(a, phone)
    await enroll(b, phone)
    await earn(a, number, 100)
    await earn(b, number, 30)
    await redeem(b, number, 20)

    def query(kinds: list[str], tenant: str | None = None) -> dict[str, Any]:
        return {"kinds": kinds} | ({"tenantCode": tenant} if tenant else {})

    data = await operator(HISTORY, n=number, filter=query(["EARN"]))
    assert kinds_and_points(data) == [("EARN", 30), ("EARN", 100)]
    data = await operator(HISTORY, n=number, filter=query(["REDEEM"]))
    assert kinds_and_points(data) == [("REDEEM", 20)]
    data = await operator(HISTORY, n=number, filter=query(["EARN", "REDEEM"]))
    assert len(kinds_and_points(data)) == 3
    data = await operator(HISTORY, n=number, filter=query(["CAPTURE"]))
    assert kinds_and_points(data) == []
    data = await operator(HISTORY, n=number, filter=query(["EARN"], b.code))
    assert kinds_and_points(data) == [("EARN", 30)]
    # A merchant's filter applies within its own transactions.
    data = await b.api(HISTORY, n=number, filter=query(["EARN"]))
    assert kinds_and_points(data) == [("EARN", 30)]
    data = await a.api(HISTORY, n=number, filter=query(["REDEEM"]))
    assert kinds_and_points(data) == []


async def test_pagination_has_no_overlap(make_merchant, operator):
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    for amount in range(1, 8):
        await earn(merchant, number, amount)
    full = (await operator(HISTORY, n=number))["member"]["transactions"]
    all_ids = [e["node"]["id"] for e in full["edges"]]
    assert len(all_ids) == 7
    assert [e["node"]["points"] for e in full["edges"]] == [7, 6, 5, 4, 3, 2, 1]  # newest first
    assert full["pageInfo"]["hasNextPage"] is False

    for api in (operator, merchant.api):
        pages: list[list[str]] = []
        after = None
        while True:
            page = (await api(HISTORY, n=number, first=3, after=after))["member"]["transactions"]
            pages.append([e["node"]["id"] for e in page["edges"]])
            assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
            assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
            assert len(pages) < 5, pages
        assert [len(p) for p in pages] == [3, 3, 1]
        assert [i for p in pages for i in p] == all_ids  # each once, in order: no overlap, no gap
