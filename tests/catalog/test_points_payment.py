"""Points as payment: a merchant's rate and maximum share of a bill; payWithPoints."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from alliance.db.database import OPERATOR, run_sql
from alliance.tenants.models import TenantCategory
from tests.catalog import assert_books_balance, available, errors, funded_member, member_api
from tests.conftest import unique

SET = """mutation($i: SetPointsPaymentInput!) { setPointsPayment(input: $i) {
  settings { tenantCode pointsPerUnit maxShare currency enabled } userErrors { field code message } } }"""
PAY = """mutation($i: PayWithPointsInput!) { payWithPoints(input: $i) {
  payment { billAmount pointsValue amountDue currency pointsPerUnit }
  transaction { id kind points } balance { asset available held } userErrors { field code message } } }"""
TERMS = (
    """query($t: String) { pointsPayment(tenantCode: $t) { tenantCode pointsPerUnit maxShare enabled } }"""
)


async def ledger_rows(db, number: str) -> int:
    async with db.transaction(OPERATOR) as session:
        found = await run_sql(
            session,
            text("""SELECT count(*) FROM ledger_transactions t JOIN members m ON m.id = t.member_id
                    WHERE m.member_number = :n"""),
            {"n": number},
        )
        return found.scalar_one()


def pay(number: str, bill: str, points: int, order: str, **extra) -> dict:
    return {
        "memberNumber": number,
        "billAmount": bill,
        "points": points,
        "orderRef": order,
        "idempotencyKey": unique("k"),
    } | extra


async def test_points_pay_part_of_a_bill_up_to_the_share(make_merchant, operator, db, app, http):
    mart = await make_merchant(TenantCategory.SUPERMARKET)
    number = await funded_member(mart, 10_000)
    data = await mart.api(SET, i={"pointsPerUnit": 100, "maxShare": "0.5"})
    assert data["setPointsPayment"] == {
        "settings": {
            "tenantCode": mart.code,
            "pointsPerUnit": 100,
            "maxShare": "0.5000",
            "currency": "CNY",
            "enabled": True,
        },
        "userErrors": [],
    }

    # A 120.00 CNY grocery bill: at most 60.00 CNY, i.e. 6,000 points.
    before = (await available(operator, number), await ledger_rows(db, number))
    over = await mart.api(PAY, i=pay(number, "120.00", 6001, "BILL-1"))
    assert errors(over["payWithPoints"]) == ["OVER_ALLOWED_SHARE"]
    assert over["payWithPoints"]["userErrors"][0]["field"] == "points"
    assert over["payWithPoints"]["transaction"] is None and over["payWithPoints"]["payment"] is None
    assert (await available(operator, number), await ledger_rows(db, number)) == before

    key = unique("k")
    paid = await mart.api(PAY, i=pay(number, "120.00", 4550, "BILL-1") | {"idempotencyKey": key})
    payload = paid["payWithPoints"]
    assert payload["userErrors"] == []
    assert payload["payment"] == {
        "billAmount": "120.00",
        "pointsValue": "45.50",
        "amountDue": "74.50",
        "currency": "CNY",
        "pointsPerUnit": 100,
    }
    assert payload["transaction"]["kind"] == "REDEEM" and payload["transaction"]["points"] == 4550
    assert payload["balance"]["available"] == 10_000 - 4550
    replay = await mart.api(PAY, i=pay(number, "120.00", 4550, "BILL-1") | {"idempotencyKey": key})
    assert replay["payWithPoints"] == payload

    # A second points payment on the same order counts against the same share.
    before = (await available(operator, number), await ledger_rows(db, number))
    second = await mart.api(PAY, i=pay(number, "120.00", 1500, "BILL-1"))
    assert errors(second["payWithPoints"]) == ["OVER_ALLOWED_SHARE"]
    assert (await available(operator, number), await ledger_rows(db, number)) == before
    assert (await mart.api(PAY, i=pay(number, "120.00", 1450, "BILL-1")))["payWithPoints"]["userErrors"] == []
    assert await available(operator, number) == 10_000 - 6000

    # Not whole cents, more than the member has, and bad input.
    odd = await mart.api(SET, i={"pointsPerUnit": 3, "maxShare": "1"})
    assert odd["setPointsPayment"]["userErrors"] == []
    assert errors((await mart.api(PAY, i=pay(number, "50", 10, "BILL-2")))["payWithPoints"]) == [
        "INVALID_POINTS"
    ]
    third = await mart.api(PAY, i=pay(number, "50", 30, "BILL-2"))
    assert third["payWithPoints"]["payment"]["pointsValue"] == "10.00"
    rich = await mart.api(PAY, i=pay(number, "100000", 9000, "BILL-3"))
    assert errors(rich["payWithPoints"]) == ["INSUFFICIENT_POINTS"]
    for bad, code in (
        ({"billAmount": "-1"}, "INVALID_AMOUNT"),
        ({"billAmount": "1.001"}, "INVALID_AMOUNT"),
        ({"points": 0}, "INVALID_POINTS"),
        ({"orderRef": " "}, "REQUIRED"),
    ):
        refused = await mart.api(PAY, i=pay(number, "10", 30, "BILL-4") | bad)
        assert errors(refused["payWithPoints"]) == [code], bad

    # Members read the terms (to show them in the app) but cannot pay at the till themselves.
    me = await member_api(app, http, db, number)
    assert (await me(TERMS, t=mart.code))["pointsPayment"]["pointsPerUnit"] == 3
    denied = await me.errors(PAY, i=pay(number, "10", 30, "BILL-5"))
    assert denied[0]["extensions"]["code"] == "FORBIDDEN"
    await assert_books_balance(db)


async def test_refused_without_terms_or_when_disabled(make_merchant, operator, db):
    hotel = await make_merchant(TenantCategory.HOTEL)
    number = await funded_member(hotel, 1000)
    none = await hotel.api(PAY, i=pay(number, "100", 100, "ROOM-1"))
    assert errors(none["payWithPoints"]) == ["POINTS_PAYMENT_NOT_ENABLED"]
    assert (await hotel.api(TERMS))["pointsPayment"] is None
    await hotel.api(SET, i={"pointsPerUnit": 100, "maxShare": "0.3", "enabled": False})
    assert (await hotel.api(TERMS))["pointsPayment"] == {
        "tenantCode": hotel.code,
        "pointsPerUnit": 100,
        "maxShare": "0.3000",
        "enabled": False,
    }
    off = await hotel.api(PAY, i=pay(number, "100", 100, "ROOM-1"))
    assert errors(off["payWithPoints"]) == ["POINTS_PAYMENT_NOT_ENABLED"]
    assert await available(operator, number) == 1000
    await hotel.api(SET, i={"pointsPerUnit": 100, "maxShare": "0.3"})
    on = await hotel.api(PAY, i=pay(number, "100", 100, "ROOM-1"))
    assert on["payWithPoints"]["payment"]["pointsValue"] == "1.00"


@pytest.mark.parametrize(
    ("terms", "code"),
    [
        ({"pointsPerUnit": 0, "maxShare": "0.5"}, "INVALID_RATE"),
        ({"pointsPerUnit": 10_001, "maxShare": "0.5"}, "INVALID_RATE"),
        ({"pointsPerUnit": 100, "maxShare": "0"}, "INVALID_SHARE"),
        ({"pointsPerUnit": 100, "maxShare": "1.5"}, "INVALID_SHARE"),
        ({"pointsPerUnit": 100, "maxShare": "0.12345"}, "INVALID_SHARE"),
    ],
)
async def test_bad_terms_are_refused(make_merchant, terms, code):
    shop = await make_merchant(TenantCategory.AUTO_SERVICE)
    data = await shop.api(SET, i=terms)
    assert errors(data["setPointsPayment"]) == [code]
    assert (await shop.api(TERMS))["pointsPayment"] is None
