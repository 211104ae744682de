"""Segment-restricted rules (targeted offers) in the engine: only the segment's members get the
bonus, only on the matching purchases and inside the schedule, and the line names the offer."""

from datetime import UTC, datetime
from decimal import Decimal

from alliance.earning.engine import MemberFacts, Purchase, Rule, has_segment_rules, plan_earn

TZ = "Asia/Shanghai"
NOON = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai, a Tuesday
JEANS_FANS = MemberFacts(segments=frozenset({"jeans-fans"}))
OTHERS = MemberFacts(segments=frozenset({"dress-lovers"}))
JEANS_OFFER = Rule(
    "new-jeans", "category_rate", {"category": "jeans", "multiplier": "2", "segment": "jeans-fans"}
)


def purchase(amount: str = "100", **kwargs) -> Purchase:
    return Purchase(amount=Decimal(amount), at=kwargs.pop("at", NOON), time_zone=TZ, **kwargs)


def lines(plan) -> list[tuple[str, int, str]]:
    return [(line.rule, line.points, line.note) for line in plan.breakdown]


def test_a_segment_member_gets_the_offer_and_the_line_names_it():
    plan = plan_earn(purchase("120", category="jeans"), [JEANS_OFFER], JEANS_FANS)
    assert plan.points == 240
    assert lines(plan) == [
        ("base", 120, "1 per CNY"),
        ("offer:new-jeans", 120, "×2 (highest applies)"),
    ]


def test_a_member_outside_the_segment_or_without_segments_does_not():
    for member in (OTHERS, MemberFacts()):
        plan = plan_earn(purchase("120", category="jeans"), [JEANS_OFFER], member)
        assert (plan.points, lines(plan)) == (120, [("base", 120, "1 per CNY")])


def test_the_offer_applies_to_its_category_only():
    plan = plan_earn(purchase("120", category="dresses"), [JEANS_OFFER], JEANS_FANS)
    assert plan.points == 120


def test_tag_and_whole_purchase_offers_with_a_two_week_schedule():
    window = {"from": "2026-11-20", "to": "2026-12-03"}
    tag = Rule(
        "dresses-x2",
        "tag_rate",
        {"tag": "dress", "multiplier": "2", "segment": "dress-lovers", "schedule": window},
    )
    every = Rule(
        "back-soon", "multiplier", {"multiplier": "1.5", "segment": "dress-lovers", "schedule": window}
    )
    inside = plan_earn(purchase("80", tags=("dress",)), [tag, every], OTHERS)
    assert lines(inside)[1:] == [("offer:dresses-x2", 80, "×2 (highest applies)")]
    not_a_dress = plan_earn(purchase("80"), [tag, every], OTHERS)
    assert lines(not_a_dress)[1:] == [("offer:back-soon", 40, "×1.5 (highest applies)")]
    after = datetime(2026, 12, 3, 16, 0, tzinfo=UTC)  # 4 December, 00:00 in Shanghai: the day after
    assert plan_earn(purchase("80", tags=("dress",), at=after), [tag, every], OTHERS).points == 80
    last_day = datetime(2026, 12, 3, 15, 59, tzinfo=UTC)  # 3 December, 23:59 in Shanghai
    assert plan_earn(purchase("80", tags=("dress",), at=last_day), [tag, every], OTHERS).points == 160


def test_offers_stack_with_the_general_rules_by_the_merchants_policy():
    general = Rule("jeans", "category_rate", {"category": "jeans", "multiplier": "1.5"})
    highest = plan_earn(purchase("100", category="jeans"), [general, JEANS_OFFER], JEANS_FANS)
    assert lines(highest)[1:] == [("offer:new-jeans", 100, "×2 (highest applies)")]
    base = Rule("base", "base", {"rate": "1", "stacking": "multiply"})
    both = plan_earn(purchase("100", category="jeans"), [base, general, JEANS_OFFER], JEANS_FANS)
    assert lines(both)[1:] == [("jeans", 50, "×1.5"), ("offer:new-jeans", 150, "×2")]
    assert both.points == 300 and both.merchant_points == 300


def test_has_segment_rules_tells_the_earn_path_whether_to_look_segments_up():
    general = Rule("jeans", "category_rate", {"category": "jeans", "multiplier": "1.5"})
    assert not has_segment_rules([general]) and not has_segment_rules([])
    assert has_segment_rules([general, JEANS_OFFER])
