"""The earning computation on its own: every rule type, stacking, caps, schedules, time zones."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from alliance.earning.engine import MemberFacts, Purchase, Rule, plan_earn, schedule_matches

TZ = "Asia/Shanghai"
NOON = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai, a Tuesday


def purchase(amount: str = "100", **kwargs) -> Purchase:
    return Purchase(amount=Decimal(amount), at=kwargs.pop("at", NOON), time_zone=TZ, **kwargs)


def lines(plan) -> list[tuple[str, int]]:
    return [(line.rule, line.points) for line in plan.breakdown]


def test_default_is_one_point_per_cny_rounded_down():
    plan = plan_earn(purchase("99.99"), [], MemberFacts())
    assert (plan.points, lines(plan)) == (99, [("base", 99)])


@pytest.mark.parametrize(("rounding", "expected"), [("floor", 12), ("round", 13), ("ceil", 13)])
def test_base_rate_rounding(rounding, expected):
    base = Rule(
        "base", "base", {"rate": "0.5", "rounding": rounding, "minimumSpend": "0", "stacking": "highest"}
    )
    assert plan_earn(purchase("25.20"), [base], MemberFacts()).points == expected


def test_minimum_spend_earns_nothing_below_it():
    base = Rule("base", "base", {"rate": "1", "minimumSpend": "50"})
    plan = plan_earn(purchase("49.99"), [base], MemberFacts())
    assert plan.points == 0 and "minimum spend" in plan.breakdown[0].note


def test_category_and_tag_multipliers_apply_only_when_they_match():
    formula = Rule("formula-2x", "category_rate", {"category": "baby_formula", "multiplier": "2"})
    organic = Rule("organic", "tag_rate", {"tag": "organic", "multiplier": "1.5"})
    assert plan_earn(purchase(category="baby_formula"), [formula, organic], MemberFacts()).points == 200
    assert plan_earn(purchase(tags=("organic",)), [formula, organic], MemberFacts()).points == 150
    assert plan_earn(purchase(category="toys"), [formula, organic], MemberFacts()).points == 100


def test_stacking_highest_wins_or_multiply():
    rules = [
        Rule("a", "category_rate", {"category": "c", "multiplier": "2"}),
        Rule("b", "tag_rate", {"tag": "t", "multiplier": "1.5"}),
    ]
    highest = plan_earn(purchase(category="c", tags=("t",)), rules, MemberFacts())
    assert lines(highest) == [("base", 100), ("a", 100)]
    multiply = plan_earn(
        purchase(category="c", tags=("t",)),
        [Rule("base", "base", {"rate": "1", "stacking": "multiply"}), *rules],
        MemberFacts(),
    )
    assert lines(multiply) == [("base", 100), ("a", 100), ("b", 100)]
    assert multiply.points == 300


def test_cap_per_transaction_trims_the_bonus_and_says_so():
    rules = [
        Rule("base", "base", {"rate": "1", "capPerTransaction": 150}),
        Rule("double", "multiplier", {"multiplier": "2"}),
    ]
    plan = plan_earn(purchase(), rules, MemberFacts())
    assert plan.points == 150 and lines(plan)[-1] == ("cap:transaction", -50)


def test_alliance_funded_campaign_bonus_is_kept_apart_and_trimmed_first():
    campaign = Rule("mid-autumn", "multiplier", {"multiplier": "2"}, funded_by="alliance", campaign=True)
    plan = plan_earn(purchase(), [campaign], MemberFacts())
    assert (plan.merchant_points, plan.alliance_points) == (100, 100)
    assert lines(plan) == [("base", 100), ("campaign:mid-autumn", 100)]
    capped = plan_earn(
        purchase(), [Rule("base", "base", {"rate": "1", "capPerTransaction": 150}), campaign], MemberFacts()
    )
    assert (capped.merchant_points, capped.alliance_points) == (100, 50)


def test_green_labelled_products_also_earn_green_points():
    green = Rule("green-label", "tag_rate", {"tag": "green", "asset": "GREEN", "rate": "0.1"})
    plan = plan_earn(purchase("88", tags=("green",)), [green], MemberFacts())
    assert plan.points == 88 and plan.other_assets == {"GREEN": 8}
    assert ("green-label", 8) in lines(plan)


def test_tier_multiplier_and_tier_targeted_rules():
    vip_day = Rule("vip-day", "multiplier", {"multiplier": "3", "minTierRank": 2})
    silver = MemberFacts(tier_code="SILVER", tier_rank=1, tier_multiplier=Decimal("1.1"))
    gold = MemberFacts(tier_code="GOLD", tier_rank=2, tier_multiplier=Decimal("1.25"))
    assert lines(plan_earn(purchase(), [vip_day], silver)) == [("base", 100), ("tier:SILVER", 10)]
    assert lines(plan_earn(purchase(), [vip_day], gold)) == [("base", 100), ("vip-day", 200)]


def test_store_specific_multiplier():
    rule = Rule("old-town", "multiplier", {"multiplier": "2", "stores": ["SM-002"]})
    assert plan_earn(purchase(store_code="SM-002"), [rule], MemberFacts()).points == 200
    assert plan_earn(purchase(store_code="SM-001"), [rule], MemberFacts()).points == 100


def test_market_day_every_five_days_from_an_anchor():
    schedule = {"every": {"anchor": "2026-11-04", "days": 5}}
    market_days = [d for d in range(4, 30) if schedule_matches(schedule, date(2026, 11, d))]
    assert market_days == [4, 9, 14, 19, 24, 29]
    assert not schedule_matches(schedule, date(2026, 11, 3)), "nothing before the anchor"


def test_schedules_use_the_alliance_time_zone():
    # 23:30 UTC on the 23rd is already the 24th in Shanghai: the 24th's double points apply.
    late = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)
    rule = Rule("the-24th", "multiplier", {"multiplier": "2", "schedule": {"dates": ["2026-11-24"]}})
    assert plan_earn(purchase(at=late), [rule], MemberFacts()).points == 200
    assert (
        plan_earn(purchase(at=datetime(2026, 11, 23, 15, 0, tzinfo=UTC)), [rule], MemberFacts()).points == 100
    )


def test_weekdays_and_date_ranges_combine():
    schedule = {"from": "2026-11-01", "to": "2026-11-30", "weekdays": [2, 4]}
    assert schedule_matches(schedule, date(2026, 11, 24))  # a Tuesday in range
    assert not schedule_matches(schedule, date(2026, 11, 25))  # a Wednesday
    assert not schedule_matches(schedule, date(2026, 12, 1))  # a Tuesday, out of range
