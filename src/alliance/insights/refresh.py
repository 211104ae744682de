"""`alliance insights refresh`: bring the insight summaries up to date, in one transaction.

The steps are SECURITY DEFINER functions (``migrations/sql/0019_insights.sql``) run in the
operator context, in the order of `REFRESH_STEPS`. Other features add their own steps with
`register_step` (or by extending the list at import time), e.g. targeted offers' uptake and the
operator's views; a step is any ``async (session, context) -> int`` (rows written).

Overlapping runs (a slow run and the next CronJob, or a manual run) are safe: a run takes a
transaction-scoped advisory lock and one that cannot get it does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.config import Settings
from alliance.db import Database
from alliance.db.database import OPERATOR, run_sql
from alliance.insights.operator import refresh_operator_insights
from alliance.offers.results import refresh_offer_results

_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtextextended('alliance:insights:refresh', 0))")
# Backward scan of the primary key from the newest id: stops at the first old-enough posting.
_HORIZON = text(
    "SELECT coalesce((SELECT id FROM ledger_transactions WHERE created_at <= :cutoff"
    " ORDER BY id DESC LIMIT 1), 0)"
)
RECENT_DAYS = 90  # "visits in the last 90 days" on a member's profile
BACKDATING_DAYS = 7  # an earn may be dated up to 7 days back
CROSS_MERCHANT_MONTHS = 13  # months of cross-merchant counts kept up to date (12 shown + the current)


@dataclass
class RefreshContext:
    """What one run knows: the settings, the business day it runs for, the newest posting it folds
    in, the months whose postings changed (for steps keyed by month), and whether this is a full
    rebuild (a step with summaries of its own forgets them first)."""

    settings: Settings
    today: date
    upto: int
    touched_months: list[date] = field(default_factory=list)
    full: bool = False


Step = Callable[[AsyncSession, RefreshContext], Awaitable[int]]


@dataclass(frozen=True)
class RefreshStep:
    name: str
    run: Step


async def fold_horizon(session: AsyncSession, settings: Settings, now: datetime) -> int:
    """The newest ledger transaction a refresh may fold in: the newest one older than
    ``insights_refresh_lag_seconds``. Identity values are drawn before commit, so a lower id may
    still commit after a higher one is visible; a posting is one short statement, so nothing
    drawn before the lag is still in flight, and no refresh waits for (or blocks) the postings."""
    cutoff = now - timedelta(seconds=settings.insights_refresh_lag_seconds)
    return int((await run_sql(session, _HORIZON, {"cutoff": cutoff})).scalar_one())


async def _scalar(session: AsyncSession, sql: str, params: dict[str, object]) -> int:
    return int((await run_sql(session, text(sql), params)).scalar_one() or 0)


def keep_days_since(context: RefreshContext) -> date:
    """The oldest business day the per-day table keeps: the rising windows and the last 90 days,
    plus the back-dating limit (a late posting still lands on a kept day)."""
    s = context.settings
    days = max(7 * (s.insights_rising_recent_weeks + s.insights_rising_baseline_weeks), RECENT_DAYS)
    return context.today - timedelta(days=days + BACKDATING_DAYS)


async def facts(session: AsyncSession, context: RefreshContext) -> int:
    return await _scalar(
        session,
        "SELECT insights_refresh_facts(:tz, :upto, :keep_since)",
        {"tz": context.settings.time_zone, "upto": context.upto, "keep_since": keep_days_since(context)},
    )


async def rising(session: AsyncSession, context: RefreshContext) -> int:
    s = context.settings
    return await _scalar(
        session,
        "SELECT insights_refresh_rising(:today, :recent, :baseline, :minimum)",
        {
            "today": context.today,
            "recent": s.insights_rising_recent_weeks,
            "baseline": s.insights_rising_baseline_weeks,
            "minimum": s.insights_rising_min_count,
        },
    )


async def segments(session: AsyncSession, context: RefreshContext) -> int:
    return await _scalar(session, "SELECT insights_refresh_segments(:today)", {"today": context.today})


async def redemptions(session: AsyncSession, context: RefreshContext) -> int:
    return await _scalar(session, "SELECT insights_refresh_redemptions()", {})


async def retention(session: AsyncSession, context: RefreshContext) -> int:
    return await _scalar(
        session,
        "SELECT insights_refresh_retention(:tz, :k)",
        {"tz": context.settings.time_zone, "k": context.settings.insights_k_anonymity},
    )


def _month_minus(month: date, months: int) -> date:
    index = month.year * 12 + month.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


async def cross_categories(session: AsyncSession, context: RefreshContext) -> int:
    oldest = _month_minus(context.today.replace(day=1), CROSS_MERCHANT_MONTHS - 1)
    months = [month for month in context.touched_months if month >= oldest]
    if not months:
        return 0
    return await _scalar(
        session,
        "SELECT insights_refresh_cross_categories(:tz, :k, CAST(:months AS date[]))",
        {"tz": context.settings.time_zone, "k": context.settings.insights_k_anonymity, "months": months},
    )


async def offer_results(session: AsyncSession, context: RefreshContext) -> int:
    return await refresh_offer_results(await session.connection())


# In order: segments before redemptions (by segment) and offer results (segment sizes), facts
# before everything else.
REFRESH_STEPS: list[RefreshStep] = [
    RefreshStep("facts", facts),
    RefreshStep("rising", rising),
    RefreshStep("segments", segments),
    RefreshStep("offer_results", offer_results),
    RefreshStep("redemptions", redemptions),
    RefreshStep("retention", retention),
    RefreshStep("cross_categories", cross_categories),
]


def register_step(step: RefreshStep, after: str | None = None) -> None:
    """Add a step (at the end, or right after the step named ``after``)."""
    assert all(existing.name != step.name for existing in REFRESH_STEPS), f"step {step.name} exists"
    index = len(REFRESH_STEPS) if after is None else [s.name for s in REFRESH_STEPS].index(after) + 1
    REFRESH_STEPS.insert(index, step)


async def refresh(
    db: Database, settings: Settings, *, full: bool = False, now: datetime | None = None
) -> dict[str, int] | None:
    """Run every step in one transaction; the rows each wrote (and its milliseconds, as
    ``<step>_ms``), or None when another run holds the lock. ``full`` forgets the summaries first
    and rebuilds them from the whole ledger. The operator's flow and liability summaries follow in
    transactions of their own (`refresh_operator_insights`: it briefly waits for the postings in
    flight, which must not last as long as this transaction)."""
    now = now or datetime.now(UTC)
    today = now.astimezone(ZoneInfo(settings.time_zone)).date()
    async with db.transaction(OPERATOR) as session:
        if not (await run_sql(session, _LOCK)).scalar_one():
            return None
        await run_sql(session, text("SET LOCAL work_mem = '256MB'"))
        if full:
            await run_sql(session, text("SELECT insights_reset()"))
        upto = await fold_horizon(session, settings, now)
        touched = (
            await run_sql(
                session,
                text("SELECT insights_touched_months(:tz, :upto)"),
                {"tz": settings.time_zone, "upto": upto},
            )
        ).scalar_one()
        context = RefreshContext(settings, today, upto, list(touched or []), full)
        counts: dict[str, int] = {}
        for step in REFRESH_STEPS:
            started = time.perf_counter()
            counts[step.name] = await step.run(session, context)
            counts[f"{step.name}_ms"] = round((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    operator = await refresh_operator_insights(db, upto)
    counts["operator_flows"] = operator.flow_rows
    counts["operator_liability"] = operator.liability_rows
    counts["operator_ms"] = round((time.perf_counter() - started) * 1000)
    return counts
