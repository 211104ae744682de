"""Create, list and withdraw a merchant's targeted offers; the offers made to a member.

An offer is the simplest product on top of earning rules that gives members a title and a text:
``create_offer`` defines the segment-restricted earning rule (code = the offer's code, in force
exactly over the offer's window, so the earn path needs nothing new beyond the member's
segments) and writes the ``offers`` row that the member app reads. The two are written in one
transaction, so there is never an offer without its rule or a targeted rule without its offer
text. Offers are not edited: withdraw one and create another.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.db.database import run_sql
from alliance.earning import service as earning_rules
from alliance.earning.models import EarningRule
from alliance.errors import DomainError
from alliance.offers.models import Offer

KINDS = ("category_rate", "tag_rate", "multiplier")
MAX_WINDOW = timedelta(days=366)
MAX_TITLE, MAX_DESCRIPTION = 120, 1000
MIN_MULTIPLIER, MAX_MULTIPLIER = Decimal(1), Decimal(10)


@dataclass(frozen=True, slots=True)
class OfferDraft:
    """What a merchant asks for: ``target`` is the category (category_rate) or tag (tag_rate)."""

    segment_code: str
    title: str
    description: str
    kind: str
    target: str | None
    multiplier: Decimal
    starts_at: datetime
    ends_at: datetime
    code: str | None = None


@dataclass(frozen=True, slots=True)
class OfferView:
    """An offer with the code of its segment (merchants) or its merchant's name (members)."""

    offer: Offer
    segment_code: str
    merchant_name: str


def status_of(offer: Offer, at: datetime) -> str:
    if offer.withdrawn_at is not None:
        return "withdrawn"
    if at < offer.starts_at:
        return "scheduled"
    return "live" if at < offer.ends_at else "ended"


def _check_draft(draft: OfferDraft, now: datetime) -> tuple[str, str, dict[str, Any]]:
    """The offer's code, the segment code and the earning rule's config, or the refusal."""
    title = draft.title.strip()
    if not 1 <= len(title) <= MAX_TITLE:
        raise DomainError("INVALID_TITLE", f"title is 1-{MAX_TITLE} characters", "title")
    if len(draft.description) > MAX_DESCRIPTION:
        raise DomainError("INVALID_DESCRIPTION", f"at most {MAX_DESCRIPTION} characters", "description")
    if draft.kind not in KINDS:
        raise DomainError("INVALID_KIND", f"kind is one of {', '.join(KINDS)}", "kind")
    if draft.starts_at.tzinfo is None or draft.ends_at.tzinfo is None:
        raise DomainError("INVALID_WINDOW", "instants need a time zone offset", "startsAt")
    if draft.ends_at <= draft.starts_at:
        raise DomainError("WINDOW_ENDS_BEFORE_START", "endsAt must be after startsAt", "endsAt")
    if draft.ends_at <= now:
        raise DomainError("WINDOW_IN_PAST", "the offer would be over before it is made", "endsAt")
    if draft.ends_at - draft.starts_at > MAX_WINDOW:
        raise DomainError("WINDOW_TOO_LONG", "an offer lasts at most 366 days", "endsAt")
    try:
        multiplier = Decimal(draft.multiplier)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise DomainError("INVALID_MULTIPLIER", "multiplier is a decimal number", "multiplier") from exc
    if not (MIN_MULTIPLIER < multiplier <= MAX_MULTIPLIER) or multiplier != multiplier.quantize(
        Decimal("0.01")
    ):
        raise DomainError(
            "INVALID_MULTIPLIER",
            "multiplier is above 1 and at most 10, with 2 decimals at most",
            "multiplier",
        )
    code = draft.code or f"offer-{secrets.token_hex(4)}"
    if not earning_rules.RULE_CODE.fullmatch(code):
        raise DomainError("INVALID_OFFER_CODE", "code is a lowercase slug of 2-63 characters", "code")
    config: dict[str, Any] = {"multiplier": str(multiplier), "segment": draft.segment_code}
    target = (draft.target or "").strip()
    if draft.kind == "category_rate":
        if not target:
            raise DomainError("CATEGORY_REQUIRED", "an offer on a category names it", "category")
        config["category"] = target
    elif draft.kind == "tag_rate":
        if not target:
            raise DomainError("TAG_REQUIRED", "an offer on a tag names it", "tag")
        config["tag"] = target
    elif target:
        raise DomainError("UNEXPECTED_TARGET", "an offer on every purchase names no category or tag", "kind")
    return code, draft.segment_code, config


async def create_offer(session: AsyncSession, tenant_id: int, draft: OfferDraft) -> Offer:
    """The offer and its earning rule (in force over exactly the offer's window), or the refusal.

    Refused: an unknown or archived segment (another merchant's segment is unknown), a window
    that ends before it starts or is already over, a code already used by a rule or offer of
    the merchant, and an offer that overlaps another live or scheduled offer of the same kind
    and target to the same segment (which of the two applies would be ambiguous).
    """
    now = datetime.now(UTC)
    code, segment_code, config = _check_draft(draft, now)
    try:
        segment_id = await earning_rules.check_segment(session, tenant_id, segment_code)
    except DomainError as error:
        raise DomainError(error.code, error.message, "segmentCode") from error
    taken = await session.exec(
        select(EarningRule.id).where(EarningRule.tenant_id == tenant_id, EarningRule.code == code).limit(1)
    )
    if taken.first() is not None:
        raise DomainError("OFFER_CODE_TAKEN", f"an earning rule or offer is already called {code!r}", "code")
    target = config.get("category") or config.get("tag")
    overlapping = await session.exec(
        select(Offer.code).where(
            Offer.tenant_id == tenant_id,
            Offer.segment_id == segment_id,
            Offer.kind == draft.kind,
            Offer.target == target if target is not None else col(Offer.target).is_(None),
            col(Offer.withdrawn_at).is_(None),
            col(Offer.starts_at) < draft.ends_at,
            draft.starts_at < col(Offer.ends_at),
        )
    )
    clash = overlapping.first()
    if clash is not None:
        raise DomainError("OFFER_OVERLAPS", f"offer {clash!r} already makes this offer then", "startsAt")
    try:
        await earning_rules.define_rule(
            session,
            tenant_id,
            code,
            draft.kind,
            config,
            "merchant",
            draft.starts_at,
            draft.ends_at,
            for_offer=True,
        )
    except DomainError as error:
        if error.code == "AMBIGUOUS_RULE":
            raise DomainError("OFFER_OVERLAPS", error.message, "startsAt") from error
        raise
    offer = Offer(
        tenant_id=tenant_id,
        code=code,
        segment_id=segment_id,
        title=draft.title.strip(),
        description=draft.description.strip(),
        kind=draft.kind,
        target=target,
        multiplier=Decimal(config["multiplier"]),
        starts_at=draft.starts_at,
        ends_at=draft.ends_at,
    )
    session.add(offer)
    await session.flush()
    await session.refresh(offer)
    return offer


async def withdraw_offer(session: AsyncSession, tenant_id: int, code: str) -> Offer:
    """End an offer now: a live offer's rule is retired now, a scheduled one's rule never starts.
    Points already earned under it stay earned."""
    now = datetime.now(UTC)
    offer = (
        await session.exec(select(Offer).where(Offer.tenant_id == tenant_id, Offer.code == code))
    ).first()
    if offer is None:
        raise DomainError("OFFER_NOT_FOUND", f"no offer {code!r}", "code")
    state = status_of(offer, now)
    if state in ("withdrawn", "ended"):
        raise DomainError(f"OFFER_{state.upper()}", f"offer {code!r} is already {state}", "code")
    if state == "scheduled":
        await run_sql(session, text("SELECT offers_cancel_scheduled_rule(:c)"), {"c": code})
    else:
        await earning_rules.retire_rule(session, tenant_id, code, now, for_offer=True)
    offer.withdrawn_at = now
    session.add(offer)
    await session.flush()
    return offer


async def get_offer(session: AsyncSession, offer_id: int) -> OfferView | None:
    """One offer the caller may see (row-level security decides), for ``node(id)``."""
    views = await _views(session, "o.id = :id", {"id": offer_id}, "o.id", 1)
    return views[0] if views else None


async def list_offers(
    session: AsyncSession, tenant_id: int | None, after_id: int | None, limit: int
) -> list[OfferView]:
    """The merchant's offers (the operator: every merchant's), newest first, keyset-paged by id."""
    where = (
        "(CAST(:tenant AS bigint) IS NULL OR o.tenant_id = :tenant)"
        " AND (CAST(:after AS bigint) IS NULL OR o.id < :after)"
    )
    return await _views(session, where, {"tenant": tenant_id, "after": after_id}, "o.id DESC", limit)


async def member_offers(session: AsyncSession, member_id: int, at: datetime) -> list[OfferView]:
    """The live offers made to the member: of active segments they are in, not withdrawn, in
    their window at ``at``; the soonest to end first. Row-level security allows a member no
    other offer; the membership condition repeats it so the query says what it means."""
    where = (
        "o.withdrawn_at IS NULL AND o.starts_at <= :at AND :at < o.ends_at AND s.status = 'active'"
        " AND EXISTS (SELECT 1 FROM customer_segment_members m"
        " WHERE m.segment_id = o.segment_id AND m.member_id = :member)"
    )
    return await _views(session, where, {"at": at, "member": member_id}, "o.ends_at, o.id", 50)


async def _views(
    session: AsyncSession, where: str, params: dict[str, Any], order: str, limit: int
) -> list[OfferView]:
    rows = (
        await run_sql(
            session,
            text(
                "SELECT o.id, o.tenant_id, o.code, o.segment_id, o.title, o.description, o.kind, o.target,"
                " o.multiplier, o.starts_at, o.ends_at, o.withdrawn_at, o.created_at,"
                " s.code AS segment_code, t.name AS merchant_name"
                " FROM offers o JOIN customer_segments s ON s.id = o.segment_id"
                " JOIN tenants t ON t.id = o.tenant_id"
                f" WHERE {where} ORDER BY {order} LIMIT :limit"
            ),
            params | {"limit": limit},
        )
    ).all()
    columns = set(Offer.model_fields)
    return [
        OfferView(
            Offer(**{k: v for k, v in row._mapping.items() if k in columns}),
            row.segment_code,
            row.merchant_name,
        )
        for row in rows
    ]
