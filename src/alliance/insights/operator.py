"""The operator's view of the alliance: where points flow, what the alliance owes, how each
merchant is doing.

Every figure is read from the summary tables of revision 0018, which `refresh_operator_insights`
keeps up to date; a request never aggregates the ledger. Flows use settlement's own definitions
(issued and clawed back as in operator clearing, consumed and restored as in provenance netting,
expired as in the breakage report), bucketed by business day, ISO week and month (alliance time
zone) of the transactions' effective time, so a period gives the numbers its settlement batch
gives. Reports cover the periods *starting* in [from, to), as ``pointsFlow`` covers batches.

Expected breakage (a decision, documented here and in the API): per issuer, the share of its
points that *ended* over the last twelve whole months and this month so far by expiring rather
than by being redeemed, ``expired / (expired + redeemed)``, applied to what it has outstanding. An
issuer with fewer than ``MIN_HISTORY_POINTS`` such points gets the alliance-wide share instead
(one noisy month should not price a liability); with no history at all the estimate is zero.
Each (issuer, expiry month) cell is rounded to whole points, and totals are sums of cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.db import Database
from alliance.db.database import OPERATOR, run_sql
from alliance.errors import DomainError
from alliance.ledger.service import check_asset
from alliance.settlement.flows import check_range

MIN_HISTORY_POINTS = 10_000
PERIODS = ("day", "week", "month")
MAX_PERIODS = 40  # a report reads at most this many buckets per merchant pair
RATE_PLACES = Decimal("0.0001")
ALLIANCE = "ALLIANCE"


@dataclass(frozen=True, slots=True)
class OperatorRefresh:
    folded_from: int
    folded_to: int
    flow_rows: int
    liability_rows: int


async def refresh_operator_insights(db: Database, upto: int) -> OperatorRefresh:
    """Fold the ledger transactions after the watermark, up to ``upto``, into the flow and latency
    summaries and recompute liability.

    ``upto`` is the horizon `alliance insights refresh` chose (`fold_horizon`: no lower id can
    still commit). Safe beside traffic and beside itself (the state row is taken FOR UPDATE)."""
    async with db.transaction(OPERATOR) as session:
        row = (
            await run_sql(
                session,
                text("SELECT * FROM insights_refresh_operator(:tz, :upto)"),
                {"tz": db.settings.time_zone, "upto": upto},
            )
        ).one()
    return OperatorRefresh(row.folded_from, row.folded_to, row.flow_rows, row.liability_rows)


def _rate(part: int, whole: int) -> Decimal | None:
    return None if whole == 0 else (Decimal(part) / Decimal(whole)).quantize(RATE_PLACES, ROUND_HALF_EVEN)


# --------------------------------------------------------------------------------------------
# Points flow
# --------------------------------------------------------------------------------------------


def _party(alias: str) -> str:
    """A party's code in a flow report: none when grouped by category, ALLIANCE for its own points."""
    return f"CASE WHEN :by = 'category' THEN NULL ELSE coalesce({alias}.code, '{ALLIANCE}') END"


_FLOW_TOTALS = text(
    f"""SELECT p.bucket AS period_start, {_party("t")} AS code, t.category, sum(p.issued)::bigint AS issued,
      sum(p.redeemed)::bigint AS redeemed, sum(p.cross_redeemed)::bigint AS cross_redeemed,
      sum(p.redeemed_elsewhere)::bigint AS redeemed_elsewhere, sum(p.breakage)::bigint AS breakage
    FROM insight_party_flows p LEFT JOIN tenants t ON t.id = p.tenant_id
    WHERE p.asset = :asset AND p.grain = :period AND p.bucket >= :start AND p.bucket < :end
    GROUP BY 1, 2, 3
    HAVING sum(p.issued) <> 0 OR sum(p.redeemed) <> 0 OR sum(p.redeemed_elsewhere) <> 0
      OR sum(p.breakage) <> 0
    ORDER BY 1, 3 NULLS FIRST, 2"""
)

_FLOW_PAIRS = text(
    "SELECT * FROM insight_flow_pairs(:asset, :period, :start, :end, :by, :own, CAST(:tenant_code AS text))"
)
# Every merchant pair of every period is a long answer (2,450 pairs a period among 50 merchants):
# without a merchant to narrow to, pairs by merchant cover at most this many periods.
MAX_MERCHANT_PAIR_PERIODS = 3


@dataclass(frozen=True, slots=True)
class FlowTotal:
    """One merchant's (or category's) flows in one period. ``redeemed`` counts every point spent
    at it, ``cross_redeemed`` those issued by others (its settlement receivable),
    ``redeemed_elsewhere`` its points spent at others (its payable), ``breakage`` its points that
    expired. ``code`` is None when grouped by category; ``category`` None for the alliance."""

    period_start: date
    code: str | None
    category: str | None
    issued: int
    redeemed: int
    cross_redeemed: int
    redeemed_elsewhere: int
    breakage: int


@dataclass(frozen=True, slots=True)
class FlowPair:
    period_start: date
    issuer_code: str | None
    issuer_category: str | None
    redeemer_code: str | None
    redeemer_category: str | None
    points: int


def _flow_params(asset: str, start: date, end: date, period: str, by: str) -> dict[str, object]:
    if period not in PERIODS:
        raise DomainError("INVALID_PERIOD", "period is DAY, WEEK or MONTH", "period")
    if by not in ("merchant", "category"):
        raise DomainError("INVALID_GROUPING", "groupBy is MERCHANT or CATEGORY", "groupBy")
    check_range(start, end)
    if (end - start).days > MAX_PERIODS * {"day": 1, "week": 7, "month": 31}[period]:
        raise DomainError("INVALID_PERIOD", f"at most {MAX_PERIODS} periods at a time", "to")
    return {"asset": check_asset(asset), "start": start, "end": end, "period": period, "by": by}


async def flow_totals(
    session: AsyncSession, asset: str, start: date, end: date, period: str, by: str
) -> list[FlowTotal]:
    """Per period starting in [start, end) and party: issued, redeemed,
    cross-redeemed, redeemed elsewhere, breakage (operator; the summaries are operator-only)."""
    rows = await run_sql(session, _FLOW_TOTALS, _flow_params(asset, start, end, period, by))
    return [FlowTotal(*row) for row in rows]


async def flow_pairs(
    session: AsyncSession,
    asset: str,
    start: date,
    end: date,
    period: str,
    by: str,
    own: bool = False,
    tenant_code: str | None = None,
) -> list[FlowPair]:
    """Net points redeemed per period, issuer and redeemer: cross-merchant pairs are settlement's
    lines (``own`` adds each merchant's points redeemed at itself; ``tenant_code`` keeps the
    pairs that merchant is a party to)."""
    params = _flow_params(asset, start, end, period, by) | {"own": own, "tenant_code": tenant_code}
    days = {"day": 1, "week": 7, "month": 31}[period]
    if by == "merchant" and tenant_code is None and (end - start).days > MAX_MERCHANT_PAIR_PERIODS * days:
        raise DomainError(
            "INVALID_PERIOD",
            f"pairs of every merchant cover at most {MAX_MERCHANT_PAIR_PERIODS} periods: narrow to a"
            " tenantCode or group by category",
            "to",
        )
    rows = await run_sql(session, _FLOW_PAIRS, params)
    return [FlowPair(*row) for row in rows]


# --------------------------------------------------------------------------------------------
# Liability
# --------------------------------------------------------------------------------------------

_VALUE = text(
    """SELECT coalesce(st.settlement_value, a.settlement_value) AS value,
      coalesce(st.currency, a.currency) AS currency
    FROM assets a LEFT JOIN LATERAL (
      SELECT * FROM settlement_terms st WHERE st.asset = a.code AND st.effective_from <= now()
      ORDER BY st.effective_from DESC LIMIT 1) st ON true
    WHERE a.code = :asset"""
)

_LIABILITY = text(
    """WITH history AS (
      SELECT p.tenant_id AS issuer, sum(p.breakage) AS expired, sum(p.issued_redeemed) AS redeemed
      FROM insight_party_flows p
      WHERE p.asset = :asset AND p.grain = 'month' AND p.bucket >= :history_start AND p.bucket <= :today
      GROUP BY 1
    ), alliance AS (
      SELECT coalesce(sum(expired), 0) AS expired, coalesce(sum(expired + redeemed), 0) AS ended FROM history
    ), rates AS (
      SELECT h.issuer,
        CASE WHEN h.expired + h.redeemed >= :min_history THEN h.expired ELSE a.expired END AS expired,
        CASE WHEN h.expired + h.redeemed >= :min_history THEN h.expired + h.redeemed
             ELSE a.ended END AS ended,
        h.expired + h.redeemed >= :min_history AS own
      FROM history h CROSS JOIN alliance a
    ), cells AS (
      SELECT l.issuer_tenant_id AS issuer, date_trunc('month', l.expiry_day::timestamp)::date AS month,
        l.points, l.lots, coalesce(r.expired, a.expired) AS expired, coalesce(r.ended, a.ended) AS ended,
        coalesce(r.own, false) AS own
      FROM insight_liability l CROSS JOIN alliance a
      LEFT JOIN rates r ON r.issuer IS NOT DISTINCT FROM l.issuer_tenant_id
      WHERE l.asset = :asset AND (l.expiry_day >= :today OR l.expiry_day IS NULL)
    ), expected AS (
      SELECT issuer, month, sum(points) AS points, sum(lots) AS lots, max(expired) AS expired,
        max(ended) AS ended, bool_or(own) AS own,
        CASE WHEN max(ended) = 0 THEN 0
             ELSE round(sum(points) * max(expired)::numeric / max(ended)) END AS breakage
      FROM cells GROUP BY 1, 2
    )
    SELECT GROUPING(e.issuer) = 1 AS all_issuers, GROUPING(e.month) = 1 AS all_months,
      coalesce(t.code, 'ALLIANCE') AS code, t.category, e.month,
      coalesce(sum(e.points), 0)::bigint AS points, coalesce(sum(e.lots), 0)::bigint AS lots,
      coalesce(sum(e.breakage), 0)::bigint AS expected_breakage,
      coalesce(max(e.expired), 0)::bigint AS expired, coalesce(max(e.ended), 0)::bigint AS ended,
      coalesce(bool_or(e.own), false) AS own,
      (SELECT expired FROM alliance)::bigint AS alliance_expired,
      (SELECT ended FROM alliance)::bigint AS alliance_ended
    FROM expected e LEFT JOIN tenants t ON t.id = e.issuer
    GROUP BY GROUPING SETS ((e.issuer, t.code, t.category), (e.month), ())
    ORDER BY all_issuers, all_months, month NULLS LAST, code"""
)


@dataclass(frozen=True, slots=True)
class Money:
    points: int
    value: Decimal


@dataclass(frozen=True, slots=True)
class IssuerLiability:
    issuer_code: str
    category: str | None
    outstanding: Money
    lots: int
    breakage_rate: Decimal
    rate_basis: str  # "issuer" (its own history) or "alliance" (too little of its own)
    expected_breakage: Money


@dataclass(frozen=True, slots=True)
class MonthLiability:
    month: date | None  # the expiry month (alliance time zone); None: points that never expire
    outstanding: Money
    expected_breakage: Money


@dataclass(frozen=True, slots=True)
class Liability:
    asset: str
    as_of: date
    currency: str
    settlement_value: Decimal
    outstanding: Money
    expected_breakage: Money
    alliance_breakage_rate: Decimal
    by_issuer: list[IssuerLiability]
    by_expiry_month: list[MonthLiability]
    refreshed_at: datetime | None


async def liability(
    session: AsyncSession, asset: str, time_zone: str, min_history: int = MIN_HISTORY_POINTS
) -> Liability:
    """Points outstanding (open, unexpired lots) by issuer and expiry month, valued at the asset's
    settlement value in force, with expected breakage (see the module docstring)."""
    value_row = (await run_sql(session, _VALUE, {"asset": check_asset(asset)})).one_or_none()
    if value_row is None:
        raise DomainError("UNKNOWN_ASSET", "no such asset", "asset")
    value, currency = value_row.value, value_row.currency
    today = datetime.now(ZoneInfo(time_zone)).date()
    history_start = date(today.year - 1, today.month, 1)
    rows = (
        await run_sql(
            session,
            _LIABILITY,
            {"asset": asset, "today": today, "history_start": history_start, "min_history": min_history},
        )
    ).all()

    def money(points: int) -> Money:
        return Money(points, (Decimal(points) * value).quantize(Decimal("0.01"), ROUND_HALF_EVEN))

    total = next((r for r in rows if r.all_issuers and r.all_months), None)
    alliance_rate = (_rate(total.alliance_expired, total.alliance_ended) if total else None) or Decimal(0)
    return Liability(
        asset=asset,
        as_of=today,
        currency=currency.strip(),
        settlement_value=value,
        outstanding=money(total.points if total else 0),
        expected_breakage=money(total.expected_breakage if total else 0),
        alliance_breakage_rate=alliance_rate,
        by_issuer=[
            IssuerLiability(
                issuer_code=r.code,
                category=r.category,
                outstanding=money(r.points),
                lots=r.lots,
                breakage_rate=_rate(r.expired, r.ended) or Decimal(0),
                rate_basis="issuer" if r.own else "alliance",
                expected_breakage=money(r.expected_breakage),
            )
            for r in rows
            if not r.all_issuers and r.all_months
        ],
        by_expiry_month=[
            MonthLiability(r.month, money(r.points), money(r.expected_breakage))
            for r in rows
            if r.all_issuers and not r.all_months
        ],
        refreshed_at=await refreshed_at(session),
    )


async def refreshed_at(session: AsyncSession) -> datetime | None:
    return (
        await run_sql(session, text("SELECT refreshed_at FROM insight_refresh_state WHERE name = 'operator'"))
    ).scalar_one_or_none()


# --------------------------------------------------------------------------------------------
# Merchant health
# --------------------------------------------------------------------------------------------

_HEALTH = text(
    "SELECT * FROM insight_merchant_health(:asset, :start, :end, :start_at, :end_at,"
    " CAST(:tenant_code AS text))"
)


@dataclass(frozen=True, slots=True)
class Latency:
    """Whole days between a lot's issue and its redemption, weighted by points (net of
    reversals), over every redemption folded so far: the smallest d with at least half (nine
    tenths) of the points redeemed within d days."""

    median_days: int | None
    p90_days: int | None
    points: int


@dataclass(frozen=True, slots=True)
class MerchantHealth:
    code: str
    category: str
    issued: int
    redeemed: int
    redemption_ratio: Decimal | None  # redeemed / issued
    issued_share: Decimal | None  # of the alliance's issuance in the period
    redeemed_share: Decimal | None  # of the alliance's redemptions in the period
    settlement_lines: int
    disputes: int
    dispute_rate: Decimal | None  # disputes / lines it is a party to
    latency_as_issuer: Latency  # its points, redeemed anywhere
    latency_as_redeemer: Latency  # points redeemed at it, whoever issued them


async def merchant_health(
    session: AsyncSession, asset: str, start: date, end: date, time_zone: str, tenant_code: str | None = None
) -> list[MerchantHealth]:
    """Per merchant: issued vs redeemed over the months starting in [start, end), disputes over
    the settlement batches starting then, and all-time redemption latency."""
    check_range(start, end)
    start_at, end_at = (datetime.combine(d, datetime.min.time(), ZoneInfo(time_zone)) for d in (start, end))
    params = {
        "asset": check_asset(asset),
        "start": start,
        "end": end,
        "start_at": start_at,
        "end_at": end_at,
        "tenant_code": tenant_code,
    }
    rows = await run_sql(session, _HEALTH, params)
    return [
        MerchantHealth(
            code=r.code,
            category=r.category,
            issued=r.issued,
            redeemed=r.redeemed,
            redemption_ratio=_rate(r.redeemed, r.issued),
            issued_share=_rate(r.issued, r.alliance_issued),
            redeemed_share=_rate(r.redeemed, r.alliance_redeemed),
            settlement_lines=r.lines,
            disputes=r.disputes,
            dispute_rate=_rate(r.disputes, r.lines),
            latency_as_issuer=Latency(r.issuer_median, r.issuer_p90, r.issuer_points),
            latency_as_redeemer=Latency(r.redeemer_median, r.redeemer_p90, r.redeemer_points),
        )
        for r in rows
    ]
