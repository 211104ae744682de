"""History shows where each posting happened: the merchant's and the store's names."""

from tests.catalog import member_api
from tests.conftest import random_phone, unique

STORE = "mutation($i: CreateStoreInput!) { createStore(input: $i) { userErrors { code } } }"
ENROLL = "mutation($i: EnrollMemberInput!) { enrollMember(input: $i) { member { memberNumber } } }"
EARN = """mutation($i: EarnPointsInput!) { earnPoints(input: $i) {
  transaction { tenantCode tenantName storeName amount currency } userErrors { code } } }"""
REDEEM = """mutation($i: RedeemPointsInput!) { redeemPoints(input: $i) {
  transaction { kind points balanceChange } userErrors { code } } }"""
HISTORY = """query($n: String!) { viewer { timeZone } member(memberNumber: $n) { transactions(first: 10) {
  edges { node { kind points balanceChange tenantCode tenantName storeCode storeName } } } } }"""


async def test_a_members_history_names_each_merchant_and_store(app, http, db, make_merchant):
    mart, hotel = await make_merchant(), await make_merchant()
    await mart.api(STORE, i={"code": "S-1", "name": "Riverside", "city": "Hangzhou"})
    phone = random_phone()
    enrolled = await mart.api(ENROLL, i={"phone": phone, "externalRef": unique("c")})
    number = enrolled["enrollMember"]["member"]["memberNumber"]
    await hotel.api(ENROLL, i={"phone": phone, "externalRef": unique("c")})
    earned = await mart.api(
        EARN,
        i={
            "memberNumber": number,
            "amount": "10",
            "orderRef": unique("o"),
            "idempotencyKey": unique("k"),
            "storeCode": "S-1",
        },
    )
    assert earned["earnPoints"]["transaction"] == {
        "tenantCode": mart.code,
        "tenantName": f"Merchant {mart.code}",
        "storeName": "Riverside",
        "amount": "10.00",
        "currency": "CNY",
    }
    await hotel.api(
        EARN,
        i={"memberNumber": number, "amount": "20", "orderRef": unique("o"), "idempotencyKey": unique("k")},
    )

    seen = await (await member_api(app, http, db, number))(HISTORY, n=number)
    assert seen["viewer"]["timeZone"] == "Asia/Shanghai"
    places = [
        (e["node"]["tenantCode"], e["node"]["storeCode"], e["node"]["storeName"], e["node"]["balanceChange"])
        for e in seen["member"]["transactions"]["edges"]
    ]
    assert places == [(hotel.code, None, None, 20), (mart.code, "S-1", "Riverside", 10)]

    redeemed = await hotel.api(
        REDEEM, i={"memberNumber": number, "points": 5, "orderRef": unique("o"), "idempotencyKey": unique("k")}
    )
    assert redeemed["redeemPoints"]["transaction"] == {"kind": "REDEEM", "points": 5, "balanceChange": -5}
