"""Event bonuses through the GraphQL API (per-member limits, idempotency, concurrency) and the
daily birthday job (running it twice grants each gift once)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from alliance.db.database import OPERATOR
from alliance.earning.jobs import grant_birthday_gifts
from alliance.ledger.service import verify_ledger
from tests.conftest import random_phone, unique

ENROLL = """mutation($i: EnrollMemberInput!) { enrollMember(input: $i) {
  member { memberNumber } userErrors { field code message } } }"""
DEFINE = """mutation($i: DefineEarningRuleInput!) { defineEarningRule(input: $i) {
  rule { code kind config } userErrors { field code message } } }"""
RETIRE = """mutation($i: RetireEarningRuleInput!) { retireEarningRule(input: $i) {
  rule { code effectiveUntil } userErrors { field code message } } }"""
AWARD = """mutation($i: AwardEventBonusInput!) { awardEventBonus(input: $i) {
  transaction { id kind points asset reason breakdown { rule points asset note } }
  balance { asset available held } userErrors { field code message } } }"""
MEMBER = """query($n: String!) { member(memberNumber: $n) {
  balances { asset available held }
  transactions(first: 20) { edges { node { kind points asset reason } } } } }"""

SURVEY = {"event": "SURVEY", "points": 50, "limit": {"count": 1, "per": "year"}}


async def enroll(merchant: Any, birthday: date | None = None) -> str:
    data = await merchant.api(
        ENROLL,
        i={
            "phone": random_phone(),
            "externalRef": unique("c"),
            "birthday": birthday.isoformat() if birthday else None,
        },
    )
    assert data["enrollMember"]["userErrors"] == [], data
    return data["enrollMember"]["member"]["memberNumber"]


async def define(merchant: Any, code: str, config: dict[str, Any]) -> None:
    data = await merchant.api(DEFINE, i={"code": code, "kind": "EVENT_BONUS", "config": config})
    assert data["defineEarningRule"]["userErrors"] == [], data


async def award(merchant: Any, number: str, event: str = "SURVEY", key: str | None = None) -> dict[str, Any]:
    data = await merchant.api(
        AWARD, i={"memberNumber": number, "event": event, "idempotencyKey": key or unique("k")}
    )
    return data["awardEventBonus"]


def codes(payload: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(e["field"], e["code"]) for e in payload["userErrors"]]


async def member(merchant: Any, number: str) -> dict[str, Any]:
    return (await merchant.api(MEMBER, n=number))["member"]


async def test_survey_bonus_once_a_year_and_replays(make_merchant):
    merchant = await make_merchant()
    await define(merchant, "survey", SURVEY)
    number, neighbour = await enroll(merchant), await enroll(merchant)

    first_key = unique("k")
    first = await award(merchant, number, key=first_key)
    assert first["userErrors"] == []
    tx = first["transaction"]
    assert (tx["kind"], tx["points"], tx["asset"], tx["reason"]) == ("AWARD", 50, "POINTS", "SURVEY")
    assert tx["breakdown"] == [{"rule": "survey", "points": 50, "asset": "POINTS", "note": "SURVEY"}]
    assert first["balance"] == {"asset": "POINTS", "available": 50, "held": 0}

    second = await award(merchant, number)
    assert second["transaction"] is None
    assert codes(second) == [("event", "EVENT_LIMIT_REACHED")]

    replay = await award(merchant, number, key=first_key)
    assert replay == first

    assert (await award(merchant, neighbour))["transaction"]["points"] == 50  # the limit is per member
    assert (await member(merchant, number))["balances"] == [{"asset": "POINTS", "available": 50, "held": 0}]


async def test_event_without_a_rule_is_no_such_bonus(make_merchant):
    merchant = await make_merchant()
    await define(merchant, "survey", SURVEY)
    number = await enroll(merchant)

    refused = await award(merchant, number, event="FEEDBACK")
    assert refused["transaction"] is None
    assert codes(refused) == [("event", "NO_SUCH_BONUS")]

    elsewhere = await make_merchant()  # another merchant's rule is not this one's
    assert codes(await award(elsewhere, await enroll(elsewhere))) == [("event", "NO_SUCH_BONUS")]
    assert (await member(merchant, number))["balances"] == []


async def test_two_rules_for_one_event_are_ambiguous(make_merchant):
    merchant = await make_merchant()
    await define(merchant, "survey", SURVEY)
    data = await merchant.api(
        DEFINE, i={"code": "survey-bis", "kind": "EVENT_BONUS", "config": SURVEY | {"points": 80}}
    )
    assert data["defineEarningRule"]["rule"] is None
    assert codes(data["defineEarningRule"]) == [("config", "AMBIGUOUS_RULE")]


async def test_limit_holds_under_concurrency(make_merchant):
    merchant = await make_merchant()
    await define(merchant, "survey", SURVEY)
    number = await enroll(merchant)

    results = await asyncio.gather(*(award(merchant, number) for _ in range(10)))

    granted = [r for r in results if r["transaction"] is not None]
    refused = [r for r in results if r["transaction"] is None]
    assert len(granted) == 1 and granted[0]["transaction"]["points"] == 50
    assert all(codes(r) == [("event", "EVENT_LIMIT_REACHED")] for r in refused)
    assert len(refused) == 9
    assert (await member(merchant, number))["balances"] == [{"asset": "POINTS", "available": 50, "held": 0}]


async def test_limit_counts_per_period(make_merchant):
    merchant = await make_merchant()
    await define(
        merchant, "class", {"event": "SERVICE_EVENT", "points": 30, "limit": {"count": 2, "per": "day"}}
    )
    number = await enroll(merchant)
    outcomes = [await award(merchant, number, event="SERVICE_EVENT") for _ in range(3)]
    assert [o["transaction"]["points"] if o["transaction"] else codes(o) for o in outcomes] == [
        30,
        30,
        [("event", "EVENT_LIMIT_REACHED")],
    ]


async def test_green_sharing_bonus_in_green_points_once_by_default(make_merchant):
    merchant = await make_merchant()
    await define(merchant, "green-share", {"event": "GREEN_SHARING", "points": 20, "asset": "GREEN"})
    number = await enroll(merchant)

    shared = await award(merchant, number, event="GREEN_SHARING")
    assert (shared["transaction"]["asset"], shared["transaction"]["points"]) == ("GREEN", 20)
    assert shared["balance"] == {"asset": "GREEN", "available": 20, "held": 0}
    assert codes(await award(merchant, number, event="GREEN_SHARING")) == [("event", "EVENT_LIMIT_REACHED")]


async def test_same_key_replays_even_after_the_rule_is_retired(make_merchant):
    """A retry of a granted bonus gets the original answer, even once the rule is gone (DESIGN.md rule 4)."""
    merchant = await make_merchant()
    await define(merchant, "survey", SURVEY)
    number = await enroll(merchant)
    key = unique("k")
    first = await award(merchant, number, key=key)
    assert first["userErrors"] == []

    retired = await merchant.api(RETIRE, i={"code": "survey"})
    assert retired["retireEarningRule"]["userErrors"] == []

    assert await award(merchant, number, key=key) == first


async def test_birthday_job_grants_each_gift_once(make_merchant, db, settings):
    merchant = await make_merchant()
    await define(
        merchant, "birthday", {"event": "BIRTHDAY", "points": 88, "limit": {"count": 1, "per": "year"}}
    )
    today = datetime.now(ZoneInfo(settings.time_zone)).date()
    other_month = today.month % 12 + 1
    ann = await enroll(merchant, date(1990, today.month, 1))
    bo = await enroll(merchant, date(2001, today.month, 28))
    cy = await enroll(merchant, date(1985, other_month, 15))
    no_birthday = await enroll(merchant)

    first = await grant_birthday_gifts(db, settings.time_zone)
    second = await grant_birthday_gifts(db, settings.time_zone)

    assert first.granted >= 2 and first.tenants >= 1
    assert second.granted == 0 and second.already_granted >= 2
    for number in (ann, bo):
        state = await member(merchant, number)
        assert state["balances"] == [{"asset": "POINTS", "available": 88, "held": 0}]
        gifts = [edge["node"] for edge in state["transactions"]["edges"]]
        assert gifts == [
            {"kind": "AWARD", "points": 88, "asset": "POINTS", "reason": f"BIRTHDAY: {today.year}"}
        ]
    for number in (cy, no_birthday):
        state = await member(merchant, number)
        assert state["balances"] == [] and state["transactions"]["edges"] == []

    # The job's gift counts against the rule's limit for a merchant's own award as well.
    assert codes(await award(merchant, ann, event="BIRTHDAY")) == [("event", "EVENT_LIMIT_REACHED")]

    async with db.transaction(OPERATOR) as session:
        assert await verify_ledger(session) == []


async def test_birthday_job_ignores_merchants_whose_rule_is_not_in_force(make_merchant, db, settings):
    merchant = await make_merchant()
    data = await merchant.api(
        DEFINE,
        i={
            "code": "birthday",
            "kind": "EVENT_BONUS",
            "config": {"event": "BIRTHDAY", "points": 88},
            "effectiveFrom": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
        },
    )
    assert data["defineEarningRule"]["userErrors"] == []
    today = datetime.now(ZoneInfo(settings.time_zone)).date()
    number = await enroll(merchant, date(1990, today.month, 2))

    await grant_birthday_gifts(db, settings.time_zone)

    assert (await member(merchant, number))["balances"] == []
