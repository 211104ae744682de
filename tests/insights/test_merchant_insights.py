"""Each merchant insight against a small hand-computed fixture built through the API."""

from __future__ import annotations

from alliance.insights.queries import month_start
from alliance.tenants.models import TenantCategory
from tests.conftest import random_phone, unique
from tests.insights.helpers import REVERSE, business_today, date_transactions, days_ago, earn, run_refresh
from tests.ledger.test_worked_example import enroll

PROFILE = """query($n: String!) { merchantInsights { member(memberNumber: $n) {
  memberNumber visits visitsLast90Days spend averageSpend pointsEarned firstVisit lastVisit
  topCategories { label visits spend } topTags { label visits spend } } } }"""
OVERVIEW = """{ merchantInsights {
  topCategories(months: 12) { label visits spend } topTags(months: 12) { label visits spend }
  retention { cohortMonth members repeatMembers repeatRate }
  risingMembers(first: 10) { edges { node { memberNumber recentVisitDays baselineVisitDays expectedVisitDays reason } } }
  members(first: 10) { edges { node { memberNumber visits } } } } }"""
CREATE = """mutation($i: CreateSegmentInput!) { createSegment(input: $i) {
  segment { code status memberCount definition { category minMonths windowMonths } } userErrors { field code } } }"""
SEGMENT = """query($c: String!) { merchantInsights { segment(code: $c) { code memberCount
  members(first: 10) { edges { node { memberNumber } } } } } }"""


async def test_member_profiles_tops_segments_rising_and_retention(settings, db, make_merchant):
    shop = await make_merchant(TenantCategory.BABY_GOODS)
    a, b, c = [await enroll(shop, random_phone()) for _ in range(3)]
    dated: dict[int, object] = {}
    a_points = 0
    for amount, category, tags, days in (
        ("100", "baby-formula", ["imported"], 0),
        ("50", "baby-formula", None, 35),
        ("30", "snacks", ["imported", "promo"], 70),
    ):
        pk, points = await earn(shop, a, amount, category, tags)
        dated[pk] = days_ago(settings, days)
        a_points += points
    await earn(shop, b, "80", "baby-formula")
    refunded, _ = await earn(shop, b, "20", "toys")
    reversed_ = await shop.api(
        REVERSE, i={"transactionId": _gid(refunded), "reason": "refund", "idempotencyKey": unique("k")}
    )
    assert reversed_["reverseTransaction"]["userErrors"] == []
    # C: 3 baseline days (30, 40, 60 days ago), then 5 days in the last 4 weeks.
    for days in (30, 40, 60, 0, 1, 2, 3, 4):
        pk, _ = await earn(shop, c, "10", "snacks")
        dated[pk] = days_ago(settings, days)
    await date_transactions(settings, dated)  # type: ignore[arg-type]

    segment = {
        "code": "formula-regulars",
        "name": "Formula regulars",
        "definition": {"category": "baby-formula", "minMonths": 2, "windowMonths": 3},
    }
    created = (await shop.api(CREATE, i=segment))["createSegment"]
    assert created["userErrors"] == [] and created["segment"]["memberCount"] == 0
    await run_refresh(db, settings)

    profile = (await shop.api(PROFILE, n=a))["merchantInsights"]["member"]
    today = business_today(settings)
    assert profile == {
        "memberNumber": a,
        "visits": 3,
        "visitsLast90Days": 3,
        "spend": "180.00",
        "averageSpend": "60.00",
        "pointsEarned": a_points,
        "firstVisit": str(today.fromordinal(today.toordinal() - 70)),
        "lastVisit": str(today),
        "topCategories": [
            {"label": "baby-formula", "visits": 2, "spend": "150.00"},
            {"label": "snacks", "visits": 1, "spend": "30.00"},
        ],
        "topTags": [
            {"label": "imported", "visits": 2, "spend": "130.00"},
            {"label": "promo", "visits": 1, "spend": "30.00"},
        ],
    }
    b_profile = (await shop.api(PROFILE, n=b))["merchantInsights"]["member"]
    assert (b_profile["visits"], b_profile["spend"], b_profile["topCategories"]) == (
        1,
        "80.00",
        [{"label": "baby-formula", "visits": 1, "spend": "80.00"}],
    )

    overview = (await shop.api(OVERVIEW))["merchantInsights"]
    assert overview["topCategories"] == [
        {"label": "snacks", "visits": 9, "spend": "110.00"},
        {"label": "baby-formula", "visits": 3, "spend": "230.00"},
    ]
    assert overview["topTags"] == [
        {"label": "imported", "visits": 2, "spend": "130.00"},
        {"label": "promo", "visits": 1, "spend": "30.00"},
    ]
    # Everyone enrolled this month; A (3 days) and C (8 days) came back, B (1 day) did not.
    assert overview["retention"] == [
        {"cohortMonth": str(month_start(today)), "members": 3, "repeatMembers": 2, "repeatRate": "0.6667"}
    ]
    # C: λ = 3 baseline days × 4/12 weeks = 1; 5 recent days ≥ 1 + 3·√1 = 4. A: 1 recent day < 3.
    rising = [e["node"] for e in overview["risingMembers"]["edges"]]
    assert [
        (r["memberNumber"], r["recentVisitDays"], r["baselineVisitDays"], r["expectedVisitDays"])
        for r in rising
    ] == [(c, 5, 3, "1.0000")]
    assert rising[0]["reason"] in ("VISITS", "VISITS_AND_POINTS")
    assert [e["node"]["memberNumber"] for e in overview["members"]["edges"]] == [a, b, c]

    # Bought formula in 2 of the last 3 months: A only (B bought it this month alone).
    seg = (await shop.api(SEGMENT, c="formula-regulars"))["merchantInsights"]["segment"]
    assert seg["memberCount"] == 1 and [e["node"]["memberNumber"] for e in seg["members"]["edges"]] == [a]


def _gid(pk: int) -> str:
    from alliance.api.ids import to_global_id

    return to_global_id("LedgerTransaction", pk)


async def test_segment_definitions_are_validated(make_merchant):
    shop = await make_merchant()
    for definition, field in (
        ({"category": "x", "windowMonths": 3}, "definition.minMonths"),
        ({"category": "x", "tag": "y", "minMonths": 1, "windowMonths": 3}, "definition"),
        ({"windowMonths": 3}, "definition"),
        ({"minVisits": 2, "windowMonths": 30}, "definition.windowMonths"),
        ({"minSpend": "1.001", "windowMonths": 2}, "definition.minSpend"),
        ({"category": "x", "minMonths": 4, "windowMonths": 3}, "definition.minMonths"),
    ):
        payload = (await shop.api(CREATE, i={"code": unique("s"), "name": "n", "definition": definition}))[
            "createSegment"
        ]
        assert payload["userErrors"] == [{"field": field, "code": "INVALID_SEGMENT_DEFINITION"}], definition
    ok = {
        "code": "big-spenders",
        "name": "Big spenders",
        "definition": {"minSpend": "500", "windowMonths": 2},
        "idempotencyKey": "seg-1",
    }
    first = (await shop.api(CREATE, i=ok))["createSegment"]
    again = (await shop.api(CREATE, i=ok))["createSegment"]
    assert first == again and first["userErrors"] == []
    taken = (await shop.api(CREATE, i=ok | {"idempotencyKey": None}))["createSegment"]
    assert taken["userErrors"] == [{"field": "code", "code": "SEGMENT_CODE_TAKEN"}]


SINCE = """query($c: String!) { merchantInsights { segment(code: $c) { status memberCount
  members(first: 5) { edges { node { memberNumber since } } } } } }"""
ARCHIVE = """mutation($i: ArchiveSegmentInput!) { archiveSegment(input: $i) {
  segment { status } userErrors { code } } }"""


async def test_members_who_stay_keep_their_since_and_archiving_empties_a_segment(settings, db, make_merchant):
    shop = await make_merchant()
    number = await enroll(shop, random_phone())
    await earn(shop, number, "25")
    definition = {"minVisits": 1, "windowMonths": 1}
    assert (await shop.api(CREATE, i={"code": "visitors", "name": "Visitors", "definition": definition}))[
        "createSegment"
    ]["userErrors"] == []
    await run_refresh(db, settings)
    first = (await shop.api(SINCE, c="visitors"))["merchantInsights"]["segment"]
    assert first["memberCount"] == 1
    await earn(shop, number, "5")
    await run_refresh(db, settings)
    again = (await shop.api(SINCE, c="visitors"))["merchantInsights"]["segment"]
    assert again["members"] == first["members"]  # same member, same since

    archived = (await shop.api(ARCHIVE, i={"code": "visitors"}))["archiveSegment"]
    assert archived == {"segment": {"status": "ARCHIVED"}, "userErrors": []}
    await run_refresh(db, settings)
    gone = (await shop.api(SINCE, c="visitors"))["merchantInsights"]["segment"]
    assert (gone["status"], gone["memberCount"], gone["members"]["edges"]) == ("ARCHIVED", 0, [])


async def test_who_may_ask(operator, make_merchant, db, http):
    from tests.conftest import Api, client_token, new_client

    shop = await make_merchant()
    errors = await operator.errors("{ merchantInsights { retention { members } } }")
    assert errors[0]["extensions"]["code"] == "TENANT_REQUIRED"
    assert (
        await operator(f'{{ merchantInsights(tenantCode: "{shop.code}") {{ retention {{ members }} }} }}')
    )["merchantInsights"] == {"retention": []}
    client_id, secret = await new_client(db, "merchant", shop.tenant_id, ["tenants:read"])
    narrow = Api(http, await client_token(http, client_id, secret))
    errors = await narrow.errors("{ merchantInsights { retention { members } } }")
    assert errors[0]["extensions"]["code"] == "FORBIDDEN"
