"""Points flow between merchant categories over time, read from settlement batches.

Each batch line says how many points issued by one merchant were redeemed at another in the
batch's period; summed by the two merchants' categories, that is how value moves through the
alliance (supermarket points spent at hotels, ...). Only settled periods count: a period without
a batch has no lines yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.db.database import run_sql
from alliance.errors import DomainError
from alliance.ledger.service import check_asset

MAX_RANGE_DAYS = 5 * 366

_FLOWS = text(
    """SELECT b.period_start, i.category AS issuer_category, r.category AS redeemer_category,
         sum(l.points)::bigint AS points
       FROM settlement_batches b
       JOIN settlement_lines l ON l.batch_id = b.id
       JOIN tenants i ON i.id = l.issuer_tenant_id
       JOIN tenants r ON r.id = l.redeemer_tenant_id
       WHERE b.asset = :asset AND b.period_start >= :start AND b.period_start < :end
       GROUP BY 1, 2, 3
       ORDER BY 1, 2, 3"""
)


@dataclass(frozen=True, slots=True)
class CategoryFlow:
    period_start: datetime
    issuer_category: str
    redeemer_category: str
    points: int


def check_range(start: date, end: date) -> None:
    """The one bound on flow reports (settled batches here, the operator's insights too)."""
    if not 0 < (end - start).days <= MAX_RANGE_DAYS:
        raise DomainError("INVALID_PERIOD", "to must be after from, at most five years later", "to")


async def category_flows(
    session: AsyncSession, asset: str, start: date, end: date, time_zone: str
) -> list[CategoryFlow]:
    """Net points (cross redemptions minus their refunds) per batch period and category pair,
    for batches starting in [start, end). An operator read: a merchant cannot see the other
    party's tenant row, so its lines would drop out."""
    check_range(start, end)
    zone = ZoneInfo(time_zone)
    start_at, end_at = datetime.combine(start, time(), zone), datetime.combine(end, time(), zone)
    rows = await run_sql(session, _FLOWS, {"asset": check_asset(asset), "start": start_at, "end": end_at})
    return [CategoryFlow(r.period_start, r.issuer_category, r.redeemer_category, r.points) for r in rows]
