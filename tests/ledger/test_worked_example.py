"""DESIGN.md's worked example through the GraphQL API: which lots a cross-merchant redemption consumes."""

from sqlalchemy import text

from alliance.db.database import OPERATOR, run_sql
from alliance.tenants.models import TenantCategory
from tests.conftest import random_phone, unique

ENROLL = "mutation($i: EnrollMemberInput!) { enrollMember(input: $i) { member { memberNumber } userErrors { code } } }"
EARN = """mutation($i: EarnPointsInput!) { earnPoints(input: $i) {
  transaction { id kind points asset effectiveAt } balance { asset available held } userErrors { field code message } } }"""
REDEEM = """mutation($i: RedeemPointsInput!) { redeemPoints(input: $i) {
  transaction { id kind points asset } balance { asset available held } userErrors { field code message } } }"""


async def enroll(merchant, phone: str) -> str:
    data = await merchant.api(ENROLL, i={"phone": phone, "externalRef": unique("c")})
    assert data["enrollMember"]["userErrors"] == []
    return data["enrollMember"]["member"]["memberNumber"]


async def test_worked_example(make_merchant, db, operator):
    supermarket = await make_merchant(TenantCategory.SUPERMARKET)
    four_s = await make_merchant(TenantCategory.AUTO_SERVICE)
    hotel = await make_merchant(TenantCategory.HOTEL)
    phone = random_phone()
    number = await enroll(supermarket, phone)
    assert await enroll(four_s, phone) == number
    assert await enroll(hotel, phone) == number

    earned_a = await supermarket.api(
        EARN, i={"memberNumber": number, "amount": "300.00", "orderRef": "A-1", "idempotencyKey": unique("k")}
    )
    assert earned_a["earnPoints"]["transaction"]["points"] == 300
    earned_c = await four_s.api(
        EARN, i={"memberNumber": number, "amount": "200", "orderRef": "C-1", "idempotencyKey": unique("k")}
    )
    assert earned_c["earnPoints"]["balance"] == {"asset": "POINTS", "available": 500, "held": 0}

    redeemed = await hotel.api(
        REDEEM, i={"memberNumber": number, "points": 450, "orderRef": "B-1", "idempotencyKey": unique("k")}
    )
    assert redeemed["redeemPoints"]["userErrors"] == []
    assert redeemed["redeemPoints"]["balance"]["available"] == 50

    # Provenance: 300 from A's lot, 150 from C's lot; 50 left in C's lot.
    async with db.transaction(OPERATOR) as session:
        rows = (
            await run_sql(
                session,
                text("""
            SELECT t.code AS issuer, -mv.points AS consumed, l.remaining
            FROM lot_movements mv JOIN lots l ON l.id = mv.lot_id JOIN tenants t ON t.id = l.issuer_tenant_id
            JOIN ledger_transactions tx ON tx.id = mv.transaction_id
            WHERE tx.member_id = (SELECT id FROM members WHERE member_number = :n) AND mv.kind = 'consume'
            ORDER BY t.code"""),
                {"n": number},
            )
        ).all()
    assert sorted((r.issuer, r.consumed, r.remaining) for r in rows) == sorted(
        [(supermarket.code, 300, 0), (four_s.code, 150, 50)]
    )
    data = await operator(
        "query($n: String!) { member(memberNumber: $n) { balances { asset available held } } }", n=number
    )
    assert data["member"]["balances"] == [{"asset": "POINTS", "available": 50, "held": 0}]
