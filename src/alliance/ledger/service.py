"""Ledger operations: validate a request, post it through its SQL function, return the payload.

Each posting is one call to a SECURITY DEFINER function (one round trip, one transaction) that
enforces the ledger rules under the member's wallet lock and stores its answer under the
caller's idempotency key. The payload it returns is a plain dict shaped like the GraphQL
payload (``transaction``, ``balance``, ``hold``, ``userErrors``), remembered byte for byte.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.db import AccessContext, Database
from alliance.db.calls import json_text
from alliance.db.database import run_sql
from alliance.earning import service as earning_rules
from alliance.earning.engine import (
    BreakdownLine,
    EarnPlan,
    MemberFacts,
    Purchase,
    Rule,
    has_segment_rules,
    plan_earn,
)
from alliance.errors import DomainError
from alliance.ledger import limits
from alliance.ledger.groups import EarnGroups, can_group
from alliance.ledger.models import Asset, LedgerTransaction, Lot
from alliance.observability import count_posting

Payload = dict[str, Any]

ASSET_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,31}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True, slots=True)
class Poster:
    """Who posts: the idempotency scope (the API client) and the merchant acting (None: operator)."""

    scope: str
    tenant_id: int | None


# -- validation ----------------------------------------------------------------------------------


def check_key(key: str) -> str:
    if not 1 <= len(key) <= limits.MAX_IDEMPOTENCY_KEY:
        raise DomainError(
            "INVALID_IDEMPOTENCY_KEY",
            f"idempotencyKey must be 1-{limits.MAX_IDEMPOTENCY_KEY} chars",
            "idempotencyKey",
        )
    return key


def check_points(points: int, field: str = "points") -> int:
    if not 0 < points <= limits.MAX_POINTS:
        raise DomainError("INVALID_POINTS", f"points must be between 1 and {limits.MAX_POINTS}", field)
    return points


def check_amount(amount: Decimal) -> Decimal:
    if amount.as_tuple().exponent < -limits.AMOUNT_DECIMALS:  # type: ignore[operator]
        raise DomainError("INVALID_AMOUNT", "amount has more than 2 decimal places", "amount")
    if not Decimal(0) < amount <= limits.MAX_AMOUNT:
        raise DomainError(
            "INVALID_AMOUNT", f"amount must be positive and at most {limits.MAX_AMOUNT}", "amount"
        )
    return amount


def check_asset(asset: str) -> str:
    if not ASSET_CODE.match(asset):
        raise DomainError("UNKNOWN_ASSET", f"no asset {asset!r}", "asset")
    return asset


def check_text(value: str | None, field: str, maximum: int, required: bool = False) -> str | None:
    if value is not None:
        value = value.strip() or None
    if value is None:
        if required:
            raise DomainError("REQUIRED", f"{field} is required", field)
        return None
    if len(value) > maximum:
        raise DomainError("TOO_LONG", f"{field} must be at most {maximum} characters", field)
    return value


def check_effective_at(effective_at: datetime | None) -> datetime | None:
    """Business time may be backdated a little (a POS that was offline), never set in the future."""
    if effective_at is None:
        return None
    if effective_at.tzinfo is None:
        raise DomainError("INVALID_EFFECTIVE_AT", "effectiveAt needs a time zone offset", "effectiveAt")
    now = datetime.now(UTC)
    if effective_at > now:
        raise DomainError("INVALID_EFFECTIVE_AT", "effectiveAt cannot be in the future", "effectiveAt")
    if now - effective_at > limits.MAX_BACKDATE:
        raise DomainError(
            "INVALID_EFFECTIVE_AT",
            f"effectiveAt may be at most {limits.MAX_BACKDATE.days} days ago",
            "effectiveAt",
        )
    return effective_at


def request_hash(operation: str, request: dict[str, Any]) -> str:
    """A stable digest of what was asked, to tell a retry from a different request under one key.

    Hashed as the standard library writes it, byte for byte: a retry after an upgrade must find
    the digest its first attempt stored."""
    canonical = json.dumps({"op": operation, **request}, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- posting -------------------------------------------------------------------------------------


@functools.cache
def call_sql(function: str, names: tuple[str, ...]) -> str:
    """``SELECT function(name => $1, ...)``: named arguments, so the order cannot go wrong."""
    assert re.fullmatch(r"[a-z_]+", function) and all(re.fullmatch(r"p_[a-z_]+", n) for n in names)
    arguments = ", ".join(f"{name} => ${position}" for position, name in enumerate(names, 1))
    return f"SELECT {function}({arguments})"


async def post_idempotent(db: Database, function: str, params: dict[str, Any]) -> Payload:
    """Call a ledger function. A unique violation on the idempotency record means a concurrent
    first attempt with the same key won; the retry then returns that attempt's response."""
    statement = call_sql(function, tuple(params))
    for attempt in range(2):
        try:
            payload = await db.call(statement, *params.values())
        except asyncpg.UniqueViolationError:
            if attempt == 1:
                raise
            continue
        assert isinstance(payload, dict) and "userErrors" in payload, payload
        count_posting(function, payload)
        return payload
    raise AssertionError("unreachable")


def idempotency_params(poster: Poster, operation: str, key: str, request: dict[str, Any]) -> dict[str, Any]:
    return {"p_scope": poster.scope, "p_key": check_key(key), "p_hash": request_hash(operation, request)}


@dataclass(frozen=True, slots=True)
class EarnItem:
    """One purchase: what `earn_points`, `preview_earn` and `earn_points_batch` are given."""

    member_number: str
    amount: Decimal
    order_ref: str
    currency: str = "CNY"
    store_code: str | None = None
    category: str | None = None
    tags: tuple[str, ...] = ()
    asset: str = "POINTS"
    effective_at: datetime | None = None


MAX_BATCH_ITEMS = 1000
MAX_TAGS = 20


def _check_earn_item(item: EarnItem) -> dict[str, Any]:
    """The validated request (as hashed for idempotency), or a DomainError for the field at fault."""
    if not CURRENCY.match(item.currency):
        raise DomainError("INVALID_CURRENCY", "currency must be an ISO 4217 code", "currency")
    if item.currency != "CNY":
        raise DomainError("UNSUPPORTED_CURRENCY", "only CNY purchases earn points today", "currency")
    if len(item.tags) > MAX_TAGS or any(not 1 <= len(tag) <= 64 for tag in item.tags):
        raise DomainError("INVALID_TAGS", f"at most {MAX_TAGS} tags of 1-64 characters", "tags")
    effective = check_effective_at(item.effective_at)
    return {
        "member_number": check_text(item.member_number, "memberNumber", 32, required=True),
        "amount": str(check_amount(item.amount)),
        "currency": item.currency,
        "order_ref": check_text(item.order_ref, "orderRef", limits.MAX_ORDER_REF, required=True),
        "store_code": item.store_code,
        "category": check_text(item.category, "category", 64),
        "tags": sorted(set(item.tags)),
        "asset": check_asset(item.asset),
        "effective_at": effective.isoformat() if effective else None,
    }


def _plan(item: EarnItem, rules: list[Rule], facts: MemberFacts | None, time_zone: str) -> EarnPlan:
    purchase = Purchase(
        amount=item.amount,
        at=item.effective_at or datetime.now(UTC),
        time_zone=time_zone,
        asset=item.asset,
        category=item.category,
        tags=tuple(item.tags),
        store_code=item.store_code,
    )
    return plan_earn(purchase, rules, facts or MemberFacts())


async def _segments_if_targeted(
    db: Database, tenant_id: int, member_numbers: list[str], rules: list[Rule]
) -> dict[str, frozenset[str]]:
    """The members' segments if a segment-restricted rule is among ``rules``; else nothing, and
    no round trip: the earn path of a merchant without a live offer is unchanged."""
    if not has_segment_rules(rules):
        return {}
    return await earning_rules.member_segments(db, tenant_id, member_numbers)


def _plan_json(plan: EarnPlan) -> dict[str, Any]:
    return {
        "points": plan.merchant_points,
        "alliance": plan.alliance_points,
        "other": plan.other_assets,
        "breakdown": [line.as_dict() for line in plan.breakdown],
        "dailyCap": plan.cap_per_member_day,
    }


async def preview_earn(db: Database, poster: Poster, item: EarnItem, time_zone: str) -> EarnPlan:
    """The earn computation for a POS screen: what the purchase would earn now, nothing written."""
    assert poster.tenant_id is not None, "earning is a merchant operation"
    _check_earn_item(item)
    at = item.effective_at or datetime.now(UTC)
    async with db.transaction(AccessContext("merchant", tenant_id=poster.tenant_id)) as session:
        # The refusals earnPoints would give (unknown member, asset or store), read-only.
        refusal = (
            await run_sql(
                session,
                text("SELECT refusal FROM ledger_check_context(:t, :n, :a, :s)"),
                {"t": poster.tenant_id, "n": item.member_number, "a": item.asset, "s": item.store_code},
            )
        ).scalar_one()
    if refusal is not None:
        error = refusal["userErrors"][0]
        raise DomainError(error["code"], error["message"], error["field"])
    facts = await earning_rules.member_facts(
        db, poster.tenant_id, [item.member_number], item.asset, at, with_today=True
    )
    rules = await earning_rules.cached_rules(db, poster.tenant_id, at)
    segments = await _segments_if_targeted(db, poster.tenant_id, [item.member_number], rules)
    member_facts = replace(facts[item.member_number], segments=segments.get(item.member_number, frozenset()))
    plan = _plan(item, rules, member_facts, time_zone)
    cap = plan.cap_per_member_day
    if cap is not None and facts[item.member_number].earned_today + plan.points > cap:
        excess = min(plan.points, facts[item.member_number].earned_today + plan.points - cap)
        alliance = plan.alliance_points - min(plan.alliance_points, excess)
        merchant = plan.points - excess - alliance
        capped = (
            *plan.breakdown,
            BreakdownLine("cap:member-day", -excess, item.asset, f"at most {cap} per day"),
        )
        plan = EarnPlan(merchant, alliance, plan.other_assets, capped, cap)
    return plan


async def earn_points(
    db: Database, poster: Poster, *, idempotency_key: str, item: EarnItem, time_zone: str
) -> Payload:
    """Points for a purchase under the merchant's earning rules, as lots the merchant (and, for an
    alliance-funded campaign bonus, the alliance) issues; the breakdown is kept on the transaction."""
    assert poster.tenant_id is not None, "earning is a merchant operation"
    request = _check_earn_item(item)
    at = item.effective_at or datetime.now(UTC)
    rules = await earning_rules.cached_rules(db, poster.tenant_id, at)
    # The member's segments matter only while a targeted offer is in force: one lookup then.
    segments = (await _segments_if_targeted(db, poster.tenant_id, [item.member_number], rules)).get(
        item.member_number, frozenset()
    )
    # One plan per tier; the posting function applies the member's, so no lookup round trip.
    plans = {
        str(facts.tier_rank): _plan_json(
            _plan(item, rules, replace(facts, segments=segments) if segments else facts, time_zone)
        )
        for facts in await earning_rules.tier_variants(db)
    }
    details = {key: value for key, value in (("category", item.category), ("tags", request["tags"])) if value}
    params = idempotency_params(poster, "earn", idempotency_key, request) | {
        "p_tenant": poster.tenant_id,
        "p_kind": "earn",
        "p_member_number": item.member_number,
        "p_asset": item.asset,
        "p_points": 0,
        "p_amount": item.amount,
        "p_currency": item.currency,
        "p_order_ref": request["order_ref"],
        "p_store_code": item.store_code,
        "p_reason": None,
        "p_details": json_text(details),
        "p_effective_at": item.effective_at,
        "p_plans": json_text(plans),
    }
    if can_group(plans):
        return await earn_groups(db).post(params)
    return await post_idempotent(db, "ledger_earn", params)


# One queue per Database: a server process has one for its lifetime. (The queue refers to its
# Database, so a weak mapping would not let either go; a closed Database stays here, unused.)
_EARN_GROUPS: dict[Database, EarnGroups] = {}


def earn_groups(db: Database) -> EarnGroups:
    """This process's queue of earns for ``db``, posted in groups (see alliance.ledger.groups)."""
    groups = _EARN_GROUPS.get(db)
    if groups is None:
        groups = _EARN_GROUPS[db] = EarnGroups(
            db,
            functools.partial(post_idempotent, db, "ledger_earn"),
            max_items=db.settings.earn_group_max_items,
            in_flight=db.settings.earn_groups_in_flight,
        )
    return groups


async def earn_points_batch(
    db: Database, poster: Poster, *, idempotency_key: str, items: list[EarnItem], time_zone: str
) -> Payload:
    """Many purchases in one set-based posting; a bad item is refused alone, the others post.

    The earning rules apply to each item as to a single earn, except the member's daily cap and
    co-earned assets, which only single earns apply. Returns
    ``{"results": [{"index", "transaction", "userErrors"}, ...], "userErrors": [...]}``.
    """
    assert poster.tenant_id is not None, "earning is a merchant operation"
    if not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise DomainError("INVALID_BATCH_SIZE", f"a batch has 1 to {MAX_BATCH_ITEMS} items", "items")
    checked: list[dict[str, Any]] = []
    refused: dict[int, dict[str, Any]] = {}
    for index, item in enumerate(items):
        try:
            checked.append(_check_earn_item(item) | {"idx": index})
        except DomainError as error:
            refused[index] = {
                "index": index,
                "transaction": None,
                "userErrors": [{"field": error.field, "code": error.code, "message": error.message}],
            }
    # The request as the client sent it (hashed before the rules' results are added to the items).
    request = {"items": [dict(entry) for entry in checked], "refused": sorted(refused)}
    payload: Payload = {"results": [], "userErrors": []}
    check_key(idempotency_key)
    if checked:
        now = datetime.now(UTC)
        numbers = sorted({c["member_number"] for c in checked})
        facts = await earning_rules.member_facts(db, poster.tenant_id, numbers, "POINTS", now)
        rules_at: dict[datetime, list[Rule]] = {}  # most items share one instant (now)
        for entry in checked:
            at = items[entry["idx"]].effective_at or now
            if at not in rules_at:
                rules_at[at] = await earning_rules.cached_rules(db, poster.tenant_id, at)
        # One set-based lookup of every member's segments, if a targeted offer is in force.
        in_force = [rule for rules in rules_at.values() for rule in rules]
        segments = await _segments_if_targeted(db, poster.tenant_id, numbers, in_force)
        for entry in checked:
            item = items[entry["idx"]]
            number = entry["member_number"]
            member = facts.get(number) or MemberFacts()
            if number in segments:
                member = replace(member, segments=segments[number])
            plan = _plan(item, rules_at[item.effective_at or now], member, time_zone)
            entry["points"], entry["alliance_points"] = plan.merchant_points, plan.alliance_points
            # A batch posts the purchase's own asset only; co-earned assets need a single earn.
            entry["breakdown"] = [line.as_dict() for line in plan.breakdown if line.asset == item.asset]
            entry["details"] = {
                k: v for k, v in (("category", entry["category"]), ("tags", entry["tags"])) if v
            }
        payload = await post_idempotent(
            db,
            "ledger_earn_batch",
            idempotency_params(poster, "earn_batch", idempotency_key, request)
            | {"p_tenant": poster.tenant_id, "p_items": json_text(checked)},
        )
    if payload["userErrors"]:
        return payload
    results = {result["index"]: result for result in payload["results"]} | refused
    assert len(results) == len(items), "every item has exactly one result"
    return {"results": [results[index] for index in range(len(items))], "userErrors": []}


async def award_points(
    db: Database,
    poster: Poster,
    *,
    idempotency_key: str,
    member_number: str,
    points: int,
    reason: str,
    asset: str,
) -> Payload:
    """Bonus points (survey, feedback, class attended, birthday) issued by the merchant."""
    assert poster.tenant_id is not None, "awarding is a merchant operation"
    request = {
        "member": member_number,
        "points": check_points(points),
        "asset": check_asset(asset),
        "reason": check_text(reason, "reason", limits.MAX_REASON, required=True),
    }
    return await post_idempotent(
        db,
        "ledger_earn",
        idempotency_params(poster, "award", idempotency_key, request)
        | {
            "p_tenant": poster.tenant_id,
            "p_kind": "award",
            "p_member_number": member_number,
            "p_asset": asset,
            "p_points": points,
            "p_amount": None,
            "p_currency": None,
            "p_order_ref": None,
            "p_store_code": None,
            "p_reason": request["reason"],
            "p_details": "{}",
            "p_effective_at": None,
        },
    )


COMPENSATION_REASONS = ("MERCHANT_FAULT", "SYSTEM_FAILURE", "REWARD_WITHDRAWN", "STORE_CLOSED", "GOODWILL")


async def compensate_points(
    db: Database,
    poster: Poster,
    *,
    idempotency_key: str,
    member_number: str,
    points: int,
    reason: str,
    note: str | None,
    asset: str,
) -> Payload:
    """Points for a member who could not use theirs (consumer protection, DESIGN.md rule 7).

    A merchant pays from its own issuance; the operator grants from the alliance. The reason
    code is kept on the transaction, so every compensation is auditable and queryable.
    """
    if reason not in COMPENSATION_REASONS:
        raise DomainError(
            "INVALID_REASON", f"reason must be one of {', '.join(COMPENSATION_REASONS)}", "reason"
        )
    request = {
        "member": member_number,
        "points": check_points(points),
        "asset": check_asset(asset),
        "reason": reason,
        "note": check_text(note, "note", limits.MAX_REASON),
    }
    return await post_idempotent(
        db,
        "ledger_earn",
        idempotency_params(poster, "compensate", idempotency_key, request)
        | {
            "p_tenant": poster.tenant_id,
            "p_kind": "compensate",
            "p_member_number": member_number,
            "p_asset": asset,
            "p_points": points,
            "p_amount": None,
            "p_currency": None,
            "p_order_ref": None,
            "p_store_code": None,
            "p_reason": reason if note is None else f"{reason}: {request['note']}",
            "p_details": json_text({"compensationReason": reason}),
            "p_effective_at": None,
        },
    )


async def extend_expiry(
    db: Database,
    poster: Poster,
    *,
    idempotency_key: str,
    member_number: str | None,
    issuer_tenant_id: int | None,
    days: int | None,
    new_expiry: datetime | None,
    reason: str,
    note: str | None,
) -> Payload:
    """Give points more validity because the member could not use them (rule 7). A merchant extends
    lots it issued (one member, or all its members); the operator any lots, optionally of one issuer."""
    if reason not in COMPENSATION_REASONS:
        raise DomainError(
            "INVALID_REASON", f"reason must be one of {', '.join(COMPENSATION_REASONS)}", "reason"
        )
    if (days is None) == (new_expiry is None):
        raise DomainError("INVALID_EXTENSION", "give exactly one of days or newExpiry", "days")
    if days is not None and not 1 <= days <= limits.EXPIRING_DAYS_MAX:
        raise DomainError("INVALID_DAYS", f"days must be 1-{limits.EXPIRING_DAYS_MAX}", "days")
    if new_expiry is not None and (new_expiry.tzinfo is None or new_expiry <= datetime.now(UTC)):
        raise DomainError(
            "INVALID_EXPIRY", "newExpiry must be a future instant with a time zone", "newExpiry"
        )
    if member_number is None and poster.tenant_id is None and issuer_tenant_id is None:
        raise DomainError("SCOPE_REQUIRED", "name a member or an issuing tenant", "memberNumber")
    full_reason = reason if note is None else f"{reason}: {check_text(note, 'note', limits.MAX_REASON)}"
    request = {
        "member": member_number,
        "issuer": issuer_tenant_id,
        "days": days,
        "newExpiry": new_expiry,
        "reason": full_reason,
    }
    return await post_idempotent(
        db,
        "ledger_extend_expiry",
        idempotency_params(poster, "extend_expiry", idempotency_key, request)
        | {
            "p_tenant": poster.tenant_id,
            "p_member_number": member_number,
            "p_issuer": issuer_tenant_id,
            "p_days": days,
            "p_new_expiry": new_expiry,
            "p_reason": full_reason,
        },
    )


def _spend_request(
    member_number: str, points: int, asset: str, order_ref: str, store_code: str | None
) -> dict[str, Any]:
    """The validated request of a redemption or a hold (as hashed for idempotency)."""
    return {
        "member": member_number,
        "points": check_points(points),
        "asset": check_asset(asset),
        "order": check_text(order_ref, "orderRef", limits.MAX_ORDER_REF, required=True),
        "store": store_code,
    }


async def redeem_points(
    db: Database,
    poster: Poster,
    *,
    idempotency_key: str,
    member_number: str,
    points: int,
    order_ref: str,
    store_code: str | None,
    asset: str,
) -> Payload:
    assert poster.tenant_id is not None, "redeeming is a merchant operation"
    request = _spend_request(member_number, points, asset, order_ref, store_code)
    return await post_idempotent(
        db,
        "ledger_redeem",
        idempotency_params(poster, "redeem", idempotency_key, request)
        | {
            "p_tenant": poster.tenant_id,
            "p_member_number": member_number,
            "p_asset": asset,
            "p_points": points,
            "p_order_ref": request["order"],
            "p_store_code": store_code,
        },
    )


async def hold_points(
    db: Database,
    poster: Poster,
    *,
    idempotency_key: str,
    member_number: str,
    points: int,
    order_ref: str,
    store_code: str | None,
    asset: str,
    timeout_seconds: int | None,
) -> Payload:
    """Reserve points for a pending redemption; they stop counting as available until released,
    captured, or the hold times out (by itself: no job needed)."""
    assert poster.tenant_id is not None, "holding is a merchant operation"
    timeout = limits.HOLD_TIMEOUT_DEFAULT_SECONDS if timeout_seconds is None else timeout_seconds
    if not 60 <= timeout <= limits.HOLD_TIMEOUT_MAX_SECONDS:
        raise DomainError(
            "INVALID_TIMEOUT",
            f"timeoutSeconds must be 60-{limits.HOLD_TIMEOUT_MAX_SECONDS}",
            "timeoutSeconds",
        )
    request = _spend_request(member_number, points, asset, order_ref, store_code) | {"timeout": timeout}
    return await post_idempotent(
        db,
        "ledger_hold",
        idempotency_params(poster, "hold", idempotency_key, request)
        | {
            "p_tenant": poster.tenant_id,
            "p_member_number": member_number,
            "p_asset": asset,
            "p_points": points,
            "p_order_ref": request["order"],
            "p_store_code": store_code,
            "p_timeout_seconds": timeout,
        },
    )


async def close_hold(
    db: Database,
    poster: Poster,
    *,
    idempotency_key: str,
    hold_id: int,
    points: int | None,
    release: bool,
) -> Payload:
    """Capture (all or part of) a hold as a redemption, or release it."""
    if points is not None:
        check_points(points)
    operation = "release" if release else "capture"
    request = {"hold": hold_id, "points": points}
    return await post_idempotent(
        db,
        "ledger_close_hold",
        idempotency_params(poster, operation, idempotency_key, request)
        | {
            "p_tenant": poster.tenant_id,
            "p_hold_id": hold_id,
            "p_points": points,
            "p_release": release,
        },
    )


async def reverse_transaction(
    db: Database,
    poster: Poster,
    *,
    idempotency_key: str,
    transaction_id: int,
    reason: str,
    points: int | None,
    force: bool,
) -> Payload:
    """Undo all or part of an earn (claw back its lot) or a redemption (restore its lots)."""
    if points is not None:
        check_points(points)
    if force and poster.tenant_id is not None:
        raise DomainError("FORCE_REQUIRES_OPERATOR", "only the operator may force a reversal", "force")
    request = {
        "transaction": transaction_id,
        "points": points,
        "force": force,
        "reason": check_text(reason, "reason", limits.MAX_REASON, required=True),
    }
    return await post_idempotent(
        db,
        "ledger_reverse",
        idempotency_params(poster, "reverse", idempotency_key, request)
        | {
            "p_tenant": poster.tenant_id,
            "p_transaction_id": transaction_id,
            "p_points": points,
            "p_reason": request["reason"],
            "p_force": force,
        },
    )


async def adjust_points(
    db: Database,
    poster: Poster,
    *,
    idempotency_key: str,
    member_number: str,
    points: int,
    asset: str,
    reason: str,
) -> Payload:
    """An operator's reason-coded correction, credited from or debited to the alliance."""
    assert poster.tenant_id is None, "adjustments are operator operations"
    if points == 0 or abs(points) > limits.MAX_POINTS:
        raise DomainError("INVALID_POINTS", "points must be non-zero and within limits", "points")
    request = {
        "member": member_number,
        "points": points,
        "asset": check_asset(asset),
        "reason": check_text(reason, "reason", limits.MAX_REASON, required=True),
    }
    return await post_idempotent(
        db,
        "ledger_adjust",
        idempotency_params(poster, "adjust", idempotency_key, request)
        | {
            "p_member_number": member_number,
            "p_asset": asset,
            "p_points": points,
            "p_reason": request["reason"],
        },
    )


# -- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExpiringPoints:
    points: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Balance:
    asset: str
    available: int
    held: int
    expiring: tuple[ExpiringPoints, ...] = ()


async def member_balances(session: AsyncSession, member_id: int, expiring_days: int) -> list[Balance]:
    """Every asset of the member's wallet; empty if the caller may not see the member."""
    if not 0 <= expiring_days <= limits.EXPIRING_DAYS_MAX:
        raise DomainError("INVALID_DAYS", f"days must be 0-{limits.EXPIRING_DAYS_MAX}", "days")
    rows = await run_sql(
        session,
        text("SELECT * FROM ledger_member_balances(:member, :days)"),
        {"member": member_id, "days": expiring_days},
    )
    return [
        Balance(
            row.asset,
            row.available,
            row.held,
            tuple(
                ExpiringPoints(item["points"], datetime.fromisoformat(item["expiresAt"]))
                for item in row.expiring
            ),
        )
        for row in rows
    ]


async def member_balance(
    session: AsyncSession, member_id: int, asset: str, as_of: datetime | None
) -> Balance:
    row = (
        await run_sql(
            session,
            text("SELECT ledger_member_balance(:member, :asset, :as_of)"),
            {"member": member_id, "asset": check_asset(asset), "as_of": as_of},
        )
    ).scalar_one()
    if row is None:
        raise DomainError("MEMBER_NOT_FOUND", "member not found", "memberNumber")
    return Balance(row["asset"], row["available"], row["held"])


@dataclass(frozen=True, slots=True)
class VerificationFailure:
    check: str
    failures: int
    example: str | None


async def verify_ledger(session: AsyncSession) -> list[VerificationFailure]:
    """Every ledger invariant checked against the whole book; an empty list means all hold."""
    rows = await run_sql(session, text("SELECT check_name, failures, example FROM ledger_verify()"))
    return [VerificationFailure(row.check_name, row.failures, row.example) for row in rows]


@dataclass(frozen=True, slots=True)
class TransactionFilter:
    kinds: tuple[str, ...] = ()
    tenant_id: int | None = None
    effective_from: datetime | None = None
    effective_to: datetime | None = None


async def list_transactions(
    session: AsyncSession, member_id: int, where: TransactionFilter, before_id: int | None, limit: int
) -> list[LedgerTransaction]:
    """Newest first, keyset-paged by id. Row-level security limits a merchant to its own postings."""
    query = select(LedgerTransaction).where(LedgerTransaction.member_id == member_id)
    if where.kinds:
        query = query.where(col(LedgerTransaction.kind).in_(where.kinds))
    if where.tenant_id is not None:
        query = query.where(LedgerTransaction.tenant_id == where.tenant_id)
    if where.effective_from is not None:
        query = query.where(col(LedgerTransaction.effective_at) >= where.effective_from)
    if where.effective_to is not None:
        query = query.where(col(LedgerTransaction.effective_at) < where.effective_to)
    if before_id is not None:
        query = query.where(col(LedgerTransaction.id) < before_id)
    query = query.order_by(col(LedgerTransaction.id).desc()).limit(limit)
    return list((await session.exec(query)).all())


async def list_lots(
    session: AsyncSession,
    member_id: int,
    asset: str | None,
    open_only: bool,
    after_id: int | None,
    limit: int,
) -> list[Lot]:
    """The member's lots in issue order; row-level security shows a merchant only its own."""
    query = select(Lot).where(Lot.member_id == member_id)
    if asset is not None:
        query = query.where(Lot.asset == asset)
    if open_only:
        query = query.where(col(Lot.remaining) > 0)
    if after_id is not None:
        query = query.where(col(Lot.id) > after_id)
    query = query.order_by(col(Lot.id)).limit(limit)
    return list((await session.exec(query)).all())


@dataclass(frozen=True, slots=True)
class TransactionSummary:
    """Where a posting happened (merchant and store, if any) and what it did to the member's wallet."""

    tenant_code: str | None
    tenant_name: str | None
    store_code: str | None
    store_name: str | None
    balance_change: int  # credits positive, debits negative: `points` alone carries no sign
    amount: Decimal | None  # the purchase an earn was for
    currency: str | None


async def transaction_summaries(
    session: AsyncSession, transaction_ids: list[int]
) -> dict[int, TransactionSummary]:
    """Summaries of many transactions in one query (a page of history)."""
    rows = await run_sql(
        session,
        text(
            "SELECT t.id, tn.code, tn.name, s.code, s.name,"
            # The wallet's change, from the lots the posting created and the lot movements it made
            # (equal to the wallet entry, which a merchant's context cannot see).
            " (SELECT coalesce(sum(l.amount), 0) FROM lots l WHERE l.transaction_id = t.id)"
            " + (SELECT coalesce(sum(m.points), 0) FROM lot_movements m WHERE m.transaction_id = t.id),"
            " t.amount, t.currency"
            " FROM ledger_transactions t"
            " LEFT JOIN tenants tn ON tn.id = t.tenant_id LEFT JOIN stores s ON s.id = t.store_id"
            " WHERE t.id = ANY(:ids)"
        ),
        {"ids": transaction_ids},
    )
    return {
        row[0]: TransactionSummary(*row[1:5], balance_change=int(row[5]), amount=row[6], currency=row[7])
        for row in rows
    }


async def transaction_by_id(session: AsyncSession, transaction_id: int) -> LedgerTransaction | None:
    return await session.get(LedgerTransaction, transaction_id)


async def list_assets(session: AsyncSession) -> list[Asset]:
    return list((await session.exec(select(Asset).order_by(col(Asset.code)))).all())


@dataclass(frozen=True, slots=True)
class ExpiringMember:
    member_id: int
    member_number: str
    asset: str
    points: int
    first_expiry: datetime


async def expiring_points(
    session: AsyncSession, asset: str, days: int, after_member_id: int | None, limit: int
) -> list[ExpiringMember]:
    """Members (visible to the caller) with points expiring within ``days``, by member id."""
    if not 1 <= days <= limits.EXPIRING_DAYS_MAX:
        raise DomainError("INVALID_DAYS", f"days must be 1-{limits.EXPIRING_DAYS_MAX}", "days")
    rows = await run_sql(
        session,
        text("SELECT * FROM ledger_expiring_points(:asset, :days, :after, :limit)"),
        {"asset": check_asset(asset), "days": days, "after": after_member_id, "limit": limit},
    )
    return [ExpiringMember(r.member_id, r.member_number, r.asset, r.points, r.first_expiry) for r in rows]


async def award_event_bonus(
    db: Database,
    poster: Poster,
    *,
    idempotency_key: str,
    member_number: str,
    event: str,
    note: str | None,
    time_zone: str,
    at: datetime | None = None,
) -> Payload:
    """The bonus a merchant's event rule grants (survey answered, class attended, birthday...),
    at most as often as the rule's limit allows per member."""
    assert poster.tenant_id is not None, "event bonuses are merchant operations"
    now = at or datetime.now(UTC)
    rules = await earning_rules.cached_rules(db, poster.tenant_id, now)
    rule = next((r for r in rules if r.kind == "event_bonus" and r.config["event"] == event), None)
    request = {"member": member_number, "event": event, "note": check_text(note, "note", limits.MAX_REASON)}
    if rule is None:
        # A retry of a bonus granted before the rule was retired still gets its original answer.
        identity = idempotency_params(poster, "award", idempotency_key, request)
        remembered = await db.call(
            "SELECT ledger_lookup_replay($1, $2, 'award', $3)",
            identity["p_scope"],
            identity["p_key"],
            identity["p_hash"],
        )
        if remembered is not None:
            return remembered
        raise DomainError("NO_SUCH_BONUS", f"this merchant has no {event} bonus in force", "event")
    limit = rule.config["limit"]
    since = earning_rules.event_window_start(limit["per"], now, time_zone)
    reason = f"{event}: {request['note']}" if request["note"] else event
    return await post_idempotent(
        db,
        "ledger_earn",
        idempotency_params(poster, "award", idempotency_key, request)
        | {
            "p_tenant": poster.tenant_id,
            "p_kind": "award",
            "p_member_number": member_number,
            "p_asset": rule.config["asset"],
            "p_points": rule.config["points"],
            "p_amount": None,
            "p_currency": None,
            "p_order_ref": None,
            "p_store_code": None,
            "p_reason": reason,
            "p_details": json_text(
                {
                    "event": event,
                    "rule": rule.code,
                    "breakdown": [
                        {
                            "rule": rule.code,
                            "points": rule.config["points"],
                            "asset": rule.config["asset"],
                            "note": event,
                        }
                    ],
                }
            ),
            "p_effective_at": None,
            "p_alliance_points": 0,
            "p_daily_cap": None,
            "p_other_assets": "{}",
            "p_event_limit": json_text({"event": event, "count": limit["count"], "since": since.isoformat()}),
        },
    )
