"""earnPointsBatch: set-based import where a bad item is refused alone."""

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from alliance.db.database import OPERATOR, run_sql
from tests.conftest import random_phone, unique
from tests.earning.test_rules_api import create_store
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


async def test_two_batches_in_one_transaction_each_answer_for_their_own_items(make_merchant, settings):
    """The batch's work table lives for the session and is emptied at commit: a second batch in
    the same transaction must not see the first one's items."""
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())

    def items(*orders: str) -> str:
        return json.dumps(
            [
                {
                    "idx": i,
                    "member_number": number,
                    "amount": "10",
                    "currency": "CNY",
                    "order_ref": order,
                    "asset": "POINTS",
                    "details": {},
                    "points": 10,
                    "alliance_points": 0,
                    "breakdown": [],
                }
                for i, order in enumerate(orders)
            ]
        )

    call = text("SELECT ledger_earn_batch(:scope, :key, 'h', :tenant, CAST(:items AS jsonb))")
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            try:
                answers = [
                    (
                        await conn.execute(
                            call,
                            {
                                "scope": "test",
                                "key": unique("k"),
                                "tenant": merchant.tenant_id,
                                "items": batch,
                            },
                        )
                    ).scalar_one()
                    for batch in (items("A", "B", "C"), items("D"))
                ]
            finally:
                await transaction.rollback()
    finally:
        await engine.dispose()
    first, second = ([(r["index"], r["transaction"]["orderRef"]) for r in a["results"]] for a in answers)
    assert first == [(0, "A"), (1, "B"), (2, "C")]
    assert second == [(0, "D")]


async def test_every_field_of_an_item_reaches_its_transaction(make_merchant, db):
    """Items are built from the request without Strawberry's generic conversion: each optional
    field still arrives (store, category, tags, asset, currency, business time)."""
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    store = await create_store(merchant)
    at = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    item = {
        "memberNumber": number,
        "amount": "88.80",
        "orderRef": "FULL-1",
        "currency": "CNY",
        "storeCode": store,
        "category": "baby_formula",
        "tags": ["promo", "green"],
        "asset": "POINTS",
        "effectiveAt": at.isoformat(),
    }
    query = BATCH.replace("transaction { kind points }", "transaction { kind points effectiveAt orderRef }")
    data = await merchant.api(query, i={"items": [item], "idempotencyKey": unique("k")})
    [result] = data["earnPointsBatch"]["results"]
    assert result["userErrors"] == []
    assert result["transaction"]["points"] == 88 and result["transaction"]["orderRef"] == "FULL-1"
    assert datetime.fromisoformat(result["transaction"]["effectiveAt"]) == at
    async with db.transaction(OPERATOR) as session:
        row = (
            await run_sql(
                session,
                text(
                    "SELECT s.code AS store, t.details ->> 'category' AS category, t.details -> 'tags' AS tags,"
                    " t.amount, t.currency, t.asset FROM ledger_transactions t JOIN stores s ON s.id = t.store_id"
                    " WHERE t.tenant_id = :t AND t.order_ref = 'FULL-1'"
                ),
                {"t": merchant.tenant_id},
            )
        ).one()
    assert (row.store, row.category, row.tags) == (store, "baby_formula", ["green", "promo"])  # sorted
    assert (str(row.amount), row.currency, row.asset) == ("88.80", "CNY", "POINTS")


async def test_each_item_expires_by_its_own_instant(make_merchant):
    """Expiry is computed once per distinct (asset, instant) of a batch and given to its items."""
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    now = datetime.now(UTC)
    instants = [(now - timedelta(days=days)).replace(microsecond=0) for days in (1, 3, 3, 6)]
    items = [
        {
            "memberNumber": number,
            "amount": "10",
            "orderRef": f"G-{n}",
            "asset": "GREEN",
            "effectiveAt": at.isoformat(),
        }
        for n, at in enumerate(instants)
    ] + [{"memberNumber": number, "amount": "10", "orderRef": "P-now"}]
    data = await merchant.api(BATCH, i={"items": items, "idempotencyKey": unique("k")})
    assert [r["userErrors"] for r in data["earnPointsBatch"]["results"]] == [[]] * len(items)

    lots = await merchant.api(
        "query($n: String!) { member(memberNumber: $n) { lots(first: 10) { edges { node {"
        " asset issuedAt expiresAt } } } } }",
        n=number,
    )
    found = sorted(
        (edge["node"]["asset"], datetime.fromisoformat(edge["node"]["issuedAt"]), edge["node"]["expiresAt"])
        for edge in lots["member"]["lots"]["edges"]
    )
    green = [
        (issued, datetime.fromisoformat(expires)) for asset, issued, expires in found if asset == "GREEN"
    ]
    assert [issued for issued, _ in green] == sorted(instants)
    # GREEN: 12 months after the day of issue (assets seeded by revision 0002); 29 Feb -> 28 Feb.
    for issued, expires in green:
        day = 28 if (issued.month, issued.day) == (2, 29) else issued.day
        assert expires == issued.replace(year=issued.year + 1, day=day), (issued, expires)
    [(_, points_issued, points_expires)] = [lot for lot in found if lot[0] == "POINTS"]
    # POINTS: the end of the 24th calendar month after the month of issue, Asia/Shanghai.
    local = points_issued.astimezone(ZoneInfo("Asia/Shanghai"))
    month = local.year * 12 + local.month - 1 + 25
    first_after = datetime(month // 12, month % 12 + 1, 1, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert datetime.fromisoformat(points_expires) == first_after


async def test_chinese_text_travels_intact_through_single_and_batch_earns(make_merchant, db):
    """Order refs, categories and tags reach the ledger and come back exactly as the POS sent
    them, through the JSON parameters and answers of both paths."""
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    single = await merchant.api(
        """mutation($i: EarnPointsInput!) { earnPoints(input: $i) {
          transaction { id orderRef } userErrors { code } } }""",
        i={
            "memberNumber": number,
            "amount": "88.00",
            "orderRef": "小票-0001",
            "category": "母婴用品",
            "tags": ["会员日", "绿色消费"],
            "idempotencyKey": unique("k"),
        },
    )
    assert single["earnPoints"]["userErrors"] == []
    assert single["earnPoints"]["transaction"]["orderRef"] == "小票-0001"
    batch = await merchant.api(
        """mutation($i: EarnPointsBatchInput!) { earnPointsBatch(input: $i) {
          results { transaction { orderRef } userErrors { code } } userErrors { code } } }""",
        i={
            "items": [
                {"memberNumber": number, "amount": "20", "orderRef": "小票-0002", "category": "超市"},
                {"memberNumber": number, "amount": "30", "orderRef": "小票-0003", "tags": ["周末"]},
            ],
            "idempotencyKey": unique("batch"),
        },
    )
    results = batch["earnPointsBatch"]["results"]
    assert [r["userErrors"] for r in results] == [[], []]
    assert [r["transaction"]["orderRef"] for r in results] == ["小票-0002", "小票-0003"]
    async with db.transaction(OPERATOR) as session:
        rows = (
            await run_sql(
                session,
                text(
                    "SELECT order_ref, details -> 'category', details -> 'tags' FROM ledger_transactions"
                    " WHERE member_id = (SELECT id FROM members WHERE member_number = :n) ORDER BY id"
                ),
                {"n": number},
            )
        ).all()
    assert [tuple(row) for row in rows] == [
        ("小票-0001", "母婴用品", ["会员日", "绿色消费"]),
        ("小票-0002", "超市", None),
        ("小票-0003", None, ["周末"]),
    ]
