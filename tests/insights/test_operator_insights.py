"""The operator's insights: flows equal to settlement, liability with expected breakage, merchant
health, and the summaries are the operator's alone.

Each test posts on an asset of its own, so alliance-wide figures (shares, the fallback breakage
rate, latency) are those of the test's own postings, whatever else the suite posted.
"""

import secrets
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from alliance.db.database import OPERATOR, AccessContext, run_sql
from alliance.insights.operator import liability, refresh_operator_insights
from alliance.insights.refresh import fold_horizon, refresh
from alliance.settlement.service import expire_lots
from alliance.tenants.models import TenantCategory
from tests.conftest import random_phone, unique
from tests.ledger.test_worked_example import EARN, REDEEM, enroll
from tests.settlement.test_expiry_and_periods import owner_sql
from tests.settlement.test_worked_example import RUN, TERMS, backdate_member_transactions

REVERSE = """mutation($i: ReverseTransactionInput!) { reverseTransaction(input: $i) {
  userErrors { code message } } }"""
DISPUTE = """mutation($i: DisputeSettlementLineInput!) { disputeSettlementLine(input: $i) {
  userErrors { code } } }"""
TOTALS = """query($f: Date, $t: Date, $a: String!, $p: FlowPeriod!, $g: FlowGrouping!) {
  pointFlowTotals(from: $f, to: $t, asset: $a, period: $p, groupBy: $g) {
    periodStart partyCode category issued redeemed crossRedeemed redeemedElsewhere breakage } }"""
PAIRS = """query($f: Date, $t: Date, $a: String!, $g: FlowGrouping!, $own: Boolean!) {
  pointFlowPairs(from: $f, to: $t, asset: $a, groupBy: $g, includeOwn: $own) {
    periodStart issuerCode issuerCategory redeemerCode redeemerCategory points } }"""
PAIRS_OF = """query($f: Date, $t: Date, $a: String!, $tenant: String!) {
  pointFlowPairs(from: $f, to: $t, asset: $a, tenantCode: $tenant) { issuerCode redeemerCode points } }"""
HEALTH = """query($f: Date, $t: Date, $a: String!) { merchantHealth(from: $f, to: $t, asset: $a) {
  tenantCode category issued redeemed redemptionRatio issuedShare redeemedShare settlementLines disputes
  disputeRate latencyAsIssuer { medianDays p90Days points } latencyAsRedeemer { medianDays p90Days points } } }"""
LIABILITY = """query($a: String!) { pointsLiability(asset: $a) {
  asset currency settlementValue outstanding { points value } expectedBreakage { points value }
  allianceBreakageRate
  byIssuer { issuerCode category outstanding { points value } lots breakageRate rateBasis
             expectedBreakage { points value } }
  byExpiryMonth { month outstanding { points value } expectedBreakage { points value } } } }"""
BATCH_LINES = """query($id: ID!) { settlementBatch(id: $id) { linePoints crossRedeemedPoints reversedPoints
  lines(first: 50) { edges { node { issuerCode redeemerCode points } } } } }"""
BREAKAGE = """query($f: Date!, $t: Date!, $a: String!) { breakage(from: $f, to: $t, asset: $a) {
  issuerCode points } }"""

ZONE = ZoneInfo("Asia/Shanghai")


async def refresh_operator(db):
    """Fold everything posted so far (the tests post nothing concurrently: no lag needed)."""
    lagless = db.settings.model_copy(update={"insights_refresh_lag_seconds": 0})
    async with db.transaction(OPERATOR) as session:
        upto = await fold_horizon(session, lagless, datetime.now(UTC))
    return await refresh_operator_insights(db, upto)


async def private_asset(settings, expiry: str = "months_after_issue", months: int | None = 12) -> str:
    asset = "OPI" + secrets.token_hex(3).upper()
    await owner_sql(
        settings,
        "INSERT INTO assets (code, name, settlement_value, expiry_policy, expiry_months, policy_description)"
        " VALUES (:a, 'Operator insight test points', 0.01, :p, :m, 'test')",
        a=asset,
        p=expiry,
        m=months,
    )
    return asset


async def earn(merchant, number: str, points: int, asset: str) -> str:
    """Earn ``points`` (one per yuan); returns the order ref, which names the earn's lot."""
    order_ref = unique("o")
    data = await merchant.api(
        EARN,
        i={
            "memberNumber": number,
            "amount": str(points),
            "orderRef": order_ref,
            "asset": asset,
            "idempotencyKey": unique("k"),
        },
    )
    assert data["earnPoints"]["userErrors"] == [], data
    assert data["earnPoints"]["transaction"]["points"] == points
    return order_ref


async def redeem(merchant, number: str, points: int, asset: str) -> str:
    data = await merchant.api(
        REDEEM,
        i={
            "memberNumber": number,
            "points": points,
            "orderRef": unique("r"),
            "asset": asset,
            "idempotencyKey": unique("k"),
        },
    )
    assert data["redeemPoints"]["userErrors"] == [], data
    return data["redeemPoints"]["transaction"]["id"]


LOT_OF = (
    "(SELECT id FROM lots WHERE transaction_id = (SELECT id FROM ledger_transactions WHERE order_ref = :o))"
)


async def set_lot(settings, order_ref: str, column: str, value: datetime) -> None:
    await owner_sql(settings, f"UPDATE lots SET {column} = :v WHERE id = {LOT_OF}", o=order_ref, v=value)


async def expire_now(settings, db, order_ref: str) -> None:
    """Make one earn's lot expired and run the expiry (every expired lot, as the CronJob would)."""
    await owner_sql(
        settings, f"UPDATE lots SET expires_at = now() - interval '1 second' WHERE id = {LOT_OF}", o=order_ref
    )
    async with db.transaction(OPERATOR) as session:
        while (await expire_lots(session, unique("run"), 100_000)).members:
            pass


async def test_flows_are_the_numbers_of_settlement_and_breakage(settings, db, operator, make_merchant):
    asset = await private_asset(settings)
    terms = await operator(
        TERMS,
        i={
            "asset": asset,
            "settlementValue": "0.01",
            "feeBps": 0,
            "effectiveFrom": "2000-01-01T00:00:00+00:00",
        },
    )
    assert terms["setSettlementTerms"]["userErrors"] == []
    supermarket = await make_merchant(TenantCategory.SUPERMARKET)
    hotel = await make_merchant(TenantCategory.HOTEL)
    phone = random_phone()
    number = await enroll(supermarket, phone)
    await enroll(hotel, phone)

    await earn(supermarket, number, 300, asset)
    hotel_earn_ref = await earn(hotel, number, 200, asset)
    # The hotel takes 450: the supermarket's lot first (it expires first), then 150 of its own.
    stay = await redeem(hotel, number, 450, asset)
    # The supermarket takes 40 of the hotel's points.
    await redeem(supermarket, number, 40, asset)
    # The hotel refunds 200 of the stay: its own 150 back first (last consumed), then 50 of the
    # supermarket's.
    refund = await hotel.api(
        REVERSE, i={"transactionId": stay, "reason": "refund", "points": 200, "idempotencyKey": unique("k")}
    )
    assert refund["reverseTransaction"]["userErrors"] == []
    # The hotel's lot (200 - 150 - 40 + 150 = 160 left) expires: breakage of the hotel's.
    await expire_now(settings, db, hotel_earn_ref)

    month = date(2021, 3, 1)
    await backdate_member_transactions(settings, number, datetime(2021, 3, 14, 4, tzinfo=UTC))
    await refresh_operator(db)

    span = {"f": "2021-03-01", "t": "2021-04-01", "a": asset}
    batch = (await operator(RUN, i={"asset": asset, "periodStart": month.isoformat()}))["runSettlement"]
    assert batch["userErrors"] == []
    settled = (await operator(BATCH_LINES, id=batch["batch"]["id"]))["settlementBatch"]
    lines = {
        (e["node"]["issuerCode"], e["node"]["redeemerCode"]): e["node"]["points"]
        for e in settled["lines"]["edges"]
    }
    assert lines == {(supermarket.code, hotel.code): 250, (hotel.code, supermarket.code): 40}
    assert (settled["linePoints"], settled["crossRedeemedPoints"], settled["reversedPoints"]) == (
        290,
        340,
        50,
    )

    pairs = (await operator(PAIRS, **span, g="MERCHANT", own=False))["pointFlowPairs"]
    assert {(p["issuerCode"], p["redeemerCode"]): p["points"] for p in pairs} == lines
    assert {p["periodStart"] for p in pairs} == {"2021-03-01"}
    year = {"f": "2020-06-01", "t": "2021-06-01", "a": asset}
    one = await operator(PAIRS_OF, **year, tenant=supermarket.code)
    assert [(p["issuerCode"], p["redeemerCode"], p["points"]) for p in one["pointFlowPairs"]] == [
        (hotel.code, supermarket.code, 40),
        (supermarket.code, hotel.code, 250),
    ]
    errors = await operator.errors(PAIRS, **year, g="MERCHANT", own=False)
    assert errors[0]["extensions"]["code"] == "INVALID_PERIOD", (
        "every merchant's pairs: three periods at most"
    )
    assert (await operator(PAIRS, **year, g="CATEGORY", own=False))["pointFlowPairs"]
    own = (await operator(PAIRS, **span, g="MERCHANT", own=True))["pointFlowPairs"]
    assert own == pairs, "the hotel's own 150 came back: nothing redeemed where issued, net"
    by_category = (await operator(PAIRS, **span, g="CATEGORY", own=False))["pointFlowPairs"]
    assert [
        (p["issuerCategory"], p["redeemerCategory"], p["points"], p["issuerCode"]) for p in by_category
    ] == [
        ("HOTEL", "SUPERMARKET", 40, None),
        ("SUPERMARKET", "HOTEL", 250, None),
    ]

    totals = (await operator(TOTALS, **span, p="MONTH", g="MERCHANT"))["pointFlowTotals"]
    assert {
        t["partyCode"]: (
            t["issued"],
            t["redeemed"],
            t["crossRedeemed"],
            t["redeemedElsewhere"],
            t["breakage"],
        )
        for t in totals
    } == {
        supermarket.code: (300, 40, 40, 250, 0),
        hotel.code: (200, 250, 250, 40, 160),
    }
    # Receivables and payables balance: Σ cross-redeemed = Σ redeemed elsewhere = the batch's lines.
    assert sum(t["crossRedeemed"] for t in totals) == sum(t["redeemedElsewhere"] for t in totals) == 290
    breakage = (await operator(BREAKAGE, **span))["breakage"]
    assert {b["issuerCode"]: b["points"] for b in breakage} == {
        t["partyCode"]: t["breakage"] for t in totals if t["breakage"]
    }
    days = (await operator(TOTALS, **span, p="DAY", g="CATEGORY"))["pointFlowTotals"]
    assert {(d["periodStart"], d["partyCode"], d["category"], d["issued"]) for d in days} == {
        ("2021-03-14", None, "SUPERMARKET", 300),
        ("2021-03-14", None, "HOTEL", 200),
    }
    assert (
        await operator(TOTALS, **{**span, "f": "2021-04-01", "t": "2021-05-01"}, p="MONTH", g="MERCHANT")
    )["pointFlowTotals"] == []

    # Merchant health over the month: the supermarket disputes its receivable line.
    disputed = await supermarket.api(
        DISPUTE,
        i={
            "batchId": batch["batch"]["id"],
            "issuerCode": hotel.code,
            "redeemerCode": supermarket.code,
            "reason": "x",
        },
    )
    assert disputed["disputeSettlementLine"]["userErrors"] == []
    health = {h["tenantCode"]: h for h in (await operator(HEALTH, **span))["merchantHealth"]}
    assert set(health) == {supermarket.code, hotel.code}
    assert health[supermarket.code] | {"latencyAsIssuer": None, "latencyAsRedeemer": None} == {
        "tenantCode": supermarket.code,
        "category": "SUPERMARKET",
        "issued": 300,
        "redeemed": 40,
        "redemptionRatio": "0.1333",
        "issuedShare": "0.6000",
        "redeemedShare": "0.1379",
        "settlementLines": 2,
        "disputes": 1,
        "disputeRate": "0.5000",
        "latencyAsIssuer": None,
        "latencyAsRedeemer": None,
    }
    assert (health[hotel.code]["redemptionRatio"], health[hotel.code]["issuedShare"]) == ("1.2500", "0.4000")
    assert (health[hotel.code]["redeemedShare"], health[hotel.code]["disputeRate"]) == ("0.8621", "0.5000")


async def test_liability_by_issuer_and_expiry_month_with_expected_breakage(
    settings, db, operator, make_merchant
):
    asset = await private_asset(settings)
    shop, cafe = await make_merchant(TenantCategory.SUPERMARKET), await make_merchant(TenantCategory.HOTEL)
    shopper = await enroll(shop, random_phone())
    guest = await enroll(cafe, random_phone())
    # History (this year): of the shop's 1000 points, 600 were redeemed and 400 expired; the
    # cafe's 100 were all redeemed. Alliance-wide: 400 expired of 1100 that ended.
    first = await earn(shop, shopper, 1000, asset)
    await redeem(shop, shopper, 600, asset)
    await expire_now(settings, db, first)
    await earn(cafe, guest, 100, asset)
    await redeem(cafe, guest, 100, asset)
    # Outstanding: the shop's 500 last usable on the 10th of month m1 and 250 in m2; the cafe's 300 in m1.
    today = datetime.now(ZONE).date()
    m1, m2 = (
        date(today.year + (today.month + k - 1) // 12, (today.month + k - 1) % 12 + 1, 1) for k in (2, 5)
    )
    for merchant, member, points, month in (
        (shop, shopper, 500, m1),
        (shop, shopper, 250, m2),
        (cafe, guest, 300, m1),
    ):
        ref = await earn(merchant, member, points, asset)
        await set_lot(settings, ref, "expires_at", datetime(month.year, month.month, 11, tzinfo=ZONE))
    await refresh_operator(db)

    # With a history threshold of 1000 points the shop has a rate of its own (400 / 1000); the
    # cafe (100 points of history) gets the alliance's (400 / 1100). Each cell rounds to points:
    # shop 500 x 0.4 = 200 and 250 x 0.4 = 100; cafe 300 x 400 / 1100 = 109.09 -> 109.
    async with db.transaction(OPERATOR) as session:
        report = await liability(session, asset, settings.time_zone, min_history=1000)
    assert (report.outstanding.points, report.outstanding.value) == (1050, Decimal("10.50"))
    assert (report.expected_breakage.points, report.expected_breakage.value) == (409, Decimal("4.09"))
    assert report.alliance_breakage_rate == Decimal("0.3636")
    assert [
        (
            i.issuer_code,
            i.outstanding.points,
            i.lots,
            i.breakage_rate,
            i.rate_basis,
            i.expected_breakage.points,
            i.expected_breakage.value,
        )
        for i in report.by_issuer
    ] == sorted(
        [
            (shop.code, 750, 2, Decimal("0.4000"), "issuer", 300, Decimal("3.00")),
            (cafe.code, 300, 1, Decimal("0.3636"), "alliance", 109, Decimal("1.09")),
        ]
    )
    assert [
        (m.month, m.outstanding.points, m.outstanding.value, m.expected_breakage.points)
        for m in report.by_expiry_month
    ] == [
        (m1, 800, Decimal("8.00"), 309),
        (m2, 250, Decimal("2.50"), 100),
    ]

    # Through the API, with the default threshold (10000 points) both use the alliance's rate:
    # 500 -> 181.8 -> 182, 250 -> 90.9 -> 91, 300 -> 109.
    data = (await operator(LIABILITY, a=asset))["pointsLiability"]
    assert (data["currency"], data["settlementValue"], data["allianceBreakageRate"]) == (
        "CNY",
        "0.010000",
        "0.3636",
    )
    assert data["outstanding"] == {"points": 1050, "value": "10.50"}
    assert data["expectedBreakage"] == {"points": 382, "value": "3.82"}
    assert {
        i["issuerCode"]: (i["category"], i["rateBasis"], i["expectedBreakage"]["points"])
        for i in data["byIssuer"]
    } == {
        shop.code: ("SUPERMARKET", "ALLIANCE", 273),
        cafe.code: ("HOTEL", "ALLIANCE", 109),
    }
    assert [(m["month"], m["expectedBreakage"]["points"]) for m in data["byExpiryMonth"]] == [
        (m1.isoformat(), 291),
        (m2.isoformat(), 91),
    ]


async def test_redemption_latency_is_weighted_by_points_and_net_of_refunds(
    settings, db, operator, make_merchant
):
    asset = await private_asset(settings)
    shop, hotel = await make_merchant(TenantCategory.SUPERMARKET), await make_merchant(TenantCategory.HOTEL)
    phone = random_phone()
    number = await enroll(shop, phone)
    await enroll(hotel, phone)
    now = datetime.now(UTC)
    for points, age in ((100, 40), (100, 20), (150, 5)):  # consumed in this order (soonest expiry first)
        ref = await earn(shop, number, points, asset)
        await set_lot(settings, ref, "issued_at", now - timedelta(days=age, hours=1))
    await refresh_operator(db)
    stay = await redeem(hotel, number, 350, asset)
    await refresh_operator(db)  # folds only the redemption

    span = {
        "f": (now - timedelta(days=60)).date().isoformat(),
        "t": (now + timedelta(days=2)).date().isoformat(),
        "a": asset,
    }

    async def latency() -> dict[str, tuple]:
        health = (await operator(HEALTH, **span))["merchantHealth"]
        return {h["tenantCode"]: (h["latencyAsIssuer"], h["latencyAsRedeemer"]) for h in health}

    # 150 points after 5 days, 100 after 20, 100 after 40: half of 350 is reached at 20 days,
    # nine tenths (315) at 40.
    expected = {"medianDays": 20, "p90Days": 40, "points": 350}
    none = {"medianDays": None, "p90Days": None, "points": 0}
    assert await latency() == {shop.code: (expected, none), hotel.code: (none, expected)}

    # Refunding 150 gives back the 5-day points (last consumed, first restored).
    refund = await hotel.api(
        REVERSE, i={"transactionId": stay, "reason": "refund", "points": 150, "idempotencyKey": unique("k")}
    )
    assert refund["reverseTransaction"]["userErrors"] == []
    await refresh_operator(db)
    expected = {"medianDays": 20, "p90Days": 40, "points": 200}
    assert await latency() == {shop.code: (expected, none), hotel.code: (none, expected)}

    # The incremental summaries equal a recomputation of this asset from the first transaction.
    await owner_sql(
        settings,
        """DO $$ BEGIN
          IF EXISTS ((SELECT asset, tenant_id, side, days, points FROM insight_redemption_latency WHERE asset = '{a}' AND points <> 0
                      EXCEPT SELECT * FROM insight_latency_delta(0, (SELECT last_transaction_id FROM insight_refresh_state))
                      WHERE asset = '{a}')
                     UNION ALL
                     (SELECT * FROM insight_latency_delta(0, (SELECT last_transaction_id FROM insight_refresh_state))
                      WHERE asset = '{a}' EXCEPT SELECT asset, tenant_id, side, days, points FROM insight_redemption_latency)) THEN
            RAISE EXCEPTION 'latency summary differs from a recomputation';
          END IF;
          -- Every grain equals the recomputation rolled up to it.
          IF EXISTS (WITH fresh AS (
                       SELECT d.asset, g.grain, date_trunc(g.grain, d.day::timestamp)::date AS bucket,
                         d.issuer_tenant_id, d.redeemer_tenant_id, sum(d.issued) AS issued,
                         sum(d.clawed_back) AS clawed_back, sum(d.consumed) AS consumed,
                         sum(d.restored) AS restored, sum(d.expired) AS expired
                       FROM insight_flow_delta(0, (SELECT last_transaction_id FROM insight_refresh_state),
                                               'Asia/Shanghai') d
                       CROSS JOIN (VALUES ('day'), ('week'), ('month')) g(grain)
                       WHERE d.asset = '{a}' GROUP BY 1, 2, 3, 4, 5),
                     stored AS (SELECT * FROM insight_point_flows WHERE asset = '{a}')
                     (SELECT * FROM stored EXCEPT SELECT * FROM fresh)
                     UNION ALL (SELECT * FROM fresh EXCEPT SELECT * FROM stored)) THEN
            RAISE EXCEPTION 'flow summary differs from a recomputation';
          END IF;
          -- Each party's row equals its pairs' (the same delta folded twice).
          IF EXISTS (WITH pairs AS (SELECT * FROM insight_point_flows WHERE asset = '{a}'),
                     derived AS (
                       SELECT asset, grain, bucket, party, sum(issued) AS issued, sum(redeemed) AS redeemed,
                         sum(cross_redeemed) AS cross_redeemed, sum(redeemed_elsewhere) AS redeemed_elsewhere,
                         sum(issued_redeemed) AS issued_redeemed, sum(breakage) AS breakage
                       FROM (SELECT asset, grain, bucket, issuer_tenant_id AS party, issued - clawed_back AS issued,
                               0 AS redeemed, 0 AS cross_redeemed,
                               CASE WHEN redeemer_tenant_id <> issuer_tenant_id THEN consumed - restored ELSE 0 END
                                 AS redeemed_elsewhere,
                               consumed - restored AS issued_redeemed, expired AS breakage FROM pairs
                             UNION ALL
                             SELECT asset, grain, bucket, redeemer_tenant_id, 0, consumed - restored,
                               CASE WHEN issuer_tenant_id <> redeemer_tenant_id THEN consumed - restored ELSE 0 END,
                               0, 0, 0 FROM pairs WHERE redeemer_tenant_id IS NOT NULL) x
                       GROUP BY 1, 2, 3, 4),
                     stored AS (SELECT * FROM insight_party_flows WHERE asset = '{a}')
                     (SELECT * FROM stored EXCEPT SELECT * FROM derived)
                     UNION ALL (SELECT * FROM derived EXCEPT SELECT * FROM stored)) THEN
            RAISE EXCEPTION 'party summary differs from its pairs';
          END IF;
        END $$""".replace("{a}", asset),
    )


QUERIES = {
    "pointFlowTotals": "{ pointFlowTotals { issued } days: pointFlowTotals(period: DAY) { issued } }",
    "pointFlowPairs": "{ pointFlowPairs(period: WEEK, groupBy: CATEGORY) { points } }",
    "pointsLiability": "{ pointsLiability { outstanding { points } } }",
    "merchantHealth": "{ merchantHealth { tenantCode } }",
}


async def test_the_summaries_are_the_operators_alone(settings, db, operator, make_merchant):
    asset = await private_asset(settings)
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    await earn(merchant, number, 120, asset)
    await redeem(merchant, number, 20, asset)
    await refresh_operator(db)

    for field, query in QUERIES.items():
        errors = await merchant.api.errors(query)
        assert errors[0]["extensions"]["code"] == "FORBIDDEN", field
        assert (await operator(query))[field] is not None
    # Not even its own figures: the arguments cannot widen what a merchant's token may ask.
    errors = await merchant.api.errors(HEALTH, f="2020-01-01", t="2030-01-01", a=asset)
    assert errors[0]["extensions"]["code"] == "FORBIDDEN"

    tables = (
        "insight_point_flows",
        "insight_party_flows",
        "insight_liability",
        "insight_redemption_latency",
        "insight_latency_percentiles",
        "insight_refresh_state",
    )
    async with db.transaction(OPERATOR) as session:
        seen = {t: (await run_sql(session, text(f"SELECT count(*) FROM {t}"))).scalar_one() for t in tables}
    assert all(seen.values()), seen
    member_id = await _scalar(db, OPERATOR, "SELECT id FROM members WHERE member_number = :n", n=number)
    for access in (
        AccessContext("merchant", tenant_id=merchant.tenant_id),
        AccessContext("member", member_id=member_id),
    ):
        async with db.transaction(access) as session:
            for table in tables:
                assert (await run_sql(session, text(f"SELECT count(*) FROM {table}"))).scalar_one() == 0, (
                    access,
                    table,
                )
        for call in (
            "SELECT * FROM insights_refresh_operator('UTC', 0)",
            "SELECT * FROM insight_flow_pairs('POINTS', 'month', '2020-01-01', '2030-01-01', 'merchant', true, NULL)",
            "SELECT * FROM insight_merchant_health('POINTS', '2020-01-01', '2030-01-01', now(), now(), NULL)",
        ):
            with pytest.raises(DBAPIError, match="FORBIDDEN"):
                async with db.transaction(access) as session:
                    await run_sql(session, text(call))
        with pytest.raises(DBAPIError, match="permission denied"):
            async with db.transaction(access) as session:
                await run_sql(session, text("DELETE FROM insight_point_flows"))


async def _scalar(db, access, sql: str, **params):
    async with db.transaction(access) as session:
        return (await run_sql(session, text(sql), params)).scalar_one()


async def test_a_flow_report_reads_at_most_forty_periods(operator):
    ok = await operator(TOTALS, f="2021-01-01", t="2021-02-10", a="POINTS", p="DAY", g="MERCHANT")
    assert ok["pointFlowTotals"] is not None
    for period, to in (("DAY", "2021-02-11"), ("WEEK", "2021-10-09"), ("MONTH", "2024-07-01")):
        errors = await operator.errors(TOTALS, f="2021-01-01", t=to, a="POINTS", p=period, g="MERCHANT")
        assert errors[0]["extensions"]["code"] == "INVALID_PERIOD", period


async def test_the_refresh_leaves_postings_younger_than_the_lag_to_the_next_run(settings, db, make_merchant):
    """Identity values are drawn before commit: a lower id may still commit after a higher one is
    visible. `alliance insights refresh` folds only postings older than the lag (nothing drawn
    that long ago is still in flight), so no refresh waits for or blocks the postings."""
    asset = await private_asset(settings)
    shop = await make_merchant(TenantCategory.SUPERMARKET)
    number = await enroll(shop, random_phone())
    await earn(shop, number, 100, asset)
    async with db.transaction(OPERATOR) as session:
        newest = (await run_sql(session, text("SELECT max(id) FROM ledger_transactions"))).scalar_one()

    async def folded_to() -> int:
        async with db.transaction(OPERATOR) as session:
            return (
                await run_sql(
                    session, text("SELECT last_transaction_id FROM insight_refresh_state WHERE name = 'operator'")
                )
            ).scalar_one()

    assert await refresh(db, settings.model_copy(update={"insights_refresh_lag_seconds": 3600})) is not None
    assert await folded_to() < newest, "a posting younger than the lag waits for the next run"
    assert await refresh(db, settings.model_copy(update={"insights_refresh_lag_seconds": 0})) is not None
    assert await folded_to() >= newest
