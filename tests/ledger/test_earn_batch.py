"""earnPointsBatch: set-based import where a bad item is refused alone."""

from tests.conftest import random_phone, unique
from tests.ledger.test_worked_example import enroll

BATCH = """mutation($i: EarnPointsBatchInput!) { earnPointsBatch(input: $i) {
  results { index transaction { kind points } userErrors { field code } } userErrors { code } } }"""
BALANCE = "query($n: String!) { member(memberNumber: $n) { balance { available } } }"


async def test_bad_items_fail_alone_and_retry_replays(make_merchant):
    merchant = await make_merchant()
    first, second = await enroll(merchant, random_phone()), await enroll(merchant, random_phone())
    items = [
        {"memberNumber": first, "amount": "100.00", "orderRef": "O-1"},
        {"memberNumber": "8999999999", "amount": "10", "orderRef": "O-2"},
        {"memberNumber": second, "amount": "12.345", "orderRef": "O-3"},
        {"memberNumber": second, "amount": "50", "orderRef": "O-4", "storeCode": "NOPE"},
        {"memberNumber": first, "amount": "100.00", "orderRef": "O-1"},
        {"memberNumber": second, "amount": "0.50", "orderRef": "O-5"},
        {"memberNumber": second, "amount": "75.99", "orderRef": "O-6"},
    ]
    key = unique("batch")
    data = await merchant.api(BATCH, i={"items": items, "idempotencyKey": key})
    results = data["earnPointsBatch"]["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    codes = [[e["code"] for e in r["userErrors"]] for r in results]
    assert codes == [
        [],
        ["MEMBER_NOT_FOUND"],
        ["INVALID_AMOUNT"],
        ["UNKNOWN_STORE"],
        ["DUPLICATE_ORDER"],
        ["NO_POINTS_EARNED"],
        [],
    ]
    assert results[0]["transaction"] == {"kind": "EARN", "points": 100}
    assert results[6]["transaction"] == {"kind": "EARN", "points": 75}
    assert (await merchant.api(BALANCE, n=first))["member"]["balance"]["available"] == 100
    assert (await merchant.api(BALANCE, n=second))["member"]["balance"]["available"] == 75

    again = await merchant.api(BATCH, i={"items": items, "idempotencyKey": key})
    assert again == data
    assert (await merchant.api(BALANCE, n=first))["member"]["balance"]["available"] == 100


async def test_batch_size_is_bounded(make_merchant):
    merchant = await make_merchant()
    items = [{"memberNumber": "8000000000", "amount": "1", "orderRef": f"O-{n}"} for n in range(1001)]
    data = await merchant.api(BATCH, i={"items": items, "idempotencyKey": unique("k")})
    assert data["earnPointsBatch"]["userErrors"] == [{"code": "INVALID_BATCH_SIZE"}]
