"""Earning rules: define (versioned), retire, load the ones in force, and plan an earn.

A rule code has at most one version in force at any instant: defining a code again closes the
open version at the new one's start. Rules that would make a purchase's outcome depend on
which of two rules is read first (two rates for one category or tag) are refused as ambiguous.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.db import AccessContext, Database
from alliance.db.database import run_sql
from alliance.earning.engine import ROUNDING, STACKING, MemberFacts, Rule
from alliance.earning.models import EarningRule
from alliance.errors import DomainError

RULE_CODE = re.compile(r"[a-z0-9][a-z0-9_-]{1,62}")
KINDS = ("base", "category_rate", "tag_rate", "multiplier", "event_bonus")
EVENTS = (
    "ENROLMENT",
    "BIRTHDAY",
    "SURVEY",
    "FEEDBACK",
    "SUGGESTION",
    "SERVICE_EVENT",
    "GREEN_SHARING",
    "REFERRAL",
)
LIMIT_PERIODS = ("day", "month", "year", "lifetime")
RULES_CACHE_SECONDS = 5.0
MAX_RULES_PER_TENANT = 200


def _invalid(message: str, field: str = "config") -> DomainError:
    return DomainError("INVALID_RULE", message, field)


def _decimal(config: dict[str, Any], key: str, low: Decimal, high: Decimal) -> str:
    try:
        value = Decimal(str(config[key]))
    except (KeyError, InvalidOperation) as exc:
        raise _invalid(f"{key} must be a decimal number") from exc
    if not low <= value <= high:
        raise _invalid(f"{key} must be between {low} and {high}")
    return str(value)


def _schedule(raw: dict[str, Any]) -> dict[str, Any]:
    allowed = {"from", "to", "weekdays", "dates", "every"}
    if set(raw) - allowed:
        raise _invalid(f"schedule keys are {sorted(allowed)}")
    schedule: dict[str, Any] = {}
    try:
        for key in ("from", "to"):
            if key in raw:
                schedule[key] = date.fromisoformat(raw[key]).isoformat()
        if "weekdays" in raw:
            days = sorted({int(d) for d in raw["weekdays"]})
            if not days or not all(1 <= d <= 7 for d in days):
                raise _invalid("weekdays are 1 (Monday) to 7 (Sunday)")
            schedule["weekdays"] = days
        if "dates" in raw:
            schedule["dates"] = sorted({date.fromisoformat(d).isoformat() for d in raw["dates"]})[:366]
        if "every" in raw:
            days = int(raw["every"]["days"])
            if not 2 <= days <= 366:
                raise _invalid("every.days must be 2-366")
            schedule["every"] = {
                "anchor": date.fromisoformat(raw["every"]["anchor"]).isoformat(),
                "days": days,
            }
    except (ValueError, TypeError, KeyError) as exc:
        raise _invalid("malformed schedule (dates are YYYY-MM-DD)") from exc
    return schedule


def validate_config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """The normalised config of a rule, or INVALID_RULE naming what is wrong."""
    try:
        return _validate_config(kind, config)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise _invalid(f"malformed {kind} config") from exc


def _validate_config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise _invalid("config must be an object")
    if kind not in KINDS:
        raise DomainError("INVALID_RULE", f"kind must be one of {', '.join(KINDS)}", "kind")
    one, ten = Decimal(1), Decimal(10)
    if kind == "base":
        rounding = config.get("rounding", "floor")
        stacking = config.get("stacking", "highest")
        if rounding not in ROUNDING or stacking not in STACKING:
            raise _invalid("rounding is floor|round|ceil; stacking is highest|multiply")
        normal: dict[str, Any] = {
            "rate": _decimal(config, "rate", Decimal(0), Decimal(1000)),
            "rounding": rounding,
            "minimumSpend": _decimal({"v": config.get("minimumSpend", 0)}, "v", Decimal(0), Decimal(10**9)),
            "stacking": stacking,
            "capPerTransaction": None,
            "capPerMemberDay": None,
        }
        for key in ("capPerTransaction", "capPerMemberDay"):
            if config.get(key) is not None:
                cap = int(config[key])
                if not 1 <= cap <= 10**9:
                    raise _invalid(f"{key} must be 1-1000000000")
                normal[key] = cap
        return normal
    if kind == "category_rate":
        return _targeted(
            config,
            {
                "category": str(config.get("category", "")).strip()[:64] or _missing("category"),
                "multiplier": _decimal(config, "multiplier", one, ten),
            },
        )
    if kind == "tag_rate":
        tag = str(config.get("tag", "")).strip()[:64] or _missing("tag")
        if "asset" in config:
            if config.get("segment"):
                raise _invalid("a co-earn rule (asset) cannot be segment-restricted")
            return _targeted(
                config,
                {
                    "tag": tag,
                    "asset": str(config["asset"]),
                    "rate": _decimal(config, "rate", Decimal(0), Decimal(1000)),
                },
            )
        return _targeted(config, {"tag": tag, "multiplier": _decimal(config, "multiplier", one, ten)})
    if kind == "multiplier":
        normal = _targeted(config, {"multiplier": _decimal(config, "multiplier", one, ten)})
        if config.get("stores"):
            if not isinstance(config["stores"], list):
                raise _invalid("stores is a list of store codes")
            normal["stores"] = sorted({str(code) for code in config["stores"]})[:100]
        if config.get("minTierRank"):
            normal["minTierRank"] = int(config["minTierRank"])
        return normal
    event = config.get("event")
    if event not in EVENTS:
        raise _invalid(f"event must be one of {', '.join(EVENTS)}")
    points = int(config.get("points", 0))
    if not 1 <= points <= 1_000_000:
        raise _invalid("points must be 1-1000000")
    # A birthday gift pack comes once a year; any other bonus once, unless the rule says otherwise.
    limit = config.get("limit") or {"count": 1, "per": "year" if event == "BIRTHDAY" else "lifetime"}
    if limit.get("per") not in LIMIT_PERIODS or not 1 <= int(limit.get("count", 0)) <= 366:
        raise _invalid("limit is {count: 1-366, per: day|month|year|lifetime}")
    return {
        "event": event,
        "points": points,
        "asset": str(config.get("asset", "POINTS")),
        "limit": {"count": int(limit["count"]), "per": limit["per"]},
    }


def _targeted(config: dict[str, Any], normal: dict[str, Any]) -> dict[str, Any]:
    """``normal`` with the optional schedule (e.g. a two-week date range) and segment (a targeted
    offer: only members of the merchant's customer segment ``segment`` get the bonus)."""
    if config.get("schedule"):
        normal["schedule"] = _schedule(config["schedule"])
    if config.get("segment") is not None:
        segment = str(config["segment"])
        if not RULE_CODE.fullmatch(segment):
            raise _invalid("segment is a segment code (a lowercase slug)")
        normal["segment"] = segment
    return normal


def _missing(key: str) -> str:
    raise _invalid(f"{key} is required")


def _conflict_key(kind: str, config: dict[str, Any]) -> tuple[str, ...] | None:
    """Two rules with the same key in force at once would be ambiguous."""
    if kind == "base":
        return ("base",)
    # An offer to a segment is keyed apart from the merchant's general rate (for its members the
    # stacking policy combines both, as for any two multipliers); two offers of one category to
    # one segment at once would be ambiguous.
    if kind == "category_rate":
        return ("category", config["category"], config.get("segment", ""))
    if kind == "tag_rate":
        return ("tag", config["tag"], config.get("asset", ""), config.get("segment", ""))
    if kind == "event_bonus":
        return ("event", config["event"])
    return None


async def define_rule(
    session: AsyncSession,
    tenant_id: int | None,
    code: str,
    kind: str,
    config: dict[str, Any],
    funded_by: str,
    effective_from: datetime | None,
    effective_until: datetime | None,
    for_offer: bool = False,
) -> EarningRule:
    """A new version of rule ``code`` from ``effective_from`` (default now); the open version, if any,
    ends there. A campaign (tenant_id None) may be funded by the merchant or the alliance.
    The rule of a targeted offer changes only through the offer (``for_offer``)."""
    if not RULE_CODE.fullmatch(code):
        raise DomainError("INVALID_RULE_CODE", "code is a lowercase slug of 2-63 characters", "code")
    if funded_by not in ("merchant", "alliance") or (funded_by == "alliance" and tenant_id is not None):
        raise DomainError(
            "INVALID_FUNDING", "only an operator's campaign can be funded by the alliance", "fundedBy"
        )
    if tenant_id is None and kind != "multiplier":
        raise DomainError("INVALID_RULE", "alliance campaigns are multipliers", "kind")
    if not for_offer:
        await _refuse_offer_rule(session, tenant_id, code)
    normal = validate_config(kind, config)
    if "segment" in normal:
        await check_segment(session, tenant_id, normal["segment"])
    asset = normal.get("asset")
    if asset is not None:
        known = await run_sql(session, text("SELECT 1 FROM assets WHERE code = :a"), {"a": asset})
        if known.first() is None:
            raise DomainError("UNKNOWN_ASSET", f"no asset {asset!r}", "config")
    start = effective_from or datetime.now(UTC)
    if start.tzinfo is None or (effective_until is not None and effective_until.tzinfo is None):
        raise DomainError("INVALID_EFFECTIVE_FROM", "instants need a time zone offset", "effectiveFrom")
    if effective_until is not None and effective_until <= start:
        raise DomainError(
            "INVALID_EFFECTIVE_UNTIL", "effectiveUntil must be after effectiveFrom", "effectiveUntil"
        )
    await run_sql(
        session,
        text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
        {"k": f"earning_rules:{tenant_id}"},
    )
    rows = await _tenant_rules(session, tenant_id, include_campaigns=False)
    now = datetime.now(UTC)
    if sum(1 for r in rows if r.effective_until is None or r.effective_until > now) >= MAX_RULES_PER_TENANT:
        raise DomainError(
            "TOO_MANY_RULES", f"at most {MAX_RULES_PER_TENANT} current or scheduled rules", "code"
        )
    end = effective_until or datetime.max.replace(tzinfo=UTC)
    key = _conflict_key(kind, normal)
    for row in rows:
        row_end = row.effective_until or datetime.max.replace(tzinfo=UTC)
        overlaps = row.effective_from < end and start < row_end
        if not overlaps:
            continue
        if row.code == code:
            if row.effective_from >= start:
                raise DomainError(
                    "RULE_OVERLAP", "a later version of this rule already exists", "effectiveFrom"
                )
            row.effective_until = start  # the new version supersedes the open one
            session.add(row)
        elif key is not None and _conflict_key(row.kind, row.config) == key:
            raise DomainError(
                "AMBIGUOUS_RULE", f"rule {row.code!r} already covers this in the same period", "config"
            )
    rule = EarningRule(
        tenant_id=tenant_id,
        code=code,
        kind=kind,
        config=normal,
        funded_by=funded_by,
        effective_from=start,
        effective_until=effective_until,
    )
    session.add(rule)
    await session.flush()
    await session.refresh(rule)
    return rule


async def check_segment(session: AsyncSession, tenant_id: int | None, code: str) -> int:
    """The id of the tenant's active segment ``code``; a campaign cannot target a segment (segments
    are one merchant's customers), and another merchant's segment is as unknown as a missing one
    (row-level security hides it; the tenant filter says so explicitly)."""
    if tenant_id is None:
        raise DomainError(
            "SEGMENT_NOT_ALLOWED", "alliance campaigns cannot be restricted to a segment", "config"
        )
    row = (
        await run_sql(
            session,
            text("SELECT id, status FROM customer_segments WHERE tenant_id = :t AND code = :c"),
            {"t": tenant_id, "c": code},
        )
    ).first()
    if row is None:
        raise DomainError("UNKNOWN_SEGMENT", f"no segment {code!r}", "segment")
    if row.status != "active":
        raise DomainError("SEGMENT_ARCHIVED", f"segment {code!r} is archived", "segment")
    return int(row.id)


async def _refuse_offer_rule(session: AsyncSession, tenant_id: int | None, code: str) -> None:
    """An offer's rule is defined and ended with its offer, so members never read an offer whose
    bonus has silently changed or gone."""
    if tenant_id is None:
        return
    offer = await run_sql(
        session, text("SELECT 1 FROM offers WHERE tenant_id = :t AND code = :c"), {"t": tenant_id, "c": code}
    )
    if offer.first() is not None:
        raise DomainError("RULE_OF_OFFER", f"{code!r} is an offer's rule: use withdrawOffer", "code")


async def retire_rule(
    session: AsyncSession, tenant_id: int | None, code: str, at: datetime | None, for_offer: bool = False
) -> EarningRule:
    """End the version of ``code`` in force at ``at`` (default now). Versions scheduled to start
    later stay scheduled: retire them when they are in force, or define the code again."""
    if not for_offer:
        await _refuse_offer_rule(session, tenant_id, code)
    end = at or datetime.now(UTC)
    rows = [r for r in await _tenant_rules(session, tenant_id, include_campaigns=False) if r.code == code]
    current = next(
        (
            r
            for r in rows
            if r.effective_from <= end and (r.effective_until is None or end < r.effective_until)
        ),
        None,
    )
    if current is None:
        raise DomainError("RULE_NOT_FOUND", "no version of this rule is in force then", "code")
    current.effective_until = end
    session.add(current)
    await session.flush()
    return current


def forget_cached_rules() -> None:
    """Drop this process's cached rules; call after a rule change has committed."""
    _cache.clear()


async def _tenant_rules(
    session: AsyncSession, tenant_id: int | None, include_campaigns: bool
) -> list[EarningRule]:
    query = select(EarningRule)
    if tenant_id is None:
        query = query.where(col(EarningRule.tenant_id).is_(None))
    elif include_campaigns:
        query = query.where(or_(EarningRule.tenant_id == tenant_id, col(EarningRule.tenant_id).is_(None)))
    else:
        query = query.where(EarningRule.tenant_id == tenant_id)
    return list((await session.exec(query.order_by(col(EarningRule.id)))).all())


_cache: dict[int, tuple[float, list[EarningRule]]] = {}


async def rules_in_force(session: AsyncSession, tenant_id: int, at: datetime) -> list[Rule]:
    """The tenant's rules and the alliance campaigns in force at ``at``.

    Cached per process for a few seconds: a rule change takes effect on every replica within
    RULES_CACHE_SECONDS, and the hot earn path reads no rule rows.
    """
    cached = _cache.get(tenant_id)
    if cached is None or time.monotonic() - cached[0] > RULES_CACHE_SECONDS:
        cached = (time.monotonic(), await _tenant_rules(session, tenant_id, include_campaigns=True))
        _cache[tenant_id] = cached
    return _in_force(cached[1], at)


def _in_force(rows: list[EarningRule], at: datetime) -> list[Rule]:
    return [
        Rule(row.code, row.kind, row.config, row.funded_by, campaign=row.tenant_id is None)
        for row in rows
        if row.effective_from <= at and (row.effective_until is None or at < row.effective_until)
    ]


async def list_rules(session: AsyncSession, tenant_id: int | None, at: datetime | None) -> list[EarningRule]:
    """Every version (or those in force at ``at``) of the caller's rules, and the campaigns."""
    rows = await _tenant_rules(session, tenant_id, include_campaigns=tenant_id is not None)
    if at is None:
        return rows
    return [
        r for r in rows if r.effective_from <= at and (r.effective_until is None or at < r.effective_until)
    ]


async def member_facts(
    db: Database,
    tenant_id: int,
    member_numbers: list[str],
    asset: str,
    at: datetime,
    with_today: bool = False,
) -> dict[str, MemberFacts]:
    """Tier and today's earnings of members enrolled at the tenant — one round trip for any number."""
    rows = await db.call(
        "SELECT coalesce(json_agg(f), '[]') FROM earning_member_facts($1, $2, $3, $4, $5) f",
        tenant_id,
        member_numbers,
        asset,
        at,
        with_today,
    )
    return {
        row["member_number"]: MemberFacts(
            tier_code=row["tier_code"],
            tier_rank=row["tier_rank"],
            tier_multiplier=Decimal(str(row["earn_multiplier"])),
            earned_today=row["earned_today"],
        )
        for row in rows
    }


async def member_segments(
    db: Database, tenant_id: int, member_numbers: list[str]
) -> dict[str, frozenset[str]]:
    """The codes of the tenant's active segments each member is in (members in none are absent).

    Call only when a segment-restricted rule is in force (`engine.has_segment_rules`): merchants
    without a live offer pay nothing for segments on the earn path. One round trip, one indexed
    lookup per member, for one member or a whole batch.
    """
    found = await db.call("SELECT earning_member_segments($1, $2)", tenant_id, member_numbers)
    return {number: frozenset(codes) for number, codes in found.items()}


# Cache entries one request is refilling right now. The others keep using the expired entry
# meanwhile (a rule change takes RULES_CACHE_SECONDS to show anyway): without this, every
# request in flight when an entry expired opened a transaction of its own to refill it — under
# load, a burst of connections that then stayed in the pool.
_refilling: set[int | str] = set()


async def cached_rules(db: Database, tenant_id: int, at: datetime) -> list[Rule]:
    """`rules_in_force`, opening a transaction only when the cache must be refilled."""
    cached = _cache.get(tenant_id)
    if cached is not None and (
        time.monotonic() - cached[0] <= RULES_CACHE_SECONDS or tenant_id in _refilling
    ):
        return _in_force(cached[1], at)
    _refilling.add(tenant_id)
    try:
        async with db.transaction(AccessContext("merchant", tenant_id=tenant_id)) as session:
            return await rules_in_force(session, tenant_id, at)
    finally:
        _refilling.discard(tenant_id)


def event_window_start(per: str, at: datetime, time_zone: str) -> datetime:
    """Where an event bonus's limit period began (local calendar), e.g. 1 January for `year`."""
    local = at.astimezone(ZoneInfo(time_zone))
    if per == "lifetime":
        return datetime(1970, 1, 1, tzinfo=UTC)
    start = {
        "day": local.replace(hour=0, minute=0, second=0, microsecond=0),
        "month": local.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
        "year": local.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0),
    }[per]
    return start


_tiers_cache: tuple[float, list[MemberFacts]] | None = None


async def tier_variants(db: Database) -> list[MemberFacts]:
    """The facts of a member without a tier and of each tier, cached like the rules: an earn is
    planned once per tier, and the posting function applies the member's (one round trip less)."""
    global _tiers_cache
    cached = _tiers_cache
    if cached is not None and (time.monotonic() - cached[0] <= RULES_CACHE_SECONDS or "tiers" in _refilling):
        return cached[1]
    _refilling.add("tiers")
    try:
        async with db.transaction(AccessContext("operator")) as session:
            rows = (
                await run_sql(session, text("SELECT code, rank, earn_multiplier FROM tiers ORDER BY rank"))
            ).all()
        variants = [MemberFacts()] + [
            MemberFacts(
                tier_code=row.code, tier_rank=row.rank, tier_multiplier=Decimal(str(row.earn_multiplier))
            )
            for row in rows
            if row.rank > 0
        ]
    finally:
        _refilling.discard("tiers")
    _tiers_cache = (time.monotonic(), variants)
    return variants
