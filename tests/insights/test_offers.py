"""Targeted offers end to end: a merchant makes an offer to a segment, its members earn the bonus
(single earns and batches), nobody else does and nobody outside the window, members see only
their own offers, merchants only their own, and the results match a hand-computed ledger.

Segments and their membership are written as the owner, as the insights refresh would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from alliance.db import AccessContext
from alliance.db.database import Database, run_sql
from tests.catalog import member_api, member_id
from tests.conftest import unique
from tests.earning.test_rules_api import BATCH, define_raw, earn, enroll, errors, preview, purchase, retire

OFFER_FIELDS = "id code segmentCode title description kind category tag multiplier startsAt endsAt status"
CREATE = f"""mutation($i: CreateOfferInput!) {{ createOffer(input: $i) {{
  offer {{ {OFFER_FIELDS} }} userErrors {{ field code message }} }} }}"""
WITHDRAW = f"""mutation($i: WithdrawOfferInput!) {{ withdrawOffer(input: $i) {{
  offer {{ {OFFER_FIELDS} withdrawnAt }} userErrors {{ field code message }} }} }}"""
OFFERS = f"{{ offers(first: 20) {{ edges {{ node {{ {OFFER_FIELDS} }} }} }} }}"
MY_OFFERS = "{ myOffers { id merchantName title description kind category multiplier endsAt } }"
RESULTS = """query($c: String!) { offerResults(code: $c) {
  results { windowStart windowEnd baselineStart segmentSize membersEarned uptake spendInWindow
    spendInBaseline extraSpend pointsCost merchantFundedPoints allianceFundedPoints refreshedAt }
  userErrors { field code message } } }"""
NODE = "query($id: ID!) { node(id: $id) { id ... on Offer { code title } } }"
REVERSE = """mutation($i: ReverseTransactionInput!) { reverseTransaction(input: $i) {
  userErrors { code } } }"""

NOW = datetime.now(UTC)
STARTED = NOW - timedelta(days=3)  # the offer has run for three days of its two weeks


async def owner_sql(db: Database, sql: str, **params: Any) -> list[Any]:
    """As the owner (the insights refresh's connection): segments and membership."""
    engine = db.owner_engine()
    try:
        async with engine.begin() as connection:
            result = await connection.execute(text(sql), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


async def segment(db: Database, tenant_id: int, members: list[str], code: str | None = None) -> str:
    """An active segment of ``tenant_id`` whose members are ``members`` (member numbers)."""
    code = code or unique("seg")
    rows = await owner_sql(
        db,
        "INSERT INTO customer_segments (tenant_id, code, name, definition, member_count, refreshed_at)"
        " VALUES (:t, :c, :c, '{}', :n, now()) RETURNING id",
        t=tenant_id,
        c=code,
        n=len(members),
    )
    if members:
        await owner_sql(
            db,
            "INSERT INTO customer_segment_members (segment_id, tenant_id, member_id)"
            " SELECT :s, :t, id FROM members WHERE member_number = ANY(:numbers)",
            s=rows[0].id,
            t=tenant_id,
            numbers=members,
        )
    return code


def offer_input(segment_code: str, **extra: Any) -> dict[str, Any]:
    return {
        "segmentCode": segment_code,
        "title": "New jeans: 2× points",
        "description": "Two weeks of double points on jeans.",
        "kind": "CATEGORY",
        "category": "jeans",
        "multiplier": "2",
        "startsAt": STARTED.isoformat(),
        "endsAt": (STARTED + timedelta(days=14)).isoformat(),
        "idempotencyKey": unique("k"),
    } | extra


async def create_offer(merchant: Any, segment_code: str, **extra: Any) -> dict[str, Any]:
    payload = (await merchant.api(CREATE, i=offer_input(segment_code, **extra)))["createOffer"]
    assert payload["userErrors"] == [], payload
    return payload["offer"]


async def earned_tx(merchant: Any, number: str, amount: str, **extra: Any) -> dict[str, Any]:
    payload = await earn(merchant, number, amount, **extra)
    assert payload["userErrors"] == [], payload
    return payload["transaction"]


def summary(tx: dict[str, Any]) -> tuple[int, list[tuple[str, int]]]:
    return tx["points"], [(line["rule"], line["points"]) for line in tx["breakdown"]]


def days_ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


# -- the bonus --------------------------------------------------------------------------------------


async def test_segment_members_get_the_offer_others_do_not_nor_outside_its_window(db, make_merchant):
    shop = await make_merchant()
    fan, other = await enroll(shop), await enroll(shop)
    fans = await segment(db, shop.tenant_id, [fan])
    offer = await create_offer(shop, fans, code=unique("jeans"))
    assert offer["status"] == "LIVE" and offer["segmentCode"] == fans and offer["multiplier"] == "2.00"
    line = f"offer:{offer['code']}"

    shown = await preview(shop, fan, "120.00", category="jeans")  # the POS screen says so before the sale
    assert shown["points"] == 240 and [b["rule"] for b in shown["breakdown"]] == ["base", line]
    assert (await preview(shop, other, "120.00", category="jeans"))["points"] == 120
    assert summary(await earned_tx(shop, fan, "120.00", category="jeans")) == (
        240,
        [("base", 120), (line, 120)],
    )
    assert summary(await earned_tx(shop, fan, "120.00", category="shoes")) == (120, [("base", 120)])
    assert summary(await earned_tx(shop, other, "120.00", category="jeans")) == (120, [("base", 120)])
    before = await earned_tx(shop, fan, "120.00", category="jeans", effectiveAt=days_ago(4))
    assert summary(before) == (120, [("base", 120)])

    items = [
        purchase(fan, "50.00", category="jeans"),
        purchase(other, "50.00", category="jeans"),
        purchase(fan, "50.00", category="jeans", effectiveAt=days_ago(3.5)),
    ]
    batch = (await shop.api(BATCH, i={"idempotencyKey": unique("k"), "items": items}))["earnPointsBatch"]
    assert [summary(r["transaction"]) for r in batch["results"]] == [
        (100, [("base", 50), (line, 50)]),
        (50, [("base", 50)]),
        (50, [("base", 50)]),
    ]


async def test_a_withdrawn_offer_stops_and_a_scheduled_one_never_starts(db, make_merchant):
    shop = await make_merchant()
    fan = await enroll(shop)
    fans = await segment(db, shop.tenant_id, [fan])
    live = await create_offer(shop, fans)
    scheduled = await create_offer(
        shop,
        fans,
        kind="TAG",
        category=None,
        tag="dress",
        startsAt=(NOW + timedelta(days=1)).isoformat(),
        endsAt=(NOW + timedelta(days=8)).isoformat(),
    )
    assert scheduled["status"] == "SCHEDULED"
    # The offer's rule changes only with the offer: members never read an offer whose bonus is gone.
    assert errors(await retire(shop.api, live["code"])) == [("code", "RULE_OF_OFFER")]
    redefined = await define_raw(shop.api, live["code"], "MULTIPLIER", {"multiplier": "3"})
    assert errors(redefined) == [("code", "RULE_OF_OFFER")]
    for offer in (live, scheduled):
        payload = (await shop.api(WITHDRAW, i={"code": offer["code"]}))["withdrawOffer"]
        assert payload["userErrors"] == [] and payload["offer"]["status"] == "WITHDRAWN", payload
    again = (await shop.api(WITHDRAW, i={"code": live["code"]}))["withdrawOffer"]
    assert errors(again) == [("code", "OFFER_WITHDRAWN")]
    assert (await earned_tx(shop, fan, "100.00", category="jeans"))["points"] == 100
    rules = await owner_sql(
        db,
        "SELECT code FROM earning_rules WHERE tenant_id = :t AND code = :c",
        t=shop.tenant_id,
        c=scheduled["code"],
    )
    assert rules == []  # the scheduled offer's rule is gone, so it never comes into force


# -- bad input ----------------------------------------------------------------------------------------


async def test_bad_offers_are_refused_with_user_errors(db, make_merchant, operator):
    shop, rival = await make_merchant(), await make_merchant()
    fans = await segment(db, shop.tenant_id, [await enroll(shop)])
    theirs = await segment(db, rival.tenant_id, [await enroll(rival)])
    archived = await segment(db, shop.tenant_id, [])
    await owner_sql(db, "UPDATE customer_segments SET status = 'archived' WHERE code = :c", c=archived)
    await create_offer(shop, fans, code=unique("first"))

    async def refusal(**extra: Any) -> list[tuple[str | None, str]]:
        return errors(
            (await shop.api(CREATE, i=offer_input(**({"segment_code": fans} | extra))))["createOffer"]
        )

    assert await refusal(segment_code="no-such-segment") == [("segmentCode", "UNKNOWN_SEGMENT")]
    assert await refusal(segment_code=theirs) == [("segmentCode", "UNKNOWN_SEGMENT")]
    assert await refusal(segment_code=archived) == [("segmentCode", "SEGMENT_ARCHIVED")]
    assert await refusal(endsAt=(STARTED - timedelta(days=1)).isoformat()) == [
        ("endsAt", "WINDOW_ENDS_BEFORE_START")
    ]
    assert await refusal(endsAt=(NOW - timedelta(hours=1)).isoformat()) == [("endsAt", "WINDOW_IN_PAST")]
    assert await refusal() == [("startsAt", "OFFER_OVERLAPS")]  # jeans ×2 to the same segment, same days
    assert await refusal(multiplier="1") == [("multiplier", "INVALID_MULTIPLIER")]
    assert await refusal(multiplier="12") == [("multiplier", "INVALID_MULTIPLIER")]
    assert await refusal(category=None) == [("category", "CATEGORY_REQUIRED")]
    assert await refusal(title=" ") == [("title", "INVALID_TITLE")]

    # Through earning rules directly: the segment must be the merchant's; campaigns cannot target.
    rule = {"category": "jeans", "multiplier": "2", "segment": theirs}
    assert errors(await define_raw(shop.api, unique("r"), "CATEGORY_RATE", rule)) == [
        ("segment", "UNKNOWN_SEGMENT")
    ]
    campaign = {"multiplier": "2", "segment": fans}
    assert errors(await define_raw(operator, unique("c"), "MULTIPLIER", campaign)) == [
        ("config", "SEGMENT_NOT_ALLOWED")
    ]


# -- who sees what ------------------------------------------------------------------------------------


async def test_a_merchant_cannot_see_measure_or_withdraw_anothers_offers(app, http, db, make_merchant):
    shop, rival = await make_merchant(), await make_merchant()
    fans = await segment(db, shop.tenant_id, [await enroll(shop)])
    offer = await create_offer(shop, fans)
    (row,) = await owner_sql(db, "SELECT id FROM offers WHERE code = :c", c=offer["code"])
    offer_pk = row.id
    await owner_sql(db, "SELECT refresh_offer_results()")  # so a summary row of A's exists

    assert [e["node"]["code"] for e in (await shop.api(OFFERS))["offers"]["edges"]] == [offer["code"]]
    assert (await rival.api(OFFERS))["offers"]["edges"] == []
    assert (await rival.api(NODE, id=offer["id"]))["node"] is None
    measured = (await rival.api(RESULTS, c=offer["code"]))["offerResults"]
    assert measured["results"] is None and errors(measured) == [("code", "OFFER_NOT_FOUND")]
    assert errors((await rival.api(WITHDRAW, i={"code": offer["code"]}))["withdrawOffer"]) == [
        ("code", "OFFER_NOT_FOUND")
    ]
    # Row-level security, as the application role with the rival's context.
    async with db.transaction(AccessContext("merchant", tenant_id=rival.tenant_id)) as session:
        seen = await run_sql(session, text("SELECT count(*) FROM offers"))
        assert seen.scalar_one() == 0
        rules = await run_sql(session, text("SELECT count(*) FROM earning_rules WHERE config ? 'segment'"))
        assert rules.scalar_one() == 0
        measured = await run_sql(session, text("SELECT count(*) FROM offer_results"))
        assert measured.scalar_one() == 0
        direct = await run_sql(
            session,
            text("SELECT count(*) FROM offer_measure(ARRAY[CAST(:id AS bigint)], now())"),
            {"id": offer_pk},
        )
        assert direct.scalar_one() == 0  # the measurement runs under the caller's row security


async def test_a_member_sees_only_the_offers_of_their_segments(app, http, db, make_merchant):
    shop = await make_merchant()
    fan, other = await enroll(shop), await enroll(shop)
    fans = await segment(db, shop.tenant_id, [fan])
    offer = await create_offer(shop, fans)
    await create_offer(
        shop,
        await segment(db, shop.tenant_id, [other]),
        kind="TAG",
        category=None,
        tag="dress",
        title="Dresses: double points",
    )

    mine = (await (await member_api(app, http, db, fan))(MY_OFFERS))["myOffers"]
    assert [(o["title"], o["category"], o["multiplier"]) for o in mine] == [
        ("New jeans: 2× points", "jeans", "2.00")
    ]
    assert mine[0]["id"] == offer["id"] and mine[0]["merchantName"] == f"Merchant {shop.code}"
    theirs = (await (await member_api(app, http, db, other))(MY_OFFERS))["myOffers"]
    assert [o["title"] for o in theirs] == ["Dresses: double points"]
    # The member app cannot read another segment's offer or its rule with raw SQL either.
    context = AccessContext("member", member_id=await member_id(db, other))
    async with db.transaction(context) as session:
        titles = (await run_sql(session, text("SELECT title FROM offers ORDER BY id"))).scalars().all()
        assert titles == ["Dresses: double points"]
        rules = (
            await run_sql(
                session, text("SELECT code FROM earning_rules WHERE code = :c"), {"c": offer["code"]}
            )
        ).all()
        assert rules == []
    # A merchant token is not a member.
    response = await shop.api.post(MY_OFFERS)
    assert response.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


# -- measured afterwards ------------------------------------------------------------------------------


async def test_results_match_the_hand_computed_ledger(app, http, db, make_merchant, operator):
    """Three segment members and one outsider; the offer started three days ago, so the baseline
    is the three days before it.

    baseline (5 days ago): a 50.00 jeans, b 30.00 shoes                  -> 80.00
    window: a 100.00 jeans (+100 bonus), a 20.00 shoes, b 40.50 jeans (+40) -> 160.50
            c 60.00 jeans (+60) then reversed: counts nowhere
            d (not in the segment) 200.00 jeans: counts nowhere
    uptake 2 of 3 = 0.6667; extra spend 80.50; cost 140 points, all merchant-funded.
    """
    shop = await make_merchant()
    a, b, c, d = [await enroll(shop) for _ in range(4)]
    fans = await segment(db, shop.tenant_id, [a, b, c])
    offer = await create_offer(shop, fans)
    await earned_tx(shop, a, "50.00", category="jeans", effectiveAt=days_ago(5))
    await earned_tx(shop, b, "30.00", category="shoes", effectiveAt=days_ago(5))
    await earned_tx(shop, d, "70.00", category="jeans", effectiveAt=days_ago(5))
    await earned_tx(shop, a, "100.00", category="jeans", effectiveAt=days_ago(1))
    await earned_tx(shop, a, "20.00", category="shoes")
    assert (await earned_tx(shop, b, "40.50", category="jeans"))["points"] == 80
    reversed_earn = await earned_tx(shop, c, "60.00", category="jeans")
    await earned_tx(shop, d, "200.00", category="jeans")
    reverse = await shop.api(
        REVERSE, i={"transactionId": reversed_earn["id"], "reason": "returned", "idempotencyKey": unique("k")}
    )
    assert reverse["reverseTransaction"]["userErrors"] == []
    await earned_tx(shop, a, "10.00", category="jeans", effectiveAt=days_ago(6.5))  # before the baseline

    expected = {
        "segmentSize": 3,
        "membersEarned": 2,
        "uptake": "0.6667",
        "spendInWindow": "160.50",
        "spendInBaseline": "80.00",
        "extraSpend": "80.50",
        "pointsCost": 140,
        "merchantFundedPoints": 140,
        "allianceFundedPoints": 0,
    }

    async def measured() -> dict[str, Any]:
        payload = (await shop.api(RESULTS, c=offer["code"]))["offerResults"]
        assert payload["userErrors"] == []
        return payload["results"]

    def figures(results: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in results.items() if not k.endswith(("Start", "End", "At"))}

    now_measured = await measured()  # not refreshed yet: measured on request
    assert figures(now_measured) == expected and now_measured["refreshedAt"] is None
    (refreshed,) = await owner_sql(db, "SELECT refresh_offer_results() AS n")
    assert refreshed.n >= 1
    results = await measured()  # from the summary the refresh keeps
    assert figures(results) == expected and results["refreshedAt"] is not None
    start, end, baseline = (
        datetime.fromisoformat(results[k]) for k in ("windowStart", "windowEnd", "baselineStart")
    )
    assert start == STARTED and start - baseline == end - start
    assert timedelta(0) <= datetime.now(UTC) - end < timedelta(minutes=5)  # a live offer, measured so far
