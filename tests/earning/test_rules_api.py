"""Earning rules through the GraphQL API: every rule type, schedules, stacking, caps, campaigns,
previews, versioning and bad input — each checked by what the member is told (the breakdown) and
what the ledger holds."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from alliance.db.database import OPERATOR, run_sql
from alliance.earning import service as earning_service
from alliance.tenants.models import TenantCategory
from tests.conftest import random_phone, unique

TZ = ZoneInfo("Asia/Shanghai")  # Settings.time_zone and the assets' time zone

ENROLL = """mutation($i: EnrollMemberInput!) { enrollMember(input: $i) {
  member { memberNumber } userErrors { field code message } } }"""
CREATE_STORE = """mutation($i: CreateStoreInput!) { createStore(input: $i) {
  store { code } userErrors { field code message } } }"""
TX_FIELDS = "id kind points asset effectiveAt breakdown { rule points asset note }"
EARN = f"""mutation($i: EarnPointsInput!) {{ earnPoints(input: $i) {{
  transaction {{ {TX_FIELDS} }} balance {{ asset available held }} userErrors {{ field code message }} }} }}"""
PREVIEW = """mutation($i: PreviewEarnInput!) { previewEarn(input: $i) {
  preview { points breakdown { rule points asset note } otherAssets { rule points asset note } }
  userErrors { field code message } } }"""
BATCH = f"""mutation($i: EarnPointsBatchInput!) {{ earnPointsBatch(input: $i) {{
  results {{ index transaction {{ {TX_FIELDS} }} userErrors {{ field code message }} }}
  userErrors {{ field code message }} }} }}"""
RULE_FIELDS = "id code kind config fundedBy campaign effectiveFrom effectiveUntil"
DEFINE = f"""mutation($i: DefineEarningRuleInput!) {{ defineEarningRule(input: $i) {{
  rule {{ {RULE_FIELDS} }} userErrors {{ field code message }} }} }}"""
RETIRE = f"""mutation($i: RetireEarningRuleInput!) {{ retireEarningRule(input: $i) {{
  rule {{ {RULE_FIELDS} }} userErrors {{ field code message }} }} }}"""
RULES = f"query($at: DateTime) {{ earningRules(at: $at) {{ {RULE_FIELDS} }} }}"
MEMBER = f"""query($n: String!) {{ member(memberNumber: $n) {{
  balances {{ asset available held }}
  transactions(first: 50) {{ edges {{ node {{ {TX_FIELDS} }} }} }} }} }}"""
ASSIGN_TIER = """mutation($i: AssignMemberTierInput!) { assignMemberTier(input: $i) {
  tier { code } userErrors { field code message } } }"""
TIERS = "{ tiers { code rank earnMultiplier } }"

BASE_NOTE = "1 per CNY"
LONG_AGO = datetime.now(UTC) - timedelta(days=10)  # rules in force for every backdated earn below


# -- helpers ---------------------------------------------------------------------------------------


def local_today() -> date:
    return datetime.now(TZ).date()


def local_noon(days_ago: int) -> tuple[date, str]:
    """A local calendar day within the last week and noon of it (Asia/Shanghai) as effectiveAt."""
    day = local_today() - timedelta(days=days_ago)
    return day, datetime.combine(day, time(12), TZ).isoformat()


def lines(transaction_or_preview: dict[str, Any], key: str = "breakdown") -> list[tuple[str, int, str, str]]:
    return [(x["rule"], x["points"], x["asset"], x["note"]) for x in transaction_or_preview[key]]


def base(points: int, note: str = BASE_NOTE) -> tuple[str, int, str, str]:
    return ("base", points, "POINTS", note)


def bonus(rule: str, points: int, multiplier: str, highest: bool = True) -> tuple[str, int, str, str]:
    return (rule, points, "POINTS", f"×{multiplier} (highest applies)" if highest else f"×{multiplier}")


async def enroll(merchant: Any, birthday: str | None = None) -> str:
    data = await merchant.api(
        ENROLL, i={"phone": random_phone(), "externalRef": unique("c"), "birthday": birthday}
    )
    assert data["enrollMember"]["userErrors"] == [], data
    return data["enrollMember"]["member"]["memberNumber"]


async def create_store(merchant: Any, code: str | None = None) -> str:
    code = code or unique("S")
    data = await merchant.api(CREATE_STORE, i={"code": code, "name": f"Store {code}"})
    assert data["createStore"]["userErrors"] == [], data
    return code


async def define_raw(api: Any, code: str, kind: str, config: Any, **extra: Any) -> dict[str, Any]:
    data = await api(DEFINE, i={"code": code, "kind": kind, "config": config, **extra})
    return data["defineEarningRule"]


async def define(api: Any, code: str, kind: str, config: Any, **extra: Any) -> dict[str, Any]:
    """A rule in force from ten days ago (so backdated earns see it) unless told otherwise."""
    extra.setdefault("effectiveFrom", LONG_AGO.isoformat())
    payload = await define_raw(api, code, kind, config, **extra)
    assert payload["userErrors"] == [], payload
    return payload["rule"]


async def retire(api: Any, code: str) -> dict[str, Any]:
    return (await api(RETIRE, i={"code": code}))["retireEarningRule"]


def purchase(number: str, amount: str, **extra: Any) -> dict[str, Any]:
    return {"memberNumber": number, "amount": amount, "orderRef": unique("o"), **extra}


async def earn(merchant: Any, number: str, amount: str, **extra: Any) -> dict[str, Any]:
    data = await merchant.api(EARN, i=purchase(number, amount, idempotencyKey=unique("k"), **extra))
    return data["earnPoints"]


async def earned(merchant: Any, number: str, amount: str, **extra: Any) -> dict[str, Any]:
    """The transaction of an earn that must succeed."""
    payload = await earn(merchant, number, amount, **extra)
    assert payload["userErrors"] == [], payload
    return payload["transaction"]


async def preview(merchant: Any, number: str, amount: str, **extra: Any) -> dict[str, Any]:
    data = await merchant.api(PREVIEW, i={"memberNumber": number, "amount": amount, **extra})
    assert data["previewEarn"]["userErrors"] == [], data
    return data["previewEarn"]["preview"]


async def member(api: Any, number: str) -> dict[str, Any]:
    return (await api(MEMBER, n=number))["member"]


async def balances(api: Any, number: str) -> dict[str, int]:
    return {b["asset"]: b["available"] for b in (await member(api, number))["balances"]}


async def lots_of(db: Any, number: str) -> list[tuple[int | None, str, int]]:
    async with db.transaction(OPERATOR) as session:
        rows = (
            await run_sql(
                session,
                text(
                    "SELECT l.issuer_tenant_id, l.asset, l.amount FROM lots l JOIN members m ON m.id = l.member_id"
                    " WHERE m.member_number = :n ORDER BY l.id"
                ),
                {"n": number},
            )
        ).all()
    return [(row.issuer_tenant_id, row.asset, row.amount) for row in rows]


def errors(payload: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(e["field"], e["code"]) for e in payload["userErrors"]]


# -- base rate, category and tag rates, co-earned GREEN -----------------------------------------------


@pytest.mark.parametrize(("rounding", "expected"), [("floor", 12), ("round", 13), ("ceil", 13)])
async def test_base_rate_rounding(make_merchant, rounding, expected):
    merchant = await make_merchant()
    await define(merchant.api, "base", "BASE", {"rate": "0.5", "rounding": rounding})
    number = await enroll(merchant)

    tx = await earned(merchant, number, "25.30")  # 12.65 points before rounding

    assert (tx["kind"], tx["points"], tx["asset"]) == ("EARN", expected, "POINTS")
    assert lines(tx) == [base(expected, "0.5 per CNY")]


async def test_default_base_rate_is_one_point_per_cny_rounded_down(make_merchant):
    merchant = await make_merchant()
    number = await enroll(merchant)
    tx = await earned(merchant, number, "99.99")
    assert (tx["points"], lines(tx)) == (99, [base(99)])


async def test_minimum_spend(make_merchant):
    merchant = await make_merchant()
    await define(merchant.api, "base", "BASE", {"rate": "1", "minimumSpend": "50"})
    number = await enroll(merchant)

    below = await earn(merchant, number, "49.99")
    assert below["transaction"] is None
    assert errors(below) == [("amount", "NO_POINTS_EARNED")]
    shown = await preview(merchant, number, "49.99")
    assert (shown["points"], lines(shown)) == (0, [base(0, "below the minimum spend of 50")])

    at_minimum = await earned(merchant, number, "50.00")
    assert (at_minimum["points"], lines(at_minimum)) == (50, [base(50)])
    assert await balances(merchant.api, number) == {"POINTS": 50}


async def test_category_rate_baby_formula_earns_double(make_merchant):
    merchant = await make_merchant(TenantCategory.BABY_GOODS)
    await define(merchant.api, "formula-2x", "CATEGORY_RATE", {"category": "baby_formula", "multiplier": "2"})
    number = await enroll(merchant)

    formula = await earned(merchant, number, "100", category="baby_formula")
    assert (formula["points"], lines(formula)) == (200, [base(100), bonus("formula-2x", 100, "2")])

    toys = await earned(merchant, number, "100", category="toys")
    assert (toys["points"], lines(toys)) == (100, [base(100)])


async def test_tag_multiplier(make_merchant):
    merchant = await make_merchant()
    await define(merchant.api, "organic", "TAG_RATE", {"tag": "organic", "multiplier": "1.5"})
    number = await enroll(merchant)

    tagged = await earned(merchant, number, "100", tags=["local", "organic"])
    assert (tagged["points"], lines(tagged)) == (150, [base(100), bonus("organic", 50, "1.5")])

    untagged = await earned(merchant, number, "100", tags=["local"])
    assert (untagged["points"], lines(untagged)) == (100, [base(100)])


async def test_green_label_co_earns_green_points(make_merchant):
    merchant = await make_merchant()
    await define(merchant.api, "green-label", "TAG_RATE", {"tag": "green", "asset": "GREEN", "rate": "0.1"})
    number = await enroll(merchant)

    tx = await earned(merchant, number, "250", tags=["green"])

    assert (tx["asset"], tx["points"]) == ("POINTS", 250)
    assert lines(tx) == [base(250), ("green-label", 25, "GREEN", "0.1 per CNY")]
    assert await balances(merchant.api, number) == {"GREEN": 25, "POINTS": 250}
    history = [edge["node"] for edge in (await member(merchant.api, number))["transactions"]["edges"]]
    assert sorted((t["kind"], t["asset"], t["points"]) for t in history) == [
        ("AWARD", "GREEN", 25),
        ("EARN", "POINTS", 250),
    ]

    plain = await earned(merchant, number, "100")
    assert lines(plain) == [base(100)]
    assert await balances(merchant.api, number) == {"GREEN": 25, "POINTS": 350}


# -- schedules, stores, tiers, time zones ------------------------------------------------------------


def _weekdays() -> tuple[dict[str, Any], dict[int, bool]]:
    day = local_today() - timedelta(days=2)
    return {"weekdays": [day.isoweekday()]}, {2: True, 1: False, 3: False}


def _dates() -> tuple[dict[str, Any], dict[int, bool]]:
    return {"dates": [(local_today() - timedelta(days=3)).isoformat()]}, {3: True, 2: False, 4: False}


def _date_range() -> tuple[dict[str, Any], dict[int, bool]]:
    today = local_today()
    schedule = {
        "from": (today - timedelta(days=5)).isoformat(),
        "to": (today - timedelta(days=3)).isoformat(),
    }
    return schedule, {6: False, 5: True, 4: True, 3: True, 2: False}


def _market_day() -> tuple[dict[str, Any], dict[int, bool]]:
    # A town's market day every 5 days: six days ago (anchor twenty days before it) and yesterday.
    anchor = local_today() - timedelta(days=26)
    return {"every": {"anchor": anchor.isoformat(), "days": 5}}, {
        6: True,
        5: False,
        3: False,
        2: False,
        1: True,
    }


@pytest.mark.parametrize("scheduled", [_weekdays, _dates, _date_range, _market_day])
async def test_scheduled_multiplier_applies_only_on_its_days(make_merchant, scheduled):
    schedule, expected = scheduled()
    merchant = await make_merchant()
    await define(merchant.api, "scheduled-2x", "MULTIPLIER", {"multiplier": "2", "schedule": schedule})
    number = await enroll(merchant)

    for days_ago, applies in sorted(expected.items()):
        day, at = local_noon(days_ago)
        tx = await earned(merchant, number, "100", effectiveAt=at)
        want = [base(100), bonus("scheduled-2x", 100, "2")] if applies else [base(100)]
        assert lines(tx) == want, (day, schedule)
        assert tx["points"] == (200 if applies else 100)


async def test_store_specific_multiplier(make_merchant):
    merchant = await make_merchant()
    flagship, other = await create_store(merchant), await create_store(merchant)
    await define(merchant.api, "flagship-2x", "MULTIPLIER", {"multiplier": "2", "stores": [flagship]})
    number = await enroll(merchant)

    at_flagship = await earned(merchant, number, "100", storeCode=flagship)
    assert lines(at_flagship) == [base(100), bonus("flagship-2x", 100, "2")]
    assert lines(await earned(merchant, number, "100", storeCode=other)) == [base(100)]
    assert lines(await earned(merchant, number, "100")) == [base(100)]


async def test_time_zone_a_late_utc_purchase_is_the_next_local_day(make_merchant):
    now = datetime.now(UTC)
    at = datetime.combine(now.date(), time(23, 30), UTC)
    if at > now - timedelta(minutes=1):
        at -= timedelta(days=1)
    utc_day, local_day = at.date(), at.astimezone(TZ).date()
    assert local_day == utc_day + timedelta(days=1)

    merchant = await make_merchant()
    await define(
        merchant.api,
        "local-day",
        "MULTIPLIER",
        {"multiplier": "2", "schedule": {"dates": [local_day.isoformat()]}},
    )
    await define(
        merchant.api,
        "utc-day",
        "MULTIPLIER",
        {"multiplier": "3", "schedule": {"dates": [utc_day.isoformat()]}},
    )
    number = await enroll(merchant)

    tx = await earned(merchant, number, "100", effectiveAt=at.isoformat())
    assert (tx["points"], lines(tx)) == (200, [base(100), bonus("local-day", 100, "2")])


async def test_tier_multiplier_and_tier_specific_rule(make_merchant, operator):
    tiers = (await operator(TIERS))["tiers"]
    silver = next(t for t in tiers if t["code"] == "SILVER")
    assert silver["rank"] >= 1 and 1 < float(silver["earnMultiplier"]) < 3
    merchant = await make_merchant()
    lounge = await create_store(merchant)
    await define(
        merchant.api, "vip-3x", "MULTIPLIER", {"multiplier": "3", "minTierRank": 1, "stores": [lounge]}
    )
    regular, vip = await enroll(merchant), await enroll(merchant)
    assigned = await operator(ASSIGN_TIER, i={"memberNumber": vip, "tierCode": "SILVER"})
    assert assigned["assignMemberTier"]["userErrors"] == [], assigned

    assert lines(await earned(merchant, regular, "100", storeCode=lounge)) == [base(100)]
    vip_lounge = await earned(merchant, vip, "100", storeCode=lounge)
    assert lines(vip_lounge) == [base(100), bonus("vip-3x", 200, "3")]
    tier_only = await earned(merchant, vip, "100")
    tier_bonus = int(100 * float(silver["earnMultiplier"]) + 1e-9) - 100
    assert [(rule, points) for rule, points, _, _ in lines(tier_only)] == [
        ("base", 100),
        ("tier:SILVER", tier_bonus),
    ]


# -- stacking and caps -------------------------------------------------------------------------------


@pytest.mark.parametrize("stacking", ["highest", "multiply"])
async def test_stacking_policy(make_merchant, stacking):
    merchant = await make_merchant()
    await define(merchant.api, "base", "BASE", {"rate": "1", "stacking": stacking})
    await define(merchant.api, "aa-formula", "CATEGORY_RATE", {"category": "baby_formula", "multiplier": "2"})
    await define(merchant.api, "bb-promo", "TAG_RATE", {"tag": "promo", "multiplier": "1.5"})
    number = await enroll(merchant)

    tx = await earned(merchant, number, "100", category="baby_formula", tags=["promo"])

    if stacking == "highest":
        assert (tx["points"], lines(tx)) == (200, [base(100), bonus("aa-formula", 100, "2")])
    else:
        assert tx["points"] == 300
        assert lines(tx) == [
            base(100),
            bonus("aa-formula", 100, "2", highest=False),
            bonus("bb-promo", 100, "1.5", highest=False),
        ]


async def test_cap_per_transaction(make_merchant):
    merchant = await make_merchant()
    await define(merchant.api, "base", "BASE", {"rate": "1", "capPerTransaction": 150})
    await define(merchant.api, "formula-2x", "CATEGORY_RATE", {"category": "baby_formula", "multiplier": "2"})
    number = await enroll(merchant)

    tx = await earned(merchant, number, "100", category="baby_formula")
    assert tx["points"] == 150
    assert lines(tx) == [
        base(100),
        bonus("formula-2x", 100, "2"),
        ("cap:transaction", -50, "POINTS", "at most 150 per purchase"),
    ]
    assert lines(await earned(merchant, number, "120")) == [base(120)]  # under the cap: untouched


async def test_cap_per_member_day(make_merchant):
    merchant = await make_merchant()
    await define(merchant.api, "base", "BASE", {"rate": "1", "capPerMemberDay": 150})
    number, other = await enroll(merchant), await enroll(merchant)
    _, yesterday = local_noon(1)
    _, evening = local_noon(1)
    evening = (datetime.fromisoformat(evening) + timedelta(hours=11)).isoformat()  # 23:00 local, same day
    cap_line = ("cap:member-day", -50, "POINTS", "at most 150 per day")

    first = await earned(merchant, number, "100", effectiveAt=yesterday)
    assert (first["points"], lines(first)) == (100, [base(100)])

    shown = await preview(merchant, number, "100", effectiveAt=evening)
    assert (shown["points"], lines(shown)) == (50, [base(100), cap_line])
    second = await earned(merchant, number, "100", effectiveAt=evening)
    assert (second["points"], lines(second)) == (50, [base(100), cap_line])

    third = await earn(merchant, number, "30", effectiveAt=evening)
    assert third["transaction"] is None and errors(third) == [("amount", "DAILY_CAP_REACHED")]
    assert await balances(merchant.api, number) == {"POINTS": 150}

    _, day_before = local_noon(2)  # another local day, another allowance
    assert (await earned(merchant, number, "100", effectiveAt=day_before))["points"] == 100
    assert (await earned(merchant, other, "100", effectiveAt=yesterday))["points"] == 100  # per member


# -- alliance campaigns --------------------------------------------------------------------------------


@pytest.mark.parametrize("funded_by", ["ALLIANCE", "MERCHANT"])
async def test_campaign_funding_decides_the_issuer_of_the_bonus(make_merchant, operator, db, funded_by):
    merchant = await make_merchant()
    bystander = await make_merchant()
    store = await create_store(merchant)  # the campaign names a store only this merchant has
    code = unique("festival")
    campaign = await define(
        operator,
        code,
        "MULTIPLIER",
        {"multiplier": "2", "stores": [store]},
        fundedBy=funded_by,
        effectiveFrom=(datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        effectiveUntil=(datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    )
    try:
        assert (campaign["campaign"], campaign["fundedBy"]) == (True, funded_by)
        seen = {r["code"]: r for r in (await merchant.api(RULES))["earningRules"]}
        assert seen[code]["campaign"] is True

        number = await enroll(merchant)
        tx = await earned(merchant, number, "100", storeCode=store)
        assert (tx["points"], lines(tx)) == (200, [base(100), bonus(f"campaign:{code}", 100, "2")])
        assert await balances(merchant.api, number) == {"POINTS": 200}
        if funded_by == "ALLIANCE":
            assert await lots_of(db, number) == [(merchant.tenant_id, "POINTS", 100), (None, "POINTS", 100)]
        else:
            assert await lots_of(db, number) == [(merchant.tenant_id, "POINTS", 200)]

        elsewhere = await enroll(bystander)
        assert lines(await earned(bystander, elsewhere, "100")) == [base(100)]
    finally:
        retired = await retire(operator, code)
        assert retired["userErrors"] == [], retired
    after = await earned(merchant, number, "100", storeCode=store)
    assert lines(after) == [base(100)]


async def test_transaction_cap_trims_the_alliance_bonus_first(make_merchant, operator, db):
    merchant = await make_merchant()
    store = await create_store(merchant)
    await define(merchant.api, "base", "BASE", {"rate": "1", "capPerTransaction": 150})
    code = unique("festival")
    await define(
        operator,
        code,
        "MULTIPLIER",
        {"multiplier": "2", "stores": [store]},
        fundedBy="ALLIANCE",
        effectiveFrom=(datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        effectiveUntil=(datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    )
    try:
        number = await enroll(merchant)
        tx = await earned(merchant, number, "100", storeCode=store)
        assert lines(tx) == [
            base(100),
            bonus(f"campaign:{code}", 100, "2"),
            ("cap:transaction", -50, "POINTS", "at most 150 per purchase"),
        ]
        assert await lots_of(db, number) == [(merchant.tenant_id, "POINTS", 100), (None, "POINTS", 50)]
    finally:
        assert (await retire(operator, code))["userErrors"] == []


# -- previewEarn ---------------------------------------------------------------------------------------


async def test_preview_matches_the_earn_and_writes_nothing(make_merchant):
    merchant = await make_merchant(TenantCategory.BABY_GOODS)
    await define(merchant.api, "formula-2x", "CATEGORY_RATE", {"category": "baby_formula", "multiplier": "2"})
    await define(merchant.api, "green-label", "TAG_RATE", {"tag": "green", "asset": "GREEN", "rate": "0.1"})
    number = await enroll(merchant)
    item = {"category": "baby_formula", "tags": ["green"]}

    shown = await preview(merchant, number, "120.50", **item)
    assert shown["points"] == 240
    assert lines(shown) == [base(120), bonus("formula-2x", 120, "2")]
    assert lines(shown, "otherAssets") == [("green-label", 12, "GREEN", "0.1 per CNY")]
    again = await preview(merchant, number, "120.50", **item)
    assert again == shown
    untouched = await member(merchant.api, number)
    assert untouched["balances"] == [] and untouched["transactions"]["edges"] == []

    tx = await earned(merchant, number, "120.50", **item)
    assert tx["points"] == shown["points"]
    assert lines(tx) == lines(shown) + lines(shown, "otherAssets")
    assert await balances(merchant.api, number) == {"GREEN": 12, "POINTS": 240}


async def test_preview_of_a_member_not_enrolled_here(make_merchant):
    merchant, other = await make_merchant(), await make_merchant()
    stranger = await enroll(other)
    data = await merchant.api(PREVIEW, i={"memberNumber": stranger, "amount": "10"})
    assert data["previewEarn"]["preview"] is None
    assert errors(data["previewEarn"]) == [("memberNumber", "MEMBER_NOT_FOUND")]


@pytest.mark.parametrize(
    ("extra", "refusal"),
    [
        ({"storeCode": "NO-SUCH-STORE"}, ("storeCode", "UNKNOWN_STORE")),
        ({"asset": "NOPE"}, ("asset", "UNKNOWN_ASSET")),
    ],
)
async def test_preview_refuses_what_the_earn_refuses(make_merchant, extra, refusal):
    merchant = await make_merchant()
    number = await enroll(merchant)
    assert errors(await earn(merchant, number, "100", **extra)) == [refusal]

    data = await merchant.api(PREVIEW, i={"memberNumber": number, "amount": "100", **extra})
    assert data["previewEarn"]["preview"] is None
    assert errors(data["previewEarn"]) == [refusal]


# -- rule management -----------------------------------------------------------------------------------


async def test_defining_a_code_again_closes_the_open_version(make_merchant):
    merchant = await make_merchant()
    now = datetime.now(UTC)
    first_from, second_from = now - timedelta(days=2), now - timedelta(days=1)
    first = await define(merchant.api, "std", "BASE", {"rate": "1"}, effectiveFrom=first_from.isoformat())
    second = await define(merchant.api, "std", "BASE", {"rate": "2"}, effectiveFrom=second_from.isoformat())
    assert first["effectiveUntil"] is None and second["effectiveUntil"] is None

    versions = [r for r in (await merchant.api(RULES))["earningRules"] if r["code"] == "std"]
    assert [r["id"] for r in versions] == [first["id"], second["id"]]
    assert datetime.fromisoformat(versions[0]["effectiveUntil"]) == datetime.fromisoformat(
        second["effectiveFrom"]
    )
    assert versions[1]["effectiveUntil"] is None
    assert [r["config"]["rate"] for r in versions] == ["1", "2"]

    then = (now - timedelta(hours=36)).isoformat()
    in_force = [r for r in (await merchant.api(RULES, at=then))["earningRules"] if r["code"] == "std"]
    assert [r["id"] for r in in_force] == [first["id"]]

    number = await enroll(merchant)
    assert lines(await earned(merchant, number, "100", effectiveAt=then)) == [base(100, "1 per CNY")]
    assert lines(await earned(merchant, number, "100")) == [base(200, "2 per CNY")]

    stale = await define_raw(merchant.api, "std", "BASE", {"rate": "3"}, effectiveFrom=first_from.isoformat())
    assert stale["rule"] is None and errors(stale) == [("effectiveFrom", "RULE_OVERLAP")]


async def test_two_codes_for_one_category_at_once_are_ambiguous(make_merchant):
    merchant = await make_merchant()
    switch = datetime.now(UTC) + timedelta(days=1)
    await define(
        merchant.api,
        "formula-a",
        "CATEGORY_RATE",
        {"category": "baby_formula", "multiplier": "2"},
        effectiveUntil=switch.isoformat(),
    )

    clash = await define_raw(
        merchant.api, "formula-b", "CATEGORY_RATE", {"category": "baby_formula", "multiplier": "3"}
    )
    assert clash["rule"] is None and errors(clash) == [("config", "AMBIGUOUS_RULE")]
    base_clash = await define_raw(merchant.api, "base-b", "BASE", {"rate": "1"})
    assert base_clash["userErrors"] == []
    assert errors(await define_raw(merchant.api, "base-c", "BASE", {"rate": "2"})) == [
        ("config", "AMBIGUOUS_RULE")
    ]

    # After formula-a ends, formula-b may take over; another category never clashes.
    later = await define_raw(
        merchant.api,
        "formula-b",
        "CATEGORY_RATE",
        {"category": "baby_formula", "multiplier": "3"},
        effectiveFrom=switch.isoformat(),
    )
    assert later["userErrors"] == []
    other = await define_raw(
        merchant.api, "diapers", "CATEGORY_RATE", {"category": "diapers", "multiplier": "3"}
    )
    assert other["userErrors"] == []


INVALID_CONFIGS = [
    ("BASE", {"rate": "lots"}),
    ("BASE", {"rate": "-1"}),
    ("BASE", {"rate": "1", "rounding": "up"}),
    ("BASE", {"rate": "1", "stacking": "sum"}),
    ("BASE", {"rate": "1", "capPerTransaction": 0}),
    ("CATEGORY_RATE", {"multiplier": "2"}),
    ("CATEGORY_RATE", {"category": "toys", "multiplier": "20"}),
    ("CATEGORY_RATE", {"category": "toys", "multiplier": "0.5"}),
    ("TAG_RATE", {"tag": "green"}),
    ("MULTIPLIER", {"multiplier": "2", "schedule": {"weekdays": [8]}}),
    ("MULTIPLIER", {"multiplier": "2", "schedule": {"dates": ["2026-02-30"]}}),
    ("MULTIPLIER", {"multiplier": "2", "schedule": {"every": {"anchor": "2026-01-01", "days": 1}}}),
    ("MULTIPLIER", {"multiplier": "2", "schedule": {"monthly": 1}}),
    ("EVENT_BONUS", {"event": "PARTY", "points": 10}),
    ("EVENT_BONUS", {"event": "SURVEY", "points": 0}),
    ("EVENT_BONUS", {"event": "SURVEY", "points": 10, "limit": {"count": 1, "per": "week"}}),
    # non-numeric values where numbers are expected, a limit that is not an object
    ("BASE", {"rate": "1", "capPerTransaction": "lots"}),
    ("BASE", {"rate": "1", "capPerMemberDay": "lots"}),
    ("MULTIPLIER", {"multiplier": "2", "minTierRank": "gold"}),
    ("EVENT_BONUS", {"event": "SURVEY", "points": "fifty"}),
    ("EVENT_BONUS", {"event": "SURVEY", "points": 10, "limit": "yearly"}),
]


@pytest.mark.parametrize(("kind", "config"), INVALID_CONFIGS)
async def test_invalid_config_is_refused(make_merchant, kind, config):
    merchant = await make_merchant()
    payload = await define_raw(merchant.api, "bad", kind, config)
    assert payload["rule"] is None
    assert [e["code"] for e in payload["userErrors"]] == ["INVALID_RULE"], payload
    assert all(r["code"] != "bad" for r in (await merchant.api(RULES))["earningRules"])


async def test_bad_codes_and_funding(make_merchant, operator):
    merchant = await make_merchant()
    bad_code = await define_raw(merchant.api, "Bad Code", "MULTIPLIER", {"multiplier": "2"})
    assert errors(bad_code) == [("code", "INVALID_RULE_CODE")]

    alliance_funded = await define_raw(
        merchant.api, "festival", "MULTIPLIER", {"multiplier": "2"}, fundedBy="ALLIANCE"
    )
    assert alliance_funded["rule"] is None
    assert errors(alliance_funded) == [("fundedBy", "INVALID_FUNDING")]

    not_a_multiplier = await define_raw(operator, unique("camp"), "BASE", {"rate": "2"})
    assert not_a_multiplier["rule"] is None and errors(not_a_multiplier) == [("kind", "INVALID_RULE")]

    backwards = await define_raw(
        merchant.api,
        "backwards",
        "MULTIPLIER",
        {"multiplier": "2"},
        effectiveFrom=datetime.now(UTC).isoformat(),
        effectiveUntil=(datetime.now(UTC) - timedelta(hours=1)).isoformat(),
    )
    assert errors(backwards) == [("effectiveUntil", "INVALID_EFFECTIVE_UNTIL")]


async def test_retired_rule_stops_applying(make_merchant):
    merchant = await make_merchant()
    await define(merchant.api, "formula-2x", "CATEGORY_RATE", {"category": "baby_formula", "multiplier": "2"})
    number = await enroll(merchant)
    assert (await earned(merchant, number, "100", category="baby_formula"))["points"] == 200

    retired = await retire(merchant.api, "formula-2x")
    assert retired["userErrors"] == [] and retired["rule"]["effectiveUntil"] is not None

    after = await earned(merchant, number, "100", category="baby_formula")
    assert (after["points"], lines(after)) == (100, [base(100)])
    now = datetime.now(UTC).isoformat()
    assert [r["code"] for r in (await merchant.api(RULES, at=now))["earningRules"] if not r["campaign"]] == []
    assert errors(await retire(merchant.api, "formula-2x")) == [("code", "RULE_NOT_FOUND")]


async def test_a_rule_with_a_scheduled_next_version_can_still_be_retired(make_merchant):
    merchant = await make_merchant()
    await define(merchant.api, "promo", "CATEGORY_RATE", {"category": "toys", "multiplier": "2"})
    await define(
        merchant.api,
        "promo",
        "CATEGORY_RATE",
        {"category": "toys", "multiplier": "3"},
        effectiveFrom=(datetime.now(UTC) + timedelta(days=7)).isoformat(),
    )
    number = await enroll(merchant)
    assert (await earned(merchant, number, "100", category="toys"))["points"] == 200

    retired = await retire(merchant.api, "promo")
    assert retired["userErrors"] == [], retired
    assert lines(await earned(merchant, number, "100", category="toys")) == [base(100)]


async def test_breakdown_never_promises_points_of_an_unknown_asset(make_merchant):
    merchant = await make_merchant()
    defined = await define_raw(
        merchant.api,
        "eco",
        "TAG_RATE",
        {"tag": "eco", "asset": "NO_SUCH_ASSET", "rate": "1"},
        effectiveFrom=LONG_AGO.isoformat(),
    )
    if defined["rule"] is None:  # refusing the rule is one correct answer
        assert [e["code"] for e in defined["userErrors"]] in (["INVALID_RULE"], ["UNKNOWN_ASSET"])
        return
    number = await enroll(merchant)
    tx = await earned(merchant, number, "10", tags=["eco"])
    held = await balances(merchant.api, number)
    for rule, points, asset, _ in lines(tx):
        if asset != "POINTS":
            assert held.get(asset) == points, (rule, asset, held)


# -- earnPointsBatch -----------------------------------------------------------------------------------


async def test_batch_applies_the_rules_to_each_item(make_merchant):
    merchant = await make_merchant(TenantCategory.BABY_GOODS)
    await define(merchant.api, "base", "BASE", {"rate": "1", "capPerTransaction": 250})
    await define(merchant.api, "formula-2x", "CATEGORY_RATE", {"category": "baby_formula", "multiplier": "2"})
    number = await enroll(merchant)
    items = [
        purchase(number, "100", category="baby_formula"),
        purchase(number, "50.90"),
        purchase(number, "200", category="baby_formula"),
    ]

    data = await merchant.api(BATCH, i={"items": items, "idempotencyKey": unique("k")})
    results = data["earnPointsBatch"]["results"]

    assert [r["userErrors"] for r in results] == [[], [], []]
    assert [r["transaction"]["points"] for r in results] == [200, 50, 250]
    assert [lines(r["transaction"]) for r in results] == [
        [base(100), bonus("formula-2x", 100, "2")],
        [base(50)],
        [
            base(200),
            bonus("formula-2x", 200, "2"),
            ("cap:transaction", -150, "POINTS", "at most 250 per purchase"),
        ],
    ]
    assert await balances(merchant.api, number) == {"POINTS": 500}


async def test_batch_breakdown_only_lists_points_the_member_gets(make_merchant):
    merchant = await make_merchant()
    await define(merchant.api, "green-label", "TAG_RATE", {"tag": "green", "asset": "GREEN", "rate": "0.1"})
    number = await enroll(merchant)

    item = purchase(number, "250", tags=["green"])
    data = await merchant.api(BATCH, i={"items": [item], "idempotencyKey": unique("k")})
    (result,) = data["earnPointsBatch"]["results"]
    assert result["userErrors"] == [] and result["transaction"]["points"] == 250

    held = await balances(merchant.api, number)
    promised: dict[str, int] = {}
    for _, points, asset, _ in lines(result["transaction"]):
        promised[asset] = promised.get(asset, 0) + points
    assert promised == held


async def test_backdated_batch_item_earns_under_the_rules_of_its_business_time(make_merchant):
    merchant = await make_merchant()
    number = await enroll(merchant)
    _, two_days_ago = local_noon(2)
    await define(
        merchant.api,
        "formula-2x",
        "CATEGORY_RATE",
        {"category": "baby_formula", "multiplier": "2"},
        effectiveFrom=datetime.now(UTC).isoformat(),
    )
    single = await earned(merchant, number, "100", category="baby_formula", effectiveAt=two_days_ago)
    assert lines(single) == [base(100)]  # the rule did not exist two days ago

    item = purchase(number, "100", category="baby_formula", effectiveAt=two_days_ago)
    data = await merchant.api(BATCH, i={"items": [item], "idempotencyKey": unique("k")})
    (result,) = data["earnPointsBatch"]["results"]
    assert lines(result["transaction"]) == lines(single)


# -- the per-process rules cache ---------------------------------------------------------------------


async def test_a_rule_applies_at_once_even_if_an_earn_reloaded_the_cache_while_it_was_defined(
    db, make_merchant, monkeypatch
):
    """The process's rules cache is dropped after the defining transaction commits: an earn that
    refilled it in between (from another connection, so without the new rule) must not hide it."""
    merchant = await make_merchant()
    number = await enroll(merchant)
    original = earning_service.define_rule

    async def define_while_an_earn_reads_the_rules(session, tenant_id, *args):  # type: ignore[no-untyped-def]
        rule = await original(session, tenant_id, *args)
        await earning_service.cached_rules(db, tenant_id, datetime.now(UTC))
        return rule

    monkeypatch.setattr(earning_service, "define_rule", define_while_an_earn_reads_the_rules)
    await define(merchant.api, "formula-2x", "CATEGORY_RATE", {"category": "baby_formula", "multiplier": "2"})
    monkeypatch.undo()

    tx = await earned(merchant, number, "100", category="baby_formula")
    assert (tx["points"], lines(tx)) == (200, [base(100), bonus("formula-2x", 100, "2")])


async def test_a_retried_definition_or_retirement_makes_one_version(make_merchant):
    merchant = await make_merchant()
    request = {"code": "std", "kind": "BASE", "config": {"rate": "2"}, "idempotencyKey": unique("k")}
    first = (await merchant.api(DEFINE, i=request))["defineEarningRule"]
    again = (await merchant.api(DEFINE, i=request))["defineEarningRule"]
    assert first["userErrors"] == [] and again == first, "the retry answers with the same version"
    versions = [r for r in (await merchant.api(RULES))["earningRules"] if r["code"] == "std"]
    assert [r["id"] for r in versions] == [first["rule"]["id"]]

    retirement = {"code": "std", "idempotencyKey": unique("k")}
    retired = (await merchant.api(RETIRE, i=retirement))["retireEarningRule"]
    assert retired["userErrors"] == [] and retired["rule"]["effectiveUntil"] is not None
    assert (await merchant.api(RETIRE, i=retirement))["retireEarningRule"] == retired
    unkeyed = (await merchant.api(RETIRE, i={"code": "std"}))["retireEarningRule"]
    assert unkeyed["rule"] is None and unkeyed["userErrors"], "without the key the retry is a second request"
