"""Webhook delivery end to end: ledger postings through the API, the outbox written in their
transaction, the worker POSTing signed requests to a real HTTP receiver on loopback."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from alliance.api.ids import from_global_id, to_global_id
from alliance.db.database import OPERATOR, run_sql
from alliance.observability import WEBHOOK_DELIVERIES
from alliance.tenants.models import TenantCategory
from alliance.webhooks import signing
from tests.conftest import random_phone, unique
from tests.ledger.test_bad_input import REVERSE
from tests.ledger.test_worked_example import EARN, REDEEM, enroll
from tests.webhooks import (
    REPLAY,
    Receiver,
    deliveries,
    drain,
    fast,
    outbox_count,
    register,
    run_worker_until,
)


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


async def earn(merchant, number: str, amount: str = "120") -> dict:
    data = await merchant.api(
        EARN,
        i={"memberNumber": number, "amount": amount, "orderRef": unique("o"), "idempotencyKey": unique("k")},
    )
    assert data["earnPoints"]["userErrors"] == [], data
    return data["earnPoints"]["transaction"]


async def test_an_earn_is_delivered_once_signed_with_the_endpoint_secret(
    db, settings, make_merchant, receiver
):
    mart = await make_merchant()
    endpoint_id, secret = await register(mart, receiver.url, "POINTS_EARNED")
    assert secret.startswith("whsec_") and len(secret) > 40
    number = await enroll(mart, random_phone())
    transaction = await earn(mart, number, "120")
    delivered_before = WEBHOOK_DELIVERIES.labels("delivered")._value.get()

    await run_worker_until(db, fast(settings), lambda: len(receiver.requests) >= 1)

    [request] = receiver.requests
    assert signing.verify(secret, request.headers, request.body)
    assert not signing.verify(secret + "x", request.headers, request.body)
    assert not signing.verify(secret, request.headers, request.body + b" ")
    event = request.json
    assert event["id"] == request.event_id == request.headers["Alliance-Webhook-Id"]
    assert event["type"] == "points.earned" and request.headers["Alliance-Webhook-Event"] == "points.earned"
    assert event["tenant"] == mart.code
    assert abs(int(request.headers["Alliance-Webhook-Timestamp"]) - time.time()) < 60
    assert event["data"]["transactionId"] == transaction["id"]
    assert event["data"] | {"effectiveAt": None} == {
        "transactionId": transaction["id"],
        "kind": "earn",
        "memberNumber": number,
        "asset": "POINTS",
        "points": 120,
        "amount": "120.00",
        "currency": "CNY",
        "orderRef": event["data"]["orderRef"],
        "storeCode": None,
        "holdId": None,
        "reversesTransactionId": None,
        "shortfall": 0,
        "effectiveAt": None,
    }

    [delivery] = await deliveries(mart.api)
    assert delivery["status"] == "DELIVERED" and delivery["attempts"] == 1
    assert delivery["eventId"] == event["id"] and delivery["lastStatusCode"] == 200
    assert delivery["endpoint"]["id"] == endpoint_id and delivery["data"] == event["data"]
    assert WEBHOOK_DELIVERIES.labels("delivered")._value.get() >= delivered_before + 1

    # Nothing is due any more: another worker run sends nothing.
    await drain(db, fast(settings))
    assert len(receiver.requests) == 1


async def test_a_500_is_retried_with_the_same_event_id(db, settings, make_merchant, receiver):
    mart = await make_merchant()
    _, secret = await register(mart, receiver.url, "POINTS_EARNED")
    number = await enroll(mart, random_phone())
    receiver.statuses = [500, 503]
    await earn(mart, number)

    await run_worker_until(db, fast(settings), lambda: len(receiver.requests) >= 3)

    first, second, third = receiver.requests
    assert first.event_id == second.event_id == third.event_id
    assert first.body == second.body == third.body, "the body is the same bytes on every attempt"
    assert all(signing.verify(secret, r.headers, r.body) for r in receiver.requests)
    assert [r.headers["Alliance-Webhook-Attempt"] for r in receiver.requests] == ["1", "2", "3"]
    [delivery] = await deliveries(mart.api)
    assert delivery["status"] == "DELIVERED" and delivery["attempts"] == 3
    assert delivery["lastStatusCode"] == 200 and delivery["lastError"] is None


async def test_bounded_attempts_end_in_a_dead_letter_the_merchant_replays(
    db, settings, make_merchant, receiver
):
    mart = await make_merchant()
    _, secret = await register(mart, receiver.url, "POINTS_EARNED")
    number = await enroll(mart, random_phone())
    receiver.statuses = [500] * 3
    await earn(mart, number)
    worker_settings = fast(settings, webhook_max_attempts=3)

    async def dead() -> list[dict]:
        return await deliveries(mart.api, status="DEAD")

    await run_worker_until(db, worker_settings, lambda: len(receiver.requests) >= 3)
    [letter] = await dead()
    assert letter["attempts"] == 3 and letter["deadAt"] is not None and letter["nextAttemptAt"] is None
    assert letter["lastStatusCode"] == 500 and letter["lastError"] == "HTTP 500: receiver says no"
    await drain(db, worker_settings)
    assert len(receiver.requests) == 3, "a dead letter is not attempted again by itself"

    other = await make_merchant()
    hidden = await other.api(REPLAY, i={"deliveryId": letter["id"]})
    assert [e["code"] for e in hidden["replayWebhookDelivery"]["userErrors"]] == ["DELIVERY_NOT_FOUND"]
    replayed = (await mart.api(REPLAY, i={"deliveryId": letter["id"]}))["replayWebhookDelivery"]
    assert replayed["userErrors"] == []
    assert replayed["delivery"] | {"id": None} == {
        "id": None,
        "status": "PENDING",
        "attempts": 0,
        "replays": 1,
        "eventId": letter["eventId"],
    }
    again = (await mart.api(REPLAY, i={"deliveryId": letter["id"]}))["replayWebhookDelivery"]
    assert [e["code"] for e in again["userErrors"]] == ["DELIVERY_PENDING"]

    await run_worker_until(db, worker_settings, lambda: len(receiver.requests) >= 4)
    assert {r.event_id for r in receiver.requests} == {letter["eventId"]}
    assert signing.verify(secret, receiver.requests[-1].headers, receiver.requests[-1].body)
    assert await dead() == []
    [delivered] = await deliveries(mart.api, status="DELIVERED")
    assert delivered["attempts"] == 1 and delivered["replays"] == 1


async def test_refused_and_rolled_back_postings_write_no_event(settings, db, make_merchant, receiver):
    mart = await make_merchant()
    await register(mart, receiver.url, "POINTS_EARNED", "POINTS_REDEEMED")
    number = await enroll(mart, random_phone())
    await earn(mart, number, "50")
    assert await outbox_count(db, mart.tenant_id) == 1

    refused = await mart.api(
        REDEEM, i={"memberNumber": number, "points": 51, "orderRef": "r", "idempotencyKey": unique("k")}
    )
    assert [e["code"] for e in refused["redeemPoints"]["userErrors"]] == ["INSUFFICIENT_POINTS"]
    assert await outbox_count(db, mart.tenant_id) == 1

    # A posting whose transaction rolls back (here: the caller's) leaves no event behind.
    async with db.engine.connect() as connection:
        transaction = await connection.begin()
        posted = await connection.execute(
            text(
                "SELECT ledger_redeem('rollback-test', :key, 'h', :tenant, :number, 'POINTS', 10, 'r2', NULL)"
            ),
            {"key": unique("k"), "tenant": mart.tenant_id, "number": number},
        )
        assert posted.scalar_one()["userErrors"] == []
        await transaction.rollback()
    assert await outbox_count(db, mart.tenant_id) == 1

    redeemed = await mart.api(
        REDEEM, i={"memberNumber": number, "points": 10, "orderRef": "r3", "idempotencyKey": unique("k")}
    )
    assert redeemed["redeemPoints"]["userErrors"] == []
    assert await outbox_count(db, mart.tenant_id) == 2


async def test_each_merchant_gets_its_own_events_of_the_types_it_chose(db, settings, make_merchant, receiver):
    supermarket = await make_merchant(TenantCategory.SUPERMARKET)
    hotel = await make_merchant(TenantCategory.HOTEL)
    bystander = await make_merchant(TenantCategory.RETAIL)
    await register(supermarket, receiver.url, "POINTS_EARNED", "POINTS_REVERSED")
    await register(hotel, receiver.url, "POINTS_REDEEMED")
    await register(bystander, receiver.url)  # everything, but nothing happens at its shop
    phone = random_phone()
    number = await enroll(supermarket, phone)
    await enroll(hotel, phone)
    await enroll(bystander, phone)

    earned = await earn(supermarket, number, "300")
    redeemed = await hotel.api(
        REDEEM, i={"memberNumber": number, "points": 100, "orderRef": "H-1", "idempotencyKey": unique("k")}
    )
    assert redeemed["redeemPoints"]["userErrors"] == []
    reversed_ = await supermarket.api(
        REVERSE,
        i={"transactionId": earned["id"], "points": 50, "reason": "return", "idempotencyKey": unique("k")},
    )
    assert reversed_["reverseTransaction"]["userErrors"] == []
    # The hotel earns too, but subscribed to redemptions only: no event for that.
    await earn(hotel, number, "10")

    await run_worker_until(db, fast(settings), lambda: len(receiver.requests) >= 3)
    await drain(db, fast(settings))
    by_tenant = sorted((r.json["tenant"], r.json["type"]) for r in receiver.requests)
    assert by_tenant == sorted(
        [
            (supermarket.code, "points.earned"),
            (supermarket.code, "points.reversed"),
            (hotel.code, "points.redeemed"),
        ]
    )
    [redemption] = receiver.of("points.redeemed")
    assert redemption.json["data"]["transactionId"] == redeemed["redeemPoints"]["transaction"]["id"]
    assert redemption.json["data"]["points"] == 100 and redemption.json["data"]["memberNumber"] == number
    [reversal] = receiver.of("points.reversed")
    assert reversal.json["data"]["reversesTransactionId"] == earned["id"]
    assert reversal.json["data"]["points"] == 50
    assert await outbox_count(db, bystander.tenant_id) == 0

    # Row-level security: a merchant sees only its own deliveries.
    assert {d["eventType"] for d in await deliveries(hotel.api)} == {"POINTS_REDEEMED"}
    assert await deliveries(bystander.api) == []


async def test_a_batch_earn_writes_one_event_per_posting(db, settings, make_merchant):
    mart = await make_merchant()
    await register(mart, "http://127.0.0.1:9/unused", "POINTS_EARNED")
    numbers = [await enroll(mart, random_phone()) for _ in range(3)]
    batch = """mutation($i: EarnPointsBatchInput!) { earnPointsBatch(input: $i) {
      results { index transaction { id } userErrors { code } } userErrors { code } } }"""
    items = [{"memberNumber": n, "amount": "10", "orderRef": unique("b")} for n in numbers]
    items.append({"memberNumber": "8999999999", "amount": "10", "orderRef": unique("b")})  # refused alone
    data = await mart.api(batch, i={"items": items, "idempotencyKey": unique("k")})
    results = data["earnPointsBatch"]["results"]
    posted = {r["transaction"]["id"] for r in results if r["transaction"]}
    assert len(posted) == 3 and results[3]["userErrors"] == [{"code": "MEMBER_NOT_FOUND"}]
    async with db.transaction(OPERATOR) as session:
        rows = (
            await run_sql(
                session,
                text("SELECT event_type, data FROM webhook_events WHERE tenant_id = :t"),
                {"t": mart.tenant_id},
            )
        ).all()
    assert {row.data["transactionId"] for row in rows} == posted
    assert {row.data["memberNumber"] for row in rows} == set(numbers)
    assert {row.event_type for row in rows} == {"points.earned"}


async def test_global_ids_in_payloads_match_the_api(db):
    async with db.transaction(OPERATOR) as session:
        for type_name, pk in (("LedgerTransaction", 1), ("Hold", 123456789), ("SettlementBatch", 2**40)):
            found = await run_sql(
                session, text("SELECT webhook_global_id(:t, :p)"), {"t": type_name, "p": pk}
            )
            assert found.scalar_one() == to_global_id(type_name, pk)
            assert from_global_id(to_global_id(type_name, pk)) == (type_name, pk)
