"""DESIGN.md's worked example settled through the API: lines, net positions, payment instructions."""

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from alliance.tenants.models import TenantCategory
from tests.conftest import random_phone, unique
from tests.ledger.test_worked_example import EARN, REDEEM, enroll

BATCH_FIELDS = """batch { id status asset linePoints crossRedeemedPoints reversedPoints
  lines(first: 50) { edges { node { issuerCode redeemerCode points grossAmount feeAmount netAmount } } }
  positions { party netAmount } instructions { party direction amount } }
  userErrors { field code message }"""
RUN = "mutation($i: RunSettlementInput!) { runSettlement(input: $i) { " + BATCH_FIELDS + " } }"
TERMS = """mutation($i: SetSettlementTermsInput!) { setSettlementTerms(input: $i) {
  terms { feeBps settlementValue } userErrors { code } } }"""


async def backdate_member_transactions(settings, member_number: str, when: datetime) -> None:
    """Move a member's postings into a past period (as the owner: effective_at is business time)."""
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE ledger_transactions DISABLE TRIGGER append_only"))
            await conn.execute(
                text(
                    "UPDATE ledger_transactions SET effective_at = :when"
                    " WHERE member_id = (SELECT id FROM members WHERE member_number = :n)"
                ),
                {"when": when, "n": member_number},
            )
            await conn.execute(text("ALTER TABLE ledger_transactions ENABLE TRIGGER append_only"))
    finally:
        await engine.dispose()


async def test_worked_example_settles_to_the_cent(settings, operator, make_merchant):
    # A private asset keeps this test's period free of other tests' postings.
    supermarket = await make_merchant(TenantCategory.SUPERMARKET)
    four_s = await make_merchant(TenantCategory.AUTO_SERVICE)
    hotel = await make_merchant(TenantCategory.HOTEL)
    phone = random_phone()
    number = await enroll(supermarket, phone)
    await enroll(four_s, phone)
    await enroll(hotel, phone)
    await supermarket.api(
        EARN, i={"memberNumber": number, "amount": "300", "orderRef": "A", "idempotencyKey": unique("k")}
    )
    await four_s.api(
        EARN, i={"memberNumber": number, "amount": "200", "orderRef": "C", "idempotencyKey": unique("k")}
    )
    await hotel.api(
        REDEEM, i={"memberNumber": number, "points": 450, "orderRef": "B", "idempotencyKey": unique("k")}
    )

    # Settle a closed month of its own: move the postings into a month no other test uses.
    month = date(1950 + int(number[-3:]) % 70, 1 + int(number[-2:]) % 12, 1)
    await backdate_member_transactions(settings, number, datetime(month.year, month.month, 15, 4, tzinfo=UTC))
    terms = await operator(
        TERMS,
        i={
            "asset": "POINTS",
            "settlementValue": "0.01",
            "feeBps": 200,
            "effectiveFrom": (
                datetime(month.year, month.month, 1, tzinfo=UTC) - timedelta(days=1)
            ).isoformat(),
        },
    )
    assert terms["setSettlementTerms"]["userErrors"] == []

    data = await operator(RUN, i={"asset": "POINTS", "periodStart": month.isoformat()})
    payload = data["runSettlement"]
    assert payload["userErrors"] == []
    batch = payload["batch"]
    assert batch["status"] == "DRAFT"
    lines = {(e["node"]["issuerCode"], e["node"]["redeemerCode"]): e["node"] for e in batch["lines"]["edges"]}
    assert lines == {
        (supermarket.code, hotel.code): {
            "issuerCode": supermarket.code,
            "redeemerCode": hotel.code,
            "points": 300,
            "grossAmount": "3.00",
            "feeAmount": "0.06",
            "netAmount": "2.94",
        },
        (four_s.code, hotel.code): {
            "issuerCode": four_s.code,
            "redeemerCode": hotel.code,
            "points": 150,
            "grossAmount": "1.50",
            "feeAmount": "0.03",
            "netAmount": "1.47",
        },
    }
    positions = {p["party"]: p["netAmount"] for p in batch["positions"]}
    assert positions == {
        supermarket.code: "-3.00",
        four_s.code: "-1.50",
        hotel.code: "4.41",
        "OPERATOR": "0.09",
    }
    instructions = {(i["party"], i["direction"], i["amount"]) for i in batch["instructions"]}
    assert instructions == {
        (supermarket.code, "PAY", "3.00"),
        (four_s.code, "PAY", "1.50"),
        (hotel.code, "RECEIVE", "4.41"),
        ("OPERATOR", "RECEIVE", "0.09"),
    }
    assert batch["linePoints"] == 450 == batch["crossRedeemedPoints"]

    # Running it again recomputes the draft; nothing is counted twice.
    again = (await operator(RUN, i={"asset": "POINTS", "periodStart": month.isoformat()}))["runSettlement"][
        "batch"
    ]
    assert again["id"] == batch["id"] and again["positions"] == batch["positions"]

    # The hotel sees its own lines; the supermarket sees only the line it is party to.
    query = "query($id: ID!) { settlementBatch(id: $id) { lines { edges { node { issuerCode redeemerCode } } } positions { party } } }"
    seen = (await supermarket.api(query, id=batch["id"]))["settlementBatch"]
    assert [e["node"]["redeemerCode"] for e in seen["lines"]["edges"]] == [hotel.code]
    assert [p["party"] for p in seen["positions"]] == [supermarket.code]

    recon = await operator(
        "query($id: ID!) { settlementReconciliation(batchId: $id) { matches differences { issuerCode } } }",
        id=batch["id"],
    )
    assert recon["settlementReconciliation"] == {"matches": True, "differences": []}

    dispute = """mutation($i: DisputeSettlementLineInput!) { disputeSettlementLine(input: $i) {
      dispute { id status raisedBy issuerCode } userErrors { code } } }"""
    line = {
        "batchId": batch["id"],
        "issuerCode": supermarket.code,
        "redeemerCode": hotel.code,
        "reason": "300 not 30",
    }
    outsider = await four_s.api(dispute, i=line)
    assert outsider["disputeSettlementLine"]["userErrors"] == [{"code": "LINE_NOT_FOUND"}]
    keyed = line | {"idempotencyKey": unique("dispute")}
    raised = (await hotel.api(dispute, i=keyed))["disputeSettlementLine"]["dispute"]
    assert (raised["status"], raised["raisedBy"]) == ("OPEN", hotel.code)
    retried = (await hotel.api(dispute, i=keyed))["disputeSettlementLine"]
    assert retried == {"dispute": raised, "userErrors": []}, "a retried dispute is the same dispute"
    resolve = """mutation($i: ResolveDisputeInput!) { resolveDispute(input: $i) { dispute { status resolution } userErrors { code } } }"""
    resolved = await operator(resolve, i={"disputeId": raised["id"], "resolution": "checked: 300 is right"})
    assert resolved["resolveDispute"]["dispute"] == {
        "status": "RESOLVED",
        "resolution": "checked: 300 is right",
    }
    seen_by_four_s = await four_s.api(
        "query($id: ID!) { settlementBatch(id: $id) { disputes { id } } }", id=batch["id"]
    )
    assert seen_by_four_s["settlementBatch"]["disputes"] == []

    approve = """mutation($id: ID!, $k: String) { approveSettlement(input: {batchId: $id, idempotencyKey: $k}) {
      batch { status } userErrors { code } } }"""
    approval_key = unique("approve")
    approved = (await operator(approve, id=batch["id"], k=approval_key))["approveSettlement"]
    assert approved["batch"] and approved["batch"]["status"] == "APPROVED", approved
    retried_approval = (await operator(approve, id=batch["id"], k=approval_key))["approveSettlement"]
    assert retried_approval == approved, "a retried approval answers as the first did"
    unkeyed = (await operator(approve, id=batch["id"], k=None))["approveSettlement"]
    assert [e["code"] for e in unkeyed["userErrors"]] == ["BATCH_NOT_DRAFT"], unkeyed
    rerun = (await operator(RUN, i={"asset": "POINTS", "periodStart": month.isoformat()}))["runSettlement"]
    assert [e["code"] for e in rerun["userErrors"]] == ["BATCH_NOT_DRAFT"]

    pay = 'mutation($id: ID!, $p: String!) { markSettlementPaid(input: {batchId: $id, party: $p, paymentReference: "REF"}) { batch { status } userErrors { code } } }'
    for party in (supermarket.code, four_s.code, hotel.code):
        assert (await operator(pay, id=batch["id"], p=party))["markSettlementPaid"]["batch"][
            "status"
        ] == "APPROVED"
    assert (await operator(pay, id=batch["id"], p="OPERATOR"))["markSettlementPaid"]["batch"][
        "status"
    ] == "PAID"
