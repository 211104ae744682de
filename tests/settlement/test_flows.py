"""`pointsFlow`: points redeemed across merchant categories per settled period (operator)."""

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from alliance.tenants.models import TenantCategory
from tests.conftest import random_phone, unique
from tests.ledger.test_worked_example import EARN, REDEEM, enroll
from tests.settlement.test_worked_example import RUN, backdate_member_transactions

FLOW = """query($from: Date, $to: Date) { pointsFlow(from: $from, to: $to) {
  periodStart issuerCategory redeemerCategory points } }"""
LINES = """query($id: ID!) { settlementBatch(id: $id) { statementCsv
  lines(first: 50) { edges { node { issuerCode redeemerCode points } } } } }"""


async def test_points_flow_sums_settled_lines_by_category_and_each_party_sees_its_lines(settings, operator, make_merchant):
    supermarket = await make_merchant(TenantCategory.SUPERMARKET)
    baby_shop = await make_merchant(TenantCategory.BABY_GOODS)
    hotel = await make_merchant(TenantCategory.HOTEL)
    phone = random_phone()
    number = await enroll(supermarket, phone)
    await enroll(baby_shop, phone)
    await enroll(hotel, phone)
    for merchant, amount in ((supermarket, "300"), (baby_shop, "200")):
        await merchant.api(
            EARN, i={"memberNumber": number, "amount": amount, "orderRef": "o", "idempotencyKey": unique("k")}
        )
    await hotel.api(REDEEM, i={"memberNumber": number, "points": 450, "orderRef": "r", "idempotencyKey": unique("k")})
    await supermarket.api(
        REDEEM, i={"memberNumber": number, "points": 40, "orderRef": "r2", "idempotencyKey": unique("k")}
    )

    # A closed month of this test's own (2020-2025: other tests settle other months).
    month = date(2020 + int(number[-3:]) % 6, 1 + int(number[-2:]) % 12, 1)
    next_month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    await backdate_member_transactions(settings, number, datetime(month.year, month.month, 10, 4, tzinfo=UTC))
    span = {"from": month.isoformat(), "to": next_month.isoformat()}
    assert (await operator(FLOW, **span))["pointsFlow"] == []  # no batch, no flow

    batch = (await operator(RUN, i={"asset": "POINTS", "periodStart": month.isoformat()}))["runSettlement"]
    assert batch["userErrors"] == []
    flows = (await operator(FLOW, **span))["pointsFlow"]
    period_start = flows[0]["periodStart"]
    assert datetime.fromisoformat(period_start).astimezone(ZoneInfo(settings.time_zone)).date() == month

    # Each merchant sees the lines it is a party to, as issuer and as redeemer (receivables too).
    batch_id = batch["batch"]["id"]
    for merchant, expected in (
        (hotel, {(supermarket.code, hotel.code, 300), (baby_shop.code, hotel.code, 150)}),
        (supermarket, {(supermarket.code, hotel.code, 300), (baby_shop.code, supermarket.code, 40)}),
    ):
        seen = (await merchant.api(LINES, id=batch_id))["settlementBatch"]
        lines = {(e["node"]["issuerCode"], e["node"]["redeemerCode"], e["node"]["points"]) for e in seen["lines"]["edges"]}
        assert lines == expected, merchant.code
        assert all(f"{issuer},{redeemer}" in seen["statementCsv"] for issuer, redeemer, _ in expected)
    # 300 supermarket points and 150 baby-shop points went to the hotel (soonest-expiring, then
    # oldest lot first); the 40 points the supermarket took back were the baby shop's own.
    assert flows == [
        {"periodStart": period_start, "issuerCategory": "BABY_GOODS", "redeemerCategory": "HOTEL", "points": 150},
        {"periodStart": period_start, "issuerCategory": "BABY_GOODS", "redeemerCategory": "SUPERMARKET", "points": 40},
        {"periodStart": period_start, "issuerCategory": "SUPERMARKET", "redeemerCategory": "HOTEL", "points": 300},
    ]


async def test_points_flow_is_for_the_operator_over_a_bounded_range(operator, make_merchant):
    merchant = await make_merchant()
    errors = await merchant.api.errors("{ pointsFlow { points } }")
    assert errors[0]["extensions"]["code"] == "FORBIDDEN"
    assert (await operator(FLOW, **{"from": "2021-01-01", "to": "2025-12-01"}))["pointsFlow"] is not None
    for span in ({"from": "2020-01-01", "to": "2026-01-01"}, {"from": "2024-01-01", "to": "2024-01-01"}):
        errors = await operator.errors(FLOW, **span)
        assert errors[0]["extensions"]["code"] == "INVALID_PERIOD"
