"""Operator clearing: the operator sells points to issuers and buys them back from redeemers."""

import secrets
from datetime import datetime
from zoneinfo import ZoneInfo

from tests.conftest import random_phone, unique
from tests.ledger.test_worked_example import EARN, REDEEM, enroll
from tests.settlement.test_expiry_and_periods import owner_sql
from tests.settlement.test_worked_example import RUN

CLEARING = (
    """mutation($i: SetClearingTermsInput!) { setClearingTerms(input: $i) { ok userErrors { code } } }"""
)
BLOCK = """mutation($i: PurchasePointBlockInput!) { purchasePointBlock(input: $i) { prepaidBalance userErrors { code } } }"""
TERMS = """mutation($i: SetSettlementTermsInput!) { setSettlementTerms(input: $i) { terms { model } userErrors { code } } }"""


async def test_prepaid_and_postpaid_tenants_settle_against_the_operator(settings, operator, make_merchant):
    asset = "CLR" + secrets.token_hex(3).upper()
    await owner_sql(
        settings,
        "INSERT INTO assets (code, name, settlement_value, expiry_policy, policy_description)"
        " VALUES (:a, 'Clearing test points', 0.01, 'never', 'never expire')",
        a=asset,
    )
    since = "2000-01-01T00:00:00+00:00"
    terms = await operator(
        TERMS,
        i={
            "asset": asset,
            "model": "OPERATOR_CLEARING",
            "settlementValue": "0.01",
            "feeBps": 0,
            "effectiveFrom": since,
        },
    )
    assert terms["setSettlementTerms"] == {"terms": {"model": "OPERATOR_CLEARING"}, "userErrors": []}
    prepaid, postpaid = await make_merchant(), await make_merchant()
    for merchant, billing in ((prepaid, "PREPAID"), (postpaid, "POSTPAID")):
        done = await operator(
            CLEARING,
            i={
                "tenantCode": merchant.code,
                "asset": asset,
                "accrualCost": "0.012",
                "reimbursementRate": "0.010",
                "billing": billing,
                "effectiveFrom": since,
            },
        )
        assert done["setClearingTerms"] == {"ok": True, "userErrors": []}
    bought = await operator(
        BLOCK,
        i={
            "tenantCode": prepaid.code,
            "asset": asset,
            "points": 300,
            "price": "3.60",
            "idempotencyKey": unique("k"),
        },
    )
    assert bought["purchasePointBlock"] == {"prepaidBalance": 300, "userErrors": []}

    phone = random_phone()
    number = await enroll(prepaid, phone)
    await enroll(postpaid, phone)

    async def earn(merchant, amount: str) -> list[str]:
        data = await merchant.api(
            EARN,
            i={
                "memberNumber": number,
                "amount": amount,
                "orderRef": unique("o"),
                "asset": asset,
                "idempotencyKey": unique("k"),
            },
        )
        return [e["code"] for e in data["earnPoints"]["userErrors"]]

    assert await earn(prepaid, "200") == []
    assert await earn(prepaid, "150") == ["PREPAID_BALANCE_EXHAUSTED"], "only 100 prepaid points are left"
    assert await earn(prepaid, "100") == []
    assert await earn(postpaid, "500") == [], "a postpaid tenant is billed afterwards, never refused"
    redeemed = await postpaid.api(
        REDEEM,
        i={
            "memberNumber": number,
            "points": 400,
            "orderRef": "R",
            "asset": asset,
            "idempotencyKey": unique("k"),
        },
    )
    assert redeemed["redeemPoints"]["userErrors"] == []

    month = datetime.now(ZoneInfo(settings.time_zone)).date().replace(day=1)  # the alliance's month
    run = await operator(
        RUN.replace(
            "positions { party netAmount }",
            "positions { party netAmount } clearingLines {"
            " tenantCode billing issuedPoints accrualAmount redeemedPoints reimbursementAmount"
            " netAmount }",
        ),
        i={"asset": asset, "periodStart": month.isoformat()},
    )
    batch = run["runSettlement"]["batch"]
    assert run["runSettlement"]["userErrors"] == []
    assert batch["lines"]["edges"] == [], "no bilateral lines under operator clearing"
    assert {line["tenantCode"]: line for line in batch["clearingLines"]} == {
        prepaid.code: {
            "tenantCode": prepaid.code,
            "billing": "PREPAID",
            "issuedPoints": 300,
            "accrualAmount": "0.00",
            "redeemedPoints": 0,
            "reimbursementAmount": "0.00",
            "netAmount": "0.00",
        },
        postpaid.code: {
            "tenantCode": postpaid.code,
            "billing": "POSTPAID",
            "issuedPoints": 500,
            "accrualAmount": "6.00",
            "redeemedPoints": 400,
            "reimbursementAmount": "4.00",
            "netAmount": "-2.00",
        },
    }
    positions = {p["party"]: p["netAmount"] for p in batch["positions"]}
    assert positions == {prepaid.code: "0.00", postpaid.code: "-2.00", "OPERATOR": "2.00"}
    recon = await operator(
        "query($id: ID!) { settlementReconciliation(batchId: $id) { matches } }", id=batch["id"]
    )
    assert recon["settlementReconciliation"]["matches"] is True
