"""Holds: points reserved for a pending redemption, then captured, released, or timed out."""

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
from tests.conftest import random_phone, unique
from tests.ledger.test_worked_example import EARN, REDEEM, enroll

HOLD = """mutation($i: HoldPointsInput!) { holdPoints(input: $i) {
  transaction { id } hold { id points capturedPoints status asset expiresAt }
  balance { asset available held } userErrors { field code message } } }"""
CAPTURE = """mutation($i: CaptureHoldInput!) { captureHold(input: $i) {
  transaction { id kind points asset orderRef } hold { id points capturedPoints status }
  balance { asset available held } userErrors { field code message } } }"""
RELEASE = """mutation($i: ReleaseHoldInput!) { releaseHold(input: $i) {
  transaction { id } hold { id points capturedPoints status }
  balance { asset available held } userErrors { field code message } } }"""
BALANCE = "query($n: String!) { member(memberNumber: $n) { balance { available held } } }"


@pytest.fixture(scope="module")
async def owner(settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(settings.database_url)
    yield engine
    await engine.dispose()


async def funded(make_merchant, points: int) -> tuple[Any, str]:
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    earned = await merchant.api(
        EARN,
        i={"memberNumber": number, "amount": str(points), "orderRef": "E-1", "idempotencyKey": unique("k")},
    )
    assert earned["earnPoints"]["balance"] == {"asset": "POINTS", "available": points, "held": 0}
    return merchant, number


async def hold(merchant, number: str, points: int, **extra: Any) -> dict[str, Any]:
    data = await merchant.api(
        HOLD,
        i={
            "memberNumber": number,
            "points": points,
            "orderRef": unique("booking"),
            "idempotencyKey": unique("k"),
        }
        | extra,
    )
    return data["holdPoints"]


async def capture(merchant, hold_id: str, points: int | None = None) -> dict[str, Any]:
    data = await merchant.api(CAPTURE, i={"holdId": hold_id, "points": points, "idempotencyKey": unique("k")})
    return data["captureHold"]


async def release(merchant, hold_id: str) -> dict[str, Any]:
    return (await merchant.api(RELEASE, i={"holdId": hold_id, "idempotencyKey": unique("k")}))["releaseHold"]


async def balance(api, number: str) -> dict[str, int]:
    return (await api(BALANCE, n=number))["member"]["balance"]


async def posted(db, number: str) -> int:
    """Points in the member's lots (posted, unexpired), whatever is held."""
    async with db.transaction(OPERATOR) as session:
        return (
            await run_sql(
                session,
                text("""SELECT coalesce(sum(l.remaining), 0) FROM lots l JOIN members m ON m.id = l.member_id
                        WHERE m.member_number = :n AND (l.expires_at IS NULL OR l.expires_at > now())"""),
                {"n": number},
            )
        ).scalar_one()


async def assert_books_balance(db) -> None:
    async with db.transaction(OPERATOR) as session:
        assert await verify_ledger(session) == []


async def test_hold_reserves_and_release_restores(make_merchant, db):
    merchant, number = await funded(make_merchant, 300)
    held = await hold(merchant, number, 120, timeoutSeconds=3600)
    assert held["userErrors"] == []
    assert held["transaction"] is None  # a hold posts nothing
    assert held["balance"] == {"asset": "POINTS", "available": 180, "held": 120}
    assert held["hold"]["points"] == 120 and held["hold"]["capturedPoints"] == 0
    assert held["hold"]["status"] == "ACTIVE" and held["hold"]["asset"] == "POINTS"
    expires = datetime.fromisoformat(held["hold"]["expiresAt"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    assert await balance(merchant.api, number) == {"available": 180, "held": 120}
    assert await posted(db, number) == 300

    # Held points cannot be spent twice: a second hold or a redemption sees only what is left.
    too_much = await hold(merchant, number, 181)
    assert [e["code"] for e in too_much["userErrors"]] == ["INSUFFICIENT_POINTS"]
    second = await hold(merchant, number, 80)
    assert second["balance"] == {"asset": "POINTS", "available": 100, "held": 200}

    released = await release(merchant, held["hold"]["id"])
    assert released["userErrors"] == [] and released["transaction"] is None
    assert released["hold"]["status"] == "RELEASED" and released["hold"]["capturedPoints"] == 0
    assert released["balance"] == {"asset": "POINTS", "available": 220, "held": 80}
    assert (await release(merchant, second["hold"]["id"]))["balance"]["available"] == 300
    assert await balance(merchant.api, number) == {"available": 300, "held": 0}
    assert await posted(db, number) == 300
    await assert_books_balance(db)


async def test_default_timeout_is_a_day(make_merchant):
    merchant, number = await funded(make_merchant, 10)
    held = await hold(merchant, number, 10)
    expires = datetime.fromisoformat(held["hold"]["expiresAt"])
    assert timedelta(hours=23, minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=24)
    for seconds in (59, 30 * 24 * 3600 + 1):
        refused = await hold(merchant, number, 1, timeoutSeconds=seconds)
        assert [(e["field"], e["code"]) for e in refused["userErrors"]] == [
            ("timeoutSeconds", "INVALID_TIMEOUT")
        ]


async def test_full_capture_posts_a_capture_transaction(make_merchant, db):
    merchant, number = await funded(make_merchant, 300)
    held = await hold(merchant, number, 100, orderRef="ROOM-42")
    captured = await capture(merchant, held["hold"]["id"])
    assert captured["userErrors"] == []
    assert captured["transaction"]["kind"] == "CAPTURE"
    assert captured["transaction"]["points"] == 100
    assert captured["transaction"]["orderRef"] == "ROOM-42"
    assert captured["hold"] == {
        "id": held["hold"]["id"],
        "points": 100,
        "capturedPoints": 100,
        "status": "CAPTURED",
    }
    assert captured["balance"] == {"asset": "POINTS", "available": 200, "held": 0}
    assert await posted(db, number) == 200

    tx_pk = from_global_id(captured["transaction"]["id"])[1]
    async with db.transaction(OPERATOR) as session:
        consumed = (
            await run_sql(
                session,
                text("SELECT -sum(points) FROM lot_movements WHERE transaction_id = :t AND kind = 'consume'"),
                {"t": tx_pk},
            )
        ).scalar_one()
        hold_pk = (
            await run_sql(
                session, text("SELECT hold_id FROM ledger_transactions WHERE id = :t"), {"t": tx_pk}
            )
        ).scalar_one()
    assert consumed == 100
    assert hold_pk == from_global_id(held["hold"]["id"])[1]

    # A captured hold is closed.
    for again in (await capture(merchant, held["hold"]["id"]), await release(merchant, held["hold"]["id"])):
        assert [e["code"] for e in again["userErrors"]] == ["HOLD_NOT_ACTIVE"]
    assert await balance(merchant.api, number) == {"available": 200, "held": 0}
    await assert_books_balance(db)


async def test_partial_capture_frees_the_rest(make_merchant, db):
    merchant, number = await funded(make_merchant, 300)
    held = await hold(merchant, number, 100)
    assert held["balance"]["available"] == 200
    captured = await capture(merchant, held["hold"]["id"], 60)
    assert captured["userErrors"] == []
    assert captured["transaction"]["points"] == 60
    assert captured["hold"]["capturedPoints"] == 60 and captured["hold"]["status"] == "CAPTURED"
    assert captured["balance"] == {"asset": "POINTS", "available": 240, "held": 0}
    assert await balance(merchant.api, number) == {"available": 240, "held": 0}
    assert await posted(db, number) == 240
    # The freed 40 are really spendable.
    spent = await merchant.api(
        REDEEM, i={"memberNumber": number, "points": 240, "orderRef": "R", "idempotencyKey": unique("k")}
    )
    assert spent["redeemPoints"]["balance"]["available"] == 0
    await assert_books_balance(db)


async def test_capture_more_than_held(make_merchant, db):
    merchant, number = await funded(make_merchant, 300)
    held = await hold(merchant, number, 100)
    refused = await capture(merchant, held["hold"]["id"], 101)
    assert refused["transaction"] is None and refused["hold"] is None
    assert [(e["field"], e["code"]) for e in refused["userErrors"]] == [("points", "CAPTURE_EXCEEDS_HOLD")]
    # Nothing changed: the hold is still active and can be captured in full.
    assert await balance(merchant.api, number) == {"available": 200, "held": 100}
    assert await posted(db, number) == 300
    captured = await capture(merchant, held["hold"]["id"], 100)
    assert captured["balance"] == {"asset": "POINTS", "available": 200, "held": 0}
    await assert_books_balance(db)


async def test_operator_may_release_a_merchants_hold(make_merchant, operator, db):
    merchant, number = await funded(make_merchant, 50)
    held = await hold(merchant, number, 50)
    released = (await operator(RELEASE, i={"holdId": held["hold"]["id"], "idempotencyKey": unique("k")}))[
        "releaseHold"
    ]
    assert released["userErrors"] == []
    assert released["balance"] == {"asset": "POINTS", "available": 50, "held": 0}


async def expire_hold(owner: AsyncEngine, hold_global_id: str) -> None:
    async with owner.begin() as conn:
        updated = await conn.execute(
            text(
                "UPDATE holds SET expires_at = now() - interval '1 second' WHERE id = :h AND status = 'active'"
            ),
            {"h": from_global_id(hold_global_id)[1]},
        )
        assert updated.rowcount == 1


async def test_an_expired_hold_never_reduces_available(make_merchant, db, owner):
    merchant, number = await funded(make_merchant, 300)
    held = await hold(merchant, number, 100)
    other = await hold(merchant, number, 50)
    assert await balance(merchant.api, number) == {"available": 150, "held": 150}

    await expire_hold(owner, held["hold"]["id"])
    # No job ran: the balance is right by itself, for every reader.
    assert await balance(merchant.api, number) == {"available": 250, "held": 50}
    async with db.transaction(OPERATOR) as session:
        status = (
            await run_sql(
                session,
                text("SELECT status FROM holds WHERE id = :h"),
                {"h": from_global_id(held["hold"]["id"])[1]},
            )
        ).scalar_one()
    assert status == "active"  # still active in the table; it simply no longer counts

    for closing in (
        await capture(merchant, held["hold"]["id"]),
        await capture(merchant, held["hold"]["id"], 10),
        await release(merchant, held["hold"]["id"]),
    ):
        assert closing["transaction"] is None
        assert [(e["field"], e["code"]) for e in closing["userErrors"]] == [("holdId", "HOLD_EXPIRED")]
    assert await balance(merchant.api, number) == {"available": 250, "held": 50}
    assert await posted(db, number) == 300

    # The freed points can be spent at once.
    spent = await merchant.api(
        REDEEM, i={"memberNumber": number, "points": 250, "orderRef": "R", "idempotencyKey": unique("k")}
    )
    assert spent["redeemPoints"]["userErrors"] == []
    assert spent["redeemPoints"]["balance"] == {"asset": "POINTS", "available": 0, "held": 50}
    # The live hold is untouched and still captures.
    assert (await capture(merchant, other["hold"]["id"]))["balance"] == {
        "asset": "POINTS",
        "available": 0,
        "held": 0,
    }
    await assert_books_balance(db)


async def test_points_held_in_a_lot_that_expires_during_the_hold(make_merchant, db, owner):
    """A lot can expire under a live hold: available never goes below zero and capture is refused, not crashed."""
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    expiring = await merchant.api(
        EARN, i={"memberNumber": number, "amount": "100", "orderRef": "E-1", "idempotencyKey": unique("k")}
    )
    await merchant.api(
        EARN, i={"memberNumber": number, "amount": "50", "orderRef": "E-2", "idempotencyKey": unique("k")}
    )
    held = await hold(merchant, number, 120)
    assert held["balance"] == {"asset": "POINTS", "available": 30, "held": 120}
    async with owner.begin() as conn:
        result = await conn.execute(
            text("UPDATE lots SET expires_at = now() - interval '1 second' WHERE transaction_id = :t"),
            {"t": from_global_id(expiring["earnPoints"]["transaction"]["id"])[1]},
        )
        assert result.rowcount == 1

    # DESIGN, ledger rule 2: available never goes below zero; the hold counts for what is left.
    assert await balance(merchant.api, number) == {"available": 0, "held": 50}
    async with db.transaction(OPERATOR) as session:
        assert await verify_ledger(session) == []
    refused = await merchant.api(
        REDEEM, i={"memberNumber": number, "points": 1, "orderRef": "R", "idempotencyKey": unique("k")}
    )
    assert [e["code"] for e in refused["redeemPoints"]["userErrors"]] == ["INSUFFICIENT_POINTS"]

    # Capturing the full hold is answered with a userError (it used to be an internal error) ...
    response = await merchant.api.post(
        CAPTURE, {"i": {"holdId": held["hold"]["id"], "idempotencyKey": unique("k")}}
    )
    body = response.json()
    assert "errors" not in body, response.text
    full = body["data"]["captureHold"]
    assert full["transaction"] is None
    assert [(e["field"], e["code"]) for e in full["userErrors"]] == [("points", "INSUFFICIENT_POINTS")]
    assert await posted(db, number) == 50
    # ... and what is really there can still be captured.
    part = await capture(merchant, held["hold"]["id"], 50)
    assert part["userErrors"] == []
    assert part["transaction"]["points"] == 50
    assert part["balance"] == {"asset": "POINTS", "available": 0, "held": 0}
    await assert_books_balance(db)
