"""Idempotency keys: a retry returns the original answer byte for byte and posts nothing new.

The answer is the response's ``data``; its ``extensions.cost`` (the caller's rate-limit bucket
now) is the one part that rightly differs between the attempts."""

from __future__ import annotations

import asyncio
import json

import httpx
from sqlalchemy import text

from alliance.api.ids import from_global_id
from alliance.db.database import OPERATOR, run_sql
from alliance.tenants.models import TenantCategory
from tests.conftest import random_phone, unique
from tests.ledger.test_worked_example import EARN, REDEEM, enroll

BALANCE = "query($n: String!) { member(memberNumber: $n) { balance { available held } } }"


async def ledger_state(db, number: str) -> tuple[int, int, int]:
    """(transactions, entries, idempotency records answered with a transaction) of one member."""
    async with db.transaction(OPERATOR) as session:
        row = (
            await run_sql(
                session,
                text("""
                SELECT (SELECT count(*) FROM ledger_transactions t WHERE t.member_id = m.id),
                       (SELECT count(*) FROM ledger_entries e WHERE e.member_id = m.id),
                       (SELECT count(*) FROM lots l WHERE l.member_id = m.id)
                FROM members m WHERE m.member_number = :n"""),
                {"n": number},
            )
        ).one()
    return tuple(row)  # type: ignore[return-value]


def answer(response: httpx.Response) -> str:
    """The response's ``data`` as sent: key order and values kept."""
    return json.dumps(response.json()["data"], separators=(",", ":"), ensure_ascii=False)


async def available(api, number: str) -> int:
    return (await api(BALANCE, n=number))["member"]["balance"]["available"]


async def test_same_key_same_input_returns_the_original_byte_for_byte(make_merchant, db):
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    earn = {"memberNumber": number, "amount": "123.45", "orderRef": "E-1", "idempotencyKey": unique("k")}

    first = await merchant.api.post(EARN, {"i": earn})
    assert first.status_code == 200
    body = first.json()
    assert body["data"]["earnPoints"]["userErrors"] == []
    assert body["data"]["earnPoints"]["transaction"]["points"] == 123
    state = await ledger_state(db, number)
    assert state == (1, 2, 1)

    # Something else happens in between: the replay still shows the balance of the original answer.
    other = await merchant.api(
        EARN, i={"memberNumber": number, "amount": "10", "orderRef": "E-2", "idempotencyKey": unique("k")}
    )
    assert other["earnPoints"]["balance"]["available"] == 133

    for _ in range(3):
        again = await merchant.api.post(EARN, {"i": earn})
        assert again.status_code == 200
        assert answer(again) == answer(first)
    # The input's key order does not make it another request.
    reordered = await merchant.api.post(EARN, {"i": dict(reversed(list(earn.items())))})
    assert answer(reordered) == answer(first)
    assert await ledger_state(db, number) == (2, 4, 2)
    assert await available(merchant.api, number) == 133

    redeem = {"memberNumber": number, "points": 33, "orderRef": "R-1", "idempotencyKey": unique("k")}
    first = await merchant.api.post(REDEEM, {"i": redeem})
    assert first.json()["data"]["redeemPoints"]["balance"]["available"] == 100
    again = await merchant.api.post(REDEEM, {"i": redeem})
    assert answer(again) == answer(first)
    assert await ledger_state(db, number) == (3, 6, 2)
    assert await available(merchant.api, number) == 100


async def test_a_failed_attempt_is_remembered(make_merchant, db):
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    await merchant.api(
        EARN, i={"memberNumber": number, "amount": "50", "orderRef": "E-1", "idempotencyKey": unique("k")}
    )
    redeem = {"memberNumber": number, "points": 80, "orderRef": "R-1", "idempotencyKey": unique("k")}

    first = await merchant.api.post(REDEEM, {"i": redeem})
    refused = first.json()["data"]["redeemPoints"]
    assert refused["transaction"] is None
    assert [e["code"] for e in refused["userErrors"]] == ["INSUFFICIENT_POINTS"]

    topped = await merchant.api(
        EARN, i={"memberNumber": number, "amount": "100", "orderRef": "E-2", "idempotencyKey": unique("k")}
    )
    assert topped["earnPoints"]["balance"]["available"] == 150
    state = await ledger_state(db, number)

    retry = await merchant.api.post(REDEEM, {"i": redeem})
    assert answer(retry) == answer(first)
    assert await ledger_state(db, number) == state
    assert await available(merchant.api, number) == 150

    # A new key is a new attempt, and now it succeeds.
    fresh = await merchant.api(REDEEM, i=redeem | {"idempotencyKey": unique("k")})
    assert fresh["redeemPoints"]["userErrors"] == []
    assert fresh["redeemPoints"]["balance"]["available"] == 70


async def test_keys_are_scoped_per_api_client(make_merchant, db):
    a = await make_merchant(TenantCategory.SUPERMARKET)
    b = await make_merchant(TenantCategory.HOTEL)
    phone = random_phone()
    number = await enroll(a, phone)
    assert await enroll(b, phone) == number
    key = unique("shared")

    from_a = await a.api(
        EARN, i={"memberNumber": number, "amount": "100", "orderRef": "A-1", "idempotencyKey": key}
    )
    from_b = await b.api(
        EARN, i={"memberNumber": number, "amount": "40", "orderRef": "B-1", "idempotencyKey": key}
    )
    assert from_a["earnPoints"]["userErrors"] == [] and from_b["earnPoints"]["userErrors"] == []
    assert from_a["earnPoints"]["transaction"]["id"] != from_b["earnPoints"]["transaction"]["id"]
    assert from_b["earnPoints"]["transaction"]["points"] == 40
    assert from_b["earnPoints"]["balance"]["available"] == 140

    # Each client's key still means its own request: different input under it is refused for each.
    for merchant in (a, b):
        reused = await merchant.api(
            REDEEM, i={"memberNumber": number, "points": 1, "orderRef": "X", "idempotencyKey": key}
        )
        assert [e["code"] for e in reused["redeemPoints"]["userErrors"]] == ["IDEMPOTENCY_KEY_REUSED"]
    assert await ledger_state(db, number) == (2, 4, 2)

    # Two clients of the same merchant are two scopes as well.
    from tests.conftest import Api, client_token, new_client

    client_id, secret = await new_client(db, "merchant", a.tenant_id)
    second = Api(a.api.http, await client_token(a.api.http, client_id, secret))
    again = await second(
        EARN, i={"memberNumber": number, "amount": "5", "orderRef": "A-2", "idempotencyKey": key}
    )
    assert again["earnPoints"]["userErrors"] == []
    assert again["earnPoints"]["balance"]["available"] == 145


async def test_concurrent_identical_requests_post_once(make_merchant, db):
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    earn = {"memberNumber": number, "amount": "500", "orderRef": "E-1", "idempotencyKey": unique("k")}

    responses = await asyncio.gather(*(merchant.api.post(EARN, {"i": earn}) for _ in range(20)))
    assert {r.status_code for r in responses} == {200}
    payloads = [r.json()["data"]["earnPoints"] for r in responses]
    assert all(p["userErrors"] == [] for p in payloads), payloads
    assert len({p["transaction"]["id"] for p in payloads}) == 1
    assert len({answer(r) for r in responses}) == 1
    assert await ledger_state(db, number) == (1, 2, 1)
    assert await available(merchant.api, number) == 500

    redeem = {"memberNumber": number, "points": 120, "orderRef": "R-1", "idempotencyKey": unique("k")}
    responses = await asyncio.gather(*(merchant.api.post(REDEEM, {"i": redeem}) for _ in range(20)))
    payloads = [r.json()["data"]["redeemPoints"] for r in responses]
    assert all(p["userErrors"] == [] for p in payloads), payloads
    ids = {p["transaction"]["id"] for p in payloads}
    assert len(ids) == 1
    assert len({answer(r) for r in responses}) == 1
    assert await ledger_state(db, number) == (2, 4, 1)
    assert await available(merchant.api, number) == 380

    # Exactly one redemption row exists, and it is the one every response named.
    async with db.transaction(OPERATOR) as session:
        rows = (
            await run_sql(
                session,
                text("""SELECT t.id FROM ledger_transactions t JOIN members m ON m.id = t.member_id
                        WHERE m.member_number = :n AND t.kind = 'redeem'"""),
                {"n": number},
            )
        ).all()
    assert [r.id for r in rows] == [from_global_id(ids.pop())[1]]


async def test_concurrent_first_attempts_with_different_inputs_under_one_key(make_merchant, db):
    """Racing different requests under one key: one wins, every other gets IDEMPOTENCY_KEY_REUSED."""
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    key = unique("k")
    variants = [
        {"memberNumber": number, "amount": str(10 + i), "orderRef": f"E-{i}", "idempotencyKey": key}
        for i in range(10)
    ]
    responses = await asyncio.gather(*(merchant.api.post(EARN, {"i": v}) for v in variants))
    payloads = [r.json()["data"]["earnPoints"] for r in responses]
    winners = [p for p in payloads if p["userErrors"] == []]
    assert len(winners) == 1, payloads
    losers = [p for p in payloads if p["userErrors"]]
    assert {e["code"] for p in losers for e in p["userErrors"]} == {"IDEMPOTENCY_KEY_REUSED"}
    assert await ledger_state(db, number) == (1, 2, 1)
    assert await available(merchant.api, number) == winners[0]["transaction"]["points"]
