"""How an offer did, measured from the ledger in one set-based statement.

Definitions (what a merchant reads in `offerResults`):

- **Window**: from the offer's start to the earliest of its end, its withdrawal and the moment
  of measurement (a live offer is measured so far). **Baseline**: the equally long window just
  before the start, ``[start - length, start)``.
- **Segment size**: the segment's members now (the membership the last segment refresh wrote).
- **Uptake**: segment members with at least one earn at this merchant whose breakdown has a
  positive line of the offer (``offer:<code>``), divided by the segment size (4 decimals; 0 for
  an empty segment).
- **Spend**: the purchase amounts of the segment members' earns at this merchant, in the
  window and in the baseline; **extra spend** is window minus baseline: the segment members'
  spend at this merchant in the offer window versus their own spend in an equally long window
  before it (the same people, so a change in membership does not show as a change in spend).
- **Points cost**: the sum of the offer's breakdown lines over the window's earns: the bonus
  the offer paid on top of what the purchases would have earned anyway under the stacking
  policy (a member's daily cap, applied after the plan, may have trimmed some of it). An offer
  is a merchant's rule, so the merchant funds all of it; the alliance funds none.

Earns that have been reversed count nowhere. Everything is read as the caller (row-level
security): a merchant measures only its own offers over its own transactions and segments.

The measurement (SQL ``offer_measure``) reads the segment members' transactions through the
member index, so its cost grows with the segment's transactions, not with the ledger; still too
much for a request on a big segment, so requests read ``offer_results``, which
``refresh_offer_results()`` (run by ``alliance insights refresh``) keeps: every offer is
re-measured while it runs and for 30 days after its window closes (returns reverse earns late),
then its results are frozen. An offer the refresh has not reached yet is measured on request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.db.database import run_sql
from alliance.errors import DomainError

RATIO = Decimal("0.0001")

# The summary the refresh keeps (`refresh_offer_results()`), else a measurement now: an offer the
# refresh has not reached yet is young, so its windows (and their transactions) are short.
_RESULTS = text(
    """
    WITH offer AS (SELECT id FROM offers WHERE tenant_id = :tenant AND code = :code)
    SELECT r.window_start, r.window_end, r.baseline_start, r.segment_size, r.members_earned,
      r.spend_in_window, r.spend_in_baseline, r.points_cost, r.refreshed_at
    FROM offer JOIN offer_results r ON r.offer_id = offer.id
    UNION ALL
    SELECT m.window_start, m.window_end, m.baseline_start, m.segment_size, m.members_earned,
      m.spend_in_window, m.spend_in_baseline, m.points_cost, NULL
    FROM offer CROSS JOIN LATERAL offer_measure(ARRAY[offer.id], CAST(:at AS timestamptz)) m
    WHERE NOT EXISTS (SELECT 1 FROM offer_results r WHERE r.offer_id = offer.id)
    """
)


async def refresh_offer_results(connection: AsyncConnection, at: datetime | None = None) -> int:
    """Re-measure the offers that are running or closed less than 30 days ago into
    ``offer_results`` (as the owner: `alliance insights refresh` calls this); returns how many."""
    result = await connection.execute(
        text("SELECT refresh_offer_results(coalesce(CAST(:at AS timestamptz), now()))"), {"at": at}
    )
    return int(result.scalar_one())


@dataclass(frozen=True, slots=True)
class OfferResults:
    window_start: datetime
    window_end: datetime
    baseline_start: datetime
    segment_size: int
    members_earned: int
    uptake: Decimal
    spend_in_window: Decimal
    spend_in_baseline: Decimal
    extra_spend: Decimal
    points_cost: int
    merchant_funded_points: int
    alliance_funded_points: int
    refreshed_at: datetime | None  # None: measured just now (the refresh has not reached it yet)


async def offer_results(session: AsyncSession, tenant_id: int, code: str, at: datetime) -> OfferResults:
    """The offer's results as measured at ``at`` (see the module docstring for each figure)."""
    row = (await run_sql(session, _RESULTS, {"tenant": tenant_id, "code": code, "at": at})).first()
    if row is None:
        raise DomainError("OFFER_NOT_FOUND", f"no offer {code!r}", "code")
    size, earned = int(row.segment_size), int(row.members_earned)
    uptake = (Decimal(earned) / Decimal(size)).quantize(RATIO, ROUND_HALF_UP) if size else Decimal("0.0000")
    spend_in_window, spend_in_baseline = Decimal(row.spend_in_window), Decimal(row.spend_in_baseline)
    return OfferResults(
        window_start=row.window_start,
        window_end=row.window_end,
        baseline_start=row.baseline_start,
        segment_size=size,
        members_earned=earned,
        uptake=uptake,
        spend_in_window=spend_in_window,
        spend_in_baseline=spend_in_baseline,
        extra_spend=spend_in_window - spend_in_baseline,
        points_cost=int(row.points_cost),
        merchant_funded_points=int(row.points_cost),
        alliance_funded_points=0,
        refreshed_at=row.refreshed_at,
    )
