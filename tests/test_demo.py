"""`alliance demo` seeds a working alliance, idempotently, with the credentials the README uses."""

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from alliance.api.ids import from_global_id
from alliance.demo import DEMO_MEMBERS, seed_demo
from alliance.earning.engine import schedule_matches
from tests.conftest import Api, client_token, unique

EARN = """mutation($i: EarnPointsInput!) { earnPoints(input: $i) {
  transaction { points breakdown { rule points } } userErrors { code } } }"""
ENROLL = "mutation($i: EnrollMemberInput!) { enrollMember(input: $i) { member { memberNumber } created } }"
SHANGHAI = ZoneInfo("Asia/Shanghai")


async def test_demo_seeds_twice_and_its_market_day_rule_works(db, http, app):
    first = await seed_demo(db)
    again = await seed_demo(db)
    assert [(c.role, c.tenant, c.client_id) for c in first] == [
        (c.role, c.tenant, c.client_id) for c in again
    ]
    mart = next(c for c in first if c.tenant == "sunrise-mart")
    api = Api(http, await client_token(http, mart.client_id, mart.client_secret))
    # Enrolling a demo member again under the demo's reference is a harmless retry: it names them.
    enrolled = await api(ENROLL, i={"phone": DEMO_MEMBERS[0][0], "externalRef": "sunrise-mart-C0001"})
    assert enrolled["enrollMember"]["created"] is False
    number = enrolled["enrollMember"]["member"]["memberNumber"]

    now = datetime.now(SHANGHAI)
    market_day = next(
        day
        for day in (now.date() - timedelta(days=n) for n in range(1, 7))
        if schedule_matches({"every": {"anchor": "2026-11-04", "days": 5}}, day)
    )
    at = datetime.combine(market_day, time(12), SHANGHAI)
    data = await api(
        EARN,
        i={
            "memberNumber": number,
            "amount": "100",
            "orderRef": unique("o"),
            "idempotencyKey": unique("k"),
            "effectiveAt": at.isoformat(),
        },
    )
    assert data["earnPoints"]["transaction"]["breakdown"] == [
        {"rule": "base", "points": 100},
        {"rule": "market-day-double", "points": 100},
    ]

    # A member sees the whole alliance's catalog: the hotel's upgrades and the 4S shop's service.
    member_id = (await api("query($n: String!) { member(memberNumber: $n) { id } }", n=number))["member"][
        "id"
    ]
    assert member_id
    token = app.state.token_issuer.for_member(from_global_id(member_id)[1], number).access_token
    catalog = await Api(http, token)(
        "{ rewards(first: 100, filter: {tenantCode: null}) { edges { node { name } } } }"
    )
    names = {edge["node"]["name"] for edge in catalog["rewards"]["edges"]}
    assert {"Room upgrade", "Basic maintenance (worth 500 CNY)", "5 L peanut oil"} <= names


async def test_the_demo_shows_insights_from_its_history(db, http):
    """A newcomer's demo is not empty: the history is folded into the insights and the
    supermarket's starter segment has its regulars."""
    await seed_demo(db)
    mart = next(c for c in await seed_demo(db) if c.tenant == "sunrise-mart")
    api = Api(http, await client_token(http, mart.client_id, mart.client_secret))
    answer = await api(
        "{ merchantInsights { segments { code memberCount } members(first: 5) { edges { node { visits } } } } }"
    )
    insights = answer["merchantInsights"]
    (regulars,) = [s for s in insights["segments"] if s["code"] == "regulars"]
    assert regulars["memberCount"] >= 1
    assert any(edge["node"]["visits"] >= 2 for edge in insights["members"]["edges"])
