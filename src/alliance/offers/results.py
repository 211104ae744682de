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
The statement reads the segment members' transactions through the member index
(``ledger_transactions_member``), so its cost grows with the segment's transactions, not with
the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.db.database import run_sql
from alliance.errors import DomainError

RATIO = Decimal("0.0001")

_RESULTS = text(
    """
    WITH o AS (
      SELECT id, code, tenant_id, segment_id, starts_at,
        greatest(starts_at, least(ends_at, coalesce(withdrawn_at, 'infinity'), CAST(:at AS timestamptz)))
          AS window_end
      FROM offers WHERE tenant_id = :tenant AND code = :code
    ), w AS (
      SELECT o.*, o.starts_at - (o.window_end - o.starts_at) AS baseline_start FROM o
    ), segment AS (
      SELECT m.member_id FROM customer_segment_members m JOIN w ON m.segment_id = w.segment_id
    ), earns AS (
      SELECT t.member_id, t.amount, t.effective_at >= w.starts_at AS in_window, t.details
      FROM w CROSS JOIN segment
      JOIN ledger_transactions t ON t.member_id = segment.member_id
      WHERE t.tenant_id = w.tenant_id AND t.kind = 'earn'
        AND t.effective_at >= w.baseline_start AND t.effective_at < w.window_end
        AND NOT EXISTS (SELECT 1 FROM ledger_transactions r WHERE r.reverses_id = t.id)
    ), offer_lines AS (
      SELECT e.member_id, (line ->> 'points')::bigint AS points
      FROM earns e CROSS JOIN w
      CROSS JOIN LATERAL jsonb_array_elements(coalesce(e.details -> 'breakdown', '[]'::jsonb)) line
      WHERE e.in_window AND line ->> 'rule' = 'offer:' || w.code
    )
    SELECT w.starts_at AS window_start, w.window_end, w.baseline_start,
      (SELECT count(*) FROM segment) AS segment_size,
      (SELECT count(DISTINCT member_id) FROM offer_lines WHERE points > 0) AS members_earned,
      (SELECT coalesce(sum(amount) FILTER (WHERE in_window), 0) FROM earns) AS spend_in_window,
      (SELECT coalesce(sum(amount) FILTER (WHERE NOT in_window), 0) FROM earns) AS spend_in_baseline,
      (SELECT coalesce(sum(points), 0) FROM offer_lines) AS points_cost
    FROM w
    """
)


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
    )
