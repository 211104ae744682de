"""Tier operations. Callers pass a session already scoped by `Database.transaction`.

Definitions are plain rows the operator upserts (row-level security lets only the operator
write them). Everything that moves a member between tiers is a SQL function running as the
owner (``migrations/sql/0004_tiers.sql``), so the audit trail is written in the same statement
as the change and the application role never writes ``member_tiers`` or ``tier_changes``.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.db.database import run_sql
from alliance.errors import DomainError, NotFound
from alliance.members.models import Member
from alliance.tiers.models import (
    Evaluation,
    MemberTierStatus,
    Tier,
    TierChange,
    TierChangeRow,
    TierProgress,
)

TIER_CODE = re.compile(r"[A-Z][A-Z0-9_]{1,31}")
MAX_NAME = 100
MAX_BENEFITS = 2000
MAX_RANK = 1000
MAX_QUALIFYING_POINTS = 1_000_000_000
MIN_MULTIPLIER = Decimal(1)
MAX_MULTIPLIER = Decimal(10)
MULTIPLIER_DECIMALS = 3

_DEFINE_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended('alliance:tiers:define', 0))")


def _check_multiplier(value: Decimal) -> Decimal:
    if not value.is_finite() or not MIN_MULTIPLIER <= value <= MAX_MULTIPLIER:
        raise DomainError(
            "INVALID_MULTIPLIER",
            f"earnMultiplier must be between {MIN_MULTIPLIER} and {MAX_MULTIPLIER}",
            "earnMultiplier",
        )
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MULTIPLIER_DECIMALS:
        raise DomainError(
            "INVALID_MULTIPLIER",
            f"earnMultiplier has at most {MULTIPLIER_DECIMALS} decimal places",
            "earnMultiplier",
        )
    return value


async def list_tiers(session: AsyncSession) -> list[Tier]:
    """Every tier, lowest rank (the base tier) first."""
    return list((await session.exec(select(Tier).order_by(col(Tier.rank)))).all())


async def tier_by_code(session: AsyncSession, code: str) -> Tier | None:
    return await session.get(Tier, code)


async def define_tier(
    session: AsyncSession,
    code: str,
    name: str,
    rank: int,
    qualifying_points: int,
    earn_multiplier: Decimal,
    benefits: str,
) -> Tier:
    """Create or update (by code) a tier definition. Operator only (row-level security).

    Ranks are unique; rank 0 is the base tier everyone starts in (qualifying with 0 points) and
    always exists; a higher rank needs strictly more qualifying points than every lower rank, so
    "the highest tier a member's points reach" is always the natural one. A changed threshold
    moves members at their next qualification (up) or nightly evaluation (down, after grace).
    """
    if not TIER_CODE.fullmatch(code):
        raise DomainError(
            "INVALID_TIER_CODE", "code must be 2-32 capitals, digits or '_', starting with a letter", "code"
        )
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise DomainError("INVALID_NAME", f"name must be 1 to {MAX_NAME} characters", "name")
    if not 0 <= rank <= MAX_RANK:
        raise DomainError("INVALID_RANK", f"rank must be between 0 and {MAX_RANK}", "rank")
    if not 0 <= qualifying_points <= MAX_QUALIFYING_POINTS:
        raise DomainError(
            "INVALID_QUALIFYING_POINTS",
            f"qualifyingPoints must be between 0 and {MAX_QUALIFYING_POINTS}",
            "qualifyingPoints",
        )
    if rank == 0 and qualifying_points != 0:
        raise DomainError(
            "INVALID_QUALIFYING_POINTS", "the base tier (rank 0) qualifies with 0 points", "qualifyingPoints"
        )
    earn_multiplier = _check_multiplier(earn_multiplier)
    benefits = benefits.strip()
    if len(benefits) > MAX_BENEFITS:
        raise DomainError("TOO_LONG", f"benefits must be at most {MAX_BENEFITS} characters", "benefits")

    # One definition change at a time, so the rank and threshold checks hold under concurrency.
    await run_sql(session, _DEFINE_LOCK)
    existing = await tier_by_code(session, code)
    if existing is not None and existing.rank == 0 and rank != 0:
        raise DomainError("BASE_TIER_REQUIRED", "the base tier (rank 0) cannot change its rank", "rank")
    holder = (
        await run_sql(
            session,
            text("SELECT code FROM tiers WHERE rank = :rank AND code <> :code"),
            {"rank": rank, "code": code},
        )
    ).scalar_one_or_none()
    if holder is not None:
        raise DomainError("RANK_TAKEN", f"tier {holder} already has rank {rank}", "rank")
    clash = (
        await run_sql(
            session,
            text(
                "SELECT code FROM tiers WHERE code <> :code"
                " AND ((rank < :rank AND qualifying_points >= :points)"
                " OR (rank > :rank AND qualifying_points <= :points)) ORDER BY rank LIMIT 1"
            ),
            {"code": code, "rank": rank, "points": qualifying_points},
        )
    ).scalar_one_or_none()
    if clash is not None:
        raise DomainError(
            "THRESHOLD_OUT_OF_ORDER",
            f"qualifyingPoints must rise with rank (conflicts with tier {clash})",
            "qualifyingPoints",
        )
    try:
        row = (
            await run_sql(
                session,
                text(
                    """INSERT INTO tiers (code, name, rank, qualifying_points, earn_multiplier, benefits)
                    VALUES (:code, :name, :rank, :points, :multiplier, :benefits)
                    ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, rank = EXCLUDED.rank,
                      qualifying_points = EXCLUDED.qualifying_points,
                      earn_multiplier = EXCLUDED.earn_multiplier, benefits = EXCLUDED.benefits
                    RETURNING *"""
                ),
                {
                    "code": code,
                    "name": name,
                    "rank": rank,
                    "points": qualifying_points,
                    "multiplier": earn_multiplier,
                    "benefits": benefits,
                },
            )
        ).one()
    except IntegrityError as exc:  # defensive: the lock above makes this unreachable
        raise DomainError("RANK_TAKEN", f"rank {rank} is taken", "rank") from exc
    return Tier.model_validate(dict(row._mapping))


async def member_tier(session: AsyncSession, member_id: int) -> MemberTierStatus | None:
    """The member's current tier (the base tier since enrolment if never moved), if visible."""
    row = (
        await run_sql(
            session,
            text(
                """SELECT t.code, t.name, t.rank, t.earn_multiplier,
                  coalesce(mt.since, m.created_at) AS since, mt.below_since
                FROM members m
                LEFT JOIN member_tiers mt ON mt.member_id = m.id
                JOIN tiers t ON t.code = coalesce(mt.tier_code,
                  (SELECT b.code FROM tiers b ORDER BY b.rank LIMIT 1))
                WHERE m.id = :member"""
            ),
            {"member": member_id},
        )
    ).one_or_none()
    if row is None:
        return None
    return MemberTierStatus(
        code=row.code,
        name=row.name,
        rank=row.rank,
        earn_multiplier=row.earn_multiplier,
        since=row.since,
        below_since=row.below_since,
    )


async def tier_progress(session: AsyncSession, member_id: int) -> TierProgress | None:
    """Rolling points and what the next tier needs: for the member and the operator only."""
    row = (
        await run_sql(session, text("SELECT * FROM tier_progress(:member)"), {"member": member_id})
    ).one_or_none()
    if row is None:
        return None
    return TierProgress(
        current_code=row.current_code,
        next_code=row.next_code,
        rolling_points=row.rolling_points,
        points_to_next=row.points_to_next,
        points_to_keep=row.points_to_keep,
        below_since=row.below_since,
        grace_ends_at=row.grace_ends_at,
    )


async def assign_tier(session: AsyncSession, member_number: str, code: str) -> tuple[int, str | None]:
    """The operator sets a member's tier (audited as 'operator'). Returns the member id and the
    previous tier code (None when the member already had this tier: nothing is recorded)."""
    member = (await session.exec(select(Member).where(Member.member_number == member_number))).first()
    if member is None or member.id is None:
        raise NotFound("member", "memberNumber")
    if await tier_by_code(session, code) is None:
        raise NotFound("tier", "tierCode")
    previous = (
        await run_sql(
            session, text("SELECT tier_assign(:member, :code)"), {"member": member.id, "code": code}
        )
    ).scalar_one()
    return member.id, previous


async def evaluate(session: AsyncSession) -> Evaluation:
    """The nightly evaluation of every member (idempotent; concurrent runs queue)."""
    raw = (await run_sql(session, text("SELECT tier_evaluate()"))).scalar_one()
    result = json.loads(raw) if isinstance(raw, str) else raw
    return Evaluation(
        evaluated=result["evaluated"],
        upgraded=result["upgraded"],
        downgraded=result["downgraded"],
        grace_started=result["graceStarted"],
        grace_ended=result["graceEnded"],
    )


async def list_changes(
    session: AsyncSession, member_id: int | None, before_id: int | None, limit: int
) -> list[TierChangeRow]:
    """Keyset page of the tier changes visible to the caller, newest first."""
    query = (
        select(TierChange, Member.member_number)
        .join(Member, col(Member.id) == col(TierChange.member_id))
        .order_by(col(TierChange.id).desc())
        .limit(limit)
    )
    if member_id is not None:
        query = query.where(col(TierChange.member_id) == member_id)
    if before_id is not None:
        query = query.where(col(TierChange.id) < before_id)
    rows = (await session.exec(query)).all()
    return [TierChangeRow(change=change, member_number=number) for change, number in rows]
