"""The earning computation: pure, deterministic, explained line by line.

A purchase earns base points (amount × rate, rounded, if the minimum spend is met), then the
multipliers that apply — category and tag rates, scheduled and store- or tier-specific
multipliers, a merchant's targeted offers (rules restricted to one of its customer segments),
alliance campaigns, the member's tier — stacked by the merchant's declared policy
(the highest wins, or they multiply), then capped per transaction. Tag rules can also earn a
second asset (green-labelled products earn GREEN points). Every step is a breakdown line, so
the member sees why they got what they got.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

ROUNDING = {"floor": ROUND_FLOOR, "round": ROUND_HALF_UP, "ceil": ROUND_CEILING}  # "round": 12.5 → 13
STACKING = ("highest", "multiply")
MAX_MULTIPLIER = Decimal(10)


@dataclass(frozen=True, slots=True)
class Rule:
    code: str
    kind: str
    config: dict[str, Any]
    funded_by: str = "merchant"
    campaign: bool = False  # an operator's alliance-wide rule


@dataclass(frozen=True, slots=True)
class Purchase:
    amount: Decimal
    at: datetime
    time_zone: str
    asset: str = "POINTS"
    category: str | None = None
    tags: tuple[str, ...] = ()
    store_code: str | None = None

    @property
    def local_date(self) -> date:
        return self.at.astimezone(ZoneInfo(self.time_zone)).date()


@dataclass(frozen=True, slots=True)
class MemberFacts:
    tier_code: str | None = None
    tier_rank: int = 0
    tier_multiplier: Decimal = Decimal(1)
    earned_today: int = 0  # at this merchant, for previews (posting re-checks under a lock)
    # The codes of this merchant's active segments the member belongs to; looked up only when
    # a segment-restricted rule (a targeted offer) is in force, so empty for everyone otherwise.
    segments: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class BreakdownLine:
    rule: str
    points: int
    asset: str = "POINTS"
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "points": self.points, "asset": self.asset, "note": self.note}


@dataclass(frozen=True, slots=True)
class EarnPlan:
    """What to post: the merchant-funded and alliance-funded points of the purchase's asset,
    points of other assets (co-earn), and the explanation."""

    merchant_points: int
    alliance_points: int
    other_assets: dict[str, int] = field(default_factory=dict)
    breakdown: tuple[BreakdownLine, ...] = ()
    cap_per_member_day: int | None = None

    @property
    def points(self) -> int:
        return self.merchant_points + self.alliance_points


def base_settings(rules: list[Rule]) -> dict[str, Any]:
    """The merchant's base rule, or the alliance default: 1 point per CNY, floor, no caps."""
    base = next((rule for rule in rules if rule.kind == "base"), None)
    defaults: dict[str, Any] = {
        "rate": "1",
        "rounding": "floor",
        "minimumSpend": "0",
        "stacking": "highest",
        "capPerTransaction": None,
        "capPerMemberDay": None,
    }
    return defaults | (base.config if base else {})


def _rounded(value: Decimal, mode: str) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUNDING[mode]))


def schedule_matches(schedule: dict[str, Any] | None, day: date) -> bool:
    """Date range, weekdays (1 = Monday), specific dates, or every N days from an anchor (market days)."""
    if not schedule:
        return True
    if "from" in schedule and day < date.fromisoformat(schedule["from"]):
        return False
    if "to" in schedule and day > date.fromisoformat(schedule["to"]):
        return False
    checks = []
    if "weekdays" in schedule:
        checks.append(day.isoweekday() in schedule["weekdays"])
    if "dates" in schedule:
        checks.append(day.isoformat() in schedule["dates"])
    if "every" in schedule:
        anchor = date.fromisoformat(schedule["every"]["anchor"])
        checks.append(day >= anchor and (day - anchor).days % int(schedule["every"]["days"]) == 0)
    return all(checks) if checks else True


def has_segment_rules(rules: list[Rule]) -> bool:
    """Whether any rule in force is a targeted offer, i.e. whether the member's segments matter."""
    return any("segment" in rule.config for rule in rules)


def rule_line_name(rule: Rule) -> str:
    """What a bonus line is called: the rule code, `offer:<code>` for a segment-restricted rule
    (so the member sees it was an offer made to them, and the offer's cost can be summed from
    the breakdowns), `campaign:<code>` for an alliance campaign."""
    if rule.campaign:
        return f"campaign:{rule.code}"
    return f"offer:{rule.code}" if "segment" in rule.config else rule.code


def _multiplier_applies(rule: Rule, purchase: Purchase, member: MemberFacts) -> bool:
    config = rule.config
    if "segment" in config and config["segment"] not in member.segments:
        return False
    if rule.kind in ("category_rate", "tag_rate") and not schedule_matches(
        config.get("schedule"), purchase.local_date
    ):
        return False
    if rule.kind == "category_rate":
        return purchase.category is not None and purchase.category == config["category"]
    if rule.kind == "tag_rate":
        return "multiplier" in config and config["tag"] in purchase.tags
    if rule.kind != "multiplier":
        return False
    if config.get("stores") and purchase.store_code not in config["stores"]:
        return False
    if member.tier_rank < int(config.get("minTierRank", 0)):
        return False
    return schedule_matches(config.get("schedule"), purchase.local_date)


def plan_earn(purchase: Purchase, rules: list[Rule], member: MemberFacts) -> EarnPlan:
    """Points for one purchase under the rules in force, with the explanation."""
    settings = base_settings(rules)
    rounding = settings["rounding"]
    if purchase.amount < Decimal(str(settings["minimumSpend"])):
        base = 0
        lines = [
            BreakdownLine("base", 0, purchase.asset, f"below the minimum spend of {settings['minimumSpend']}")
        ]
    else:
        base = _rounded(purchase.amount * Decimal(str(settings["rate"])), rounding)
        lines = [BreakdownLine("base", base, purchase.asset, f"{settings['rate']} per CNY")]

    applying = sorted((r for r in rules if _multiplier_applies(r, purchase, member)), key=lambda r: r.code)
    candidates = [
        (
            rule_line_name(r),
            Decimal(str(r.config["multiplier"])),
            r.funded_by,
        )
        for r in applying
    ]
    if member.tier_multiplier > 1 and member.tier_code:
        candidates.append((f"tier:{member.tier_code}", member.tier_multiplier, "merchant"))
    candidates = [(name, min(m, MAX_MULTIPLIER), funded) for name, m, funded in candidates if m > 1]

    merchant, alliance = base, 0
    if candidates and base > 0:
        if settings["stacking"] == "multiply":
            product = Decimal(1)
            for name, multiplier, funded in candidates:
                before = _rounded(base * product, "floor")
                product *= multiplier
                gained = _rounded(base * product, "floor") - before
                lines.append(BreakdownLine(name, gained, purchase.asset, f"×{multiplier}"))
                merchant, alliance = (
                    (merchant + gained, alliance) if funded == "merchant" else (merchant, alliance + gained)
                )
        else:
            name, multiplier, funded = max(candidates, key=lambda c: (c[1], c[0]))
            gained = _rounded(base * multiplier, "floor") - base
            lines.append(BreakdownLine(name, gained, purchase.asset, f"×{multiplier} (highest applies)"))
            merchant, alliance = (
                (merchant + gained, alliance) if funded == "merchant" else (merchant, alliance + gained)
            )

    cap = settings.get("capPerTransaction")
    if cap is not None and merchant + alliance > int(cap):
        excess = merchant + alliance - int(cap)
        trimmed_alliance = min(alliance, excess)  # the bonus the alliance pays goes first
        alliance -= trimmed_alliance
        merchant -= excess - trimmed_alliance
        lines.append(BreakdownLine("cap:transaction", -excess, purchase.asset, f"at most {cap} per purchase"))

    other: dict[str, int] = {}
    for rule in sorted(rules, key=lambda r: r.code):
        config = rule.config
        if (
            rule.kind == "tag_rate"
            and "asset" in config
            and config["tag"] in purchase.tags
            and schedule_matches(config.get("schedule"), purchase.local_date)
        ):
            points = _rounded(purchase.amount * Decimal(str(config["rate"])), rounding)
            if points > 0:
                other[config["asset"]] = other.get(config["asset"], 0) + points
                lines.append(BreakdownLine(rule.code, points, config["asset"], f"{config['rate']} per CNY"))

    assert merchant >= 0 and alliance >= 0
    daily = settings.get("capPerMemberDay")
    return EarnPlan(merchant, alliance, other, tuple(lines), int(daily) if daily is not None else None)
