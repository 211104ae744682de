"""Events nothing writes when they happen (points about to expire, holds that lapse) come from the
worker's sweep, exactly once; settlement events come from the approval and dispute themselves."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text

from alliance.db.database import OPERATOR, run_sql
from alliance.tenants.models import TenantCategory
from alliance.webhooks.worker import Worker, http_client
from tests.catalog import earn as award
from tests.catalog import pk
from tests.conftest import random_phone, unique
from tests.ledger.test_bad_input import HOLD
from tests.ledger.test_worked_example import REDEEM, enroll
from tests.settlement.test_expiry_and_periods import owner_sql
from tests.settlement.test_worked_example import RUN, TERMS, backdate_member_transactions
from tests.webhooks import Receiver, fast, register, run_worker_until
from tests.webhooks.test_delivery import earn


async def sweep(db, settings) -> None:
    async with http_client(settings) as client:
        await Worker(db, settings, client).sweep()


async def events_of(db, tenant_id: int, event_type: str) -> list[dict]:
    async with db.transaction(OPERATOR) as session:
        rows = await run_sql(
            session,
            text(
                "SELECT data FROM webhook_events WHERE tenant_id = :t AND event_type = :e ORDER BY created_at"
            ),
            {"t": tenant_id, "e": event_type},
        )
        return [row.data for row in rows]


async def test_points_about_to_expire_are_announced_once_to_their_issuer(settings, db, make_merchant):
    mart = await make_merchant(TenantCategory.SUPERMARKET)
    shop = await make_merchant(TenantCategory.AUTO_SERVICE)
    await register(mart, "http://127.0.0.1:9/m", "POINTS_EXPIRING")
    phone = random_phone()
    number = await enroll(mart, phone)
    await enroll(shop, phone)
    await earn(mart, number, "100")
    await earn(mart, number, "20")
    await earn(shop, number, "30")  # the shop has no endpoint (yet)
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    await owner_sql(
        settings,
        "UPDATE lots SET expires_at = :at WHERE member_id = (SELECT id FROM members WHERE member_number = :n)",
        at=soon,
        n=number,
    )

    await sweep(db, fast(settings))
    await sweep(db, fast(settings))
    [announced] = await events_of(db, mart.tenant_id, "points.expiring")
    assert announced == {
        "memberNumber": number,
        "asset": "POINTS",
        "points": 120,  # both of the supermarket's lots, which expire together
        "expiresAt": soon.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
    }

    # The shop's lot was not marked while it had no subscription: it is announced once it has one.
    await register(shop, "http://127.0.0.1:9/s", "POINTS_EXPIRING")
    await sweep(db, fast(settings))
    await sweep(db, fast(settings))
    assert [e["points"] for e in await events_of(db, shop.tenant_id, "points.expiring")] == [30]
    assert len(await events_of(db, mart.tenant_id, "points.expiring")) == 1


async def test_a_lapsed_hold_is_announced_once_to_its_merchant(settings, db, make_merchant):
    hotel = await make_merchant(TenantCategory.HOTEL)
    await register(hotel, "http://127.0.0.1:9/h", "HOLD_EXPIRED")
    number = await enroll(hotel, random_phone())
    await earn(hotel, number, "500")
    holds = []
    for room in ("R-101", "R-102", "R-103"):
        held = await hotel.api(
            HOLD, i={"memberNumber": number, "points": 100, "orderRef": room, "idempotencyKey": unique("k")}
        )
        assert held["holdPoints"]["userErrors"] == [], held
        holds.append(held["holdPoints"]["hold"]["id"])
    lapsed, long_ago, _live = holds
    await owner_sql(
        settings, "UPDATE holds SET expires_at = now() - interval '1 minute' WHERE id = :h", h=pk(lapsed)
    )
    await owner_sql(
        settings, "UPDATE holds SET expires_at = now() - interval '8 days' WHERE id = :h", h=pk(long_ago)
    )

    await sweep(db, fast(settings))
    await sweep(db, fast(settings))
    [announced] = await events_of(db, hotel.tenant_id, "hold.expired")
    assert announced | {"expiresAt": None} == {
        "holdId": lapsed,
        "memberNumber": number,
        "asset": "POINTS",
        "points": 100,
        "orderRef": "R-101",
        "expiresAt": None,
    }


async def private_asset(settings) -> str:
    """An asset of this test's own, so its settlement period and terms touch no other test."""
    code = "WH" + secrets.token_hex(4).upper()
    await owner_sql(
        settings,
        "INSERT INTO assets (code, name, settlement_value, expiry_policy, policy_description)"
        " VALUES (:c, 'webhook test points', 0.01, 'never', 'never expire')",
        c=code,
    )
    return code


async def test_settlement_ready_and_disputed_reach_both_parties(settings, db, operator, make_merchant):
    receiver = Receiver().start()
    try:
        issuer = await make_merchant(TenantCategory.SUPERMARKET)
        redeemer = await make_merchant(TenantCategory.HOTEL)
        outsider = await make_merchant(TenantCategory.RETAIL)
        for merchant in (issuer, redeemer, outsider):
            await register(merchant, receiver.url, "SETTLEMENT_READY", "SETTLEMENT_DISPUTED")
        asset = await private_asset(settings)
        phone = random_phone()
        number = await enroll(issuer, phone)
        await enroll(redeemer, phone)
        await award(issuer, number, 300, asset)
        redeemed = await redeemer.api(
            REDEEM,
            i={
                "memberNumber": number,
                "points": 200,
                "orderRef": "B",
                "asset": asset,
                "idempotencyKey": unique("k"),
            },
        )
        assert redeemed["redeemPoints"]["userErrors"] == []
        month = date(2024, 3, 1)
        await backdate_member_transactions(settings, number, datetime(2024, 3, 15, 4, tzinfo=UTC))
        terms = await operator(
            TERMS,
            i={
                "asset": asset,
                "settlementValue": "0.01",
                "feeBps": 0,
                "effectiveFrom": "2024-02-01T00:00:00Z",
            },
        )
        assert terms["setSettlementTerms"]["userErrors"] == []
        batch = (await operator(RUN, i={"asset": asset, "periodStart": month.isoformat()}))["runSettlement"][
            "batch"
        ]
        assert await events_of(db, issuer.tenant_id, "settlement.ready") == [], "a draft is not ready"
        approve = "mutation($id: ID!) { approveSettlement(input: {batchId: $id}) { batch { status } userErrors { code } } }"
        approved = (await operator(approve, id=batch["id"]))["approveSettlement"]
        assert approved["userErrors"] == [], approved

        dispute = """mutation($i: DisputeSettlementLineInput!) { disputeSettlementLine(input: $i) {
          dispute { id } userErrors { code } } }"""
        line = {
            "batchId": batch["id"],
            "issuerCode": issuer.code,
            "redeemerCode": redeemer.code,
            "reason": "2 not 200",
        }
        raised = (await redeemer.api(dispute, i=line))["disputeSettlementLine"]["dispute"]

        await run_worker_until(db, fast(settings), lambda: len(receiver.requests) >= 4)
    finally:
        receiver.stop()

    ready = {r.json["tenant"]: r.json["data"] for r in receiver.of("settlement.ready")}
    common = {"batchId": batch["id"], "asset": asset, "model": "PROVENANCE_NETTING", "currency": "CNY"}
    assert ready[issuer.code] | {"periodStart": None, "periodEnd": None} == common | {
        "netAmount": "-2.00",
        "direction": "PAY",
        "periodStart": None,
        "periodEnd": None,
    }
    assert ready[redeemer.code]["netAmount"] == "2.00" and ready[redeemer.code]["direction"] == "RECEIVE"
    assert set(ready) == {issuer.code, redeemer.code}
    disputed = {r.json["tenant"]: r.json["data"] for r in receiver.of("settlement.disputed")}
    assert set(disputed) == {issuer.code, redeemer.code}
    assert disputed[issuer.code] == {
        "disputeId": raised["id"],
        "batchId": batch["id"],
        "issuerCode": issuer.code,
        "redeemerCode": redeemer.code,
        "raisedByCode": redeemer.code,
        "reason": "2 not 200",
    }
