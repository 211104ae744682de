"""What a merchant asks of its insights: each answer is read from the summary tables the refresh
keeps (a few index lookups, or a scan of one tenant's small aggregate rows), never the ledger.

Every function takes the tenant explicitly and filters on it: row-level security already limits
a merchant's session to its own rows, and the explicit filter keeps an operator (who may look at
any one merchant) to the merchant asked about. Member-level answers are only for members linked
to the merchant.

Privacy: cross-merchant and coalition figures are stored NULL below k by the refresh, and the
reads apply k again (the larger of the stored k and the current setting), so lowering or raising
the setting never shows a figure from fewer members than it says.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Row, text
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.db.database import run_sql
from alliance.insights.refresh import BACKDATING_DAYS
from alliance.tenants.models import TenantCategory

TOP = 10  # entries in a top-categories / top-tags list


async def _rows(session: AsyncSession, sql: str, params: dict[str, Any]) -> Sequence[Row[Any]]:
    return (await run_sql(session, text(sql), params)).all()


def month_start(day: date, months_back: int = 0) -> date:
    index = day.year * 12 + day.month - 1 - months_back
    return date(index // 12, index % 12 + 1, 1)


_PROFILE = """
SELECT mb.id AS member_id, mb.member_number, p.visits, p.spend, p.points, p.first_visit, p.last_visit,
       CASE WHEN p.visits > 0 THEN round(p.spend / p.visits, 2) END AS average_spend,
       (SELECT coalesce(sum(d.visits), 0) FROM insights_member_recent_days d
         WHERE d.tenant_id = p.tenant_id AND d.member_id = p.member_id AND d.day > CAST(:today AS date) - 90)
         AS visits_90
  FROM {source} p
  JOIN members mb ON mb.id = p.member_id
"""
_LINKED = (
    "EXISTS (SELECT 1 FROM member_links l WHERE l.tenant_id = p.tenant_id AND l.member_id = p.member_id)"
)


async def member_profile(
    session: AsyncSession, tenant_id: int, member_number: str, today: date
) -> Row[Any] | None:
    rows = await _rows(
        session,
        _PROFILE.format(source="insights_members")
        + f" WHERE p.tenant_id = :tenant AND mb.member_number = :number AND {_LINKED}",
        {"tenant": tenant_id, "number": member_number, "today": today},
    )
    return rows[0] if rows else None


async def member_profiles(
    session: AsyncSession, tenant_id: int, after_member: int | None, limit: int, today: date
) -> Sequence[Row[Any]]:
    """A page of profiles: the page is cut from the summary first, then its members are looked up."""
    page = (
        "(SELECT * FROM insights_members p WHERE p.tenant_id = :tenant AND p.member_id > :after"
        f" AND {_LINKED} ORDER BY p.member_id LIMIT :limit)"
    )
    return await _rows(
        session,
        _PROFILE.format(source=page) + " ORDER BY p.member_id",
        {"tenant": tenant_id, "after": after_member or 0, "limit": limit, "today": today},
    )


async def member_top(
    session: AsyncSession, tenant_id: int, member_id: int, by: str, since: date
) -> Sequence[Row[Any]]:
    """A member's top categories (``by="category"``) or tags at this merchant since a month."""
    table, column = {
        "category": ("insights_member_categories", "category"),
        "tag": ("insights_member_tags", "tag"),
    }[by]
    return await _rows(
        session,
        f"""SELECT {column} AS label, sum(visits)::int AS visits, sum(spend) AS spend
              FROM {table} WHERE tenant_id = :tenant AND member_id = :member AND month >= :since
             GROUP BY 1 HAVING sum(visits) > 0 ORDER BY 2 DESC, 3 DESC, 1 LIMIT {TOP}""",
        {"tenant": tenant_id, "member": member_id, "since": since},
    )


async def tenant_top(session: AsyncSession, tenant_id: int, by: str, since: date) -> Sequence[Row[Any]]:
    """Across the merchant's members: categories (or tags) by visits since a month."""
    table, column = {
        "category": ("insights_tenant_categories", "category"),
        "tag": ("insights_tenant_tags", "tag"),
    }[by]
    return await _rows(
        session,
        f"""SELECT {column} AS label, sum(visits)::int AS visits, sum(spend) AS spend
              FROM {table} WHERE tenant_id = :tenant AND month >= :since
             GROUP BY 1 HAVING sum(visits) > 0 ORDER BY 2 DESC, 3 DESC, 1 LIMIT {TOP}""",
        {"tenant": tenant_id, "since": since},
    )


async def segment_members(
    session: AsyncSession, tenant_id: int, segment_id: int, after_member: int | None, limit: int
) -> Sequence[Row[Any]]:
    return await _rows(
        session,
        """SELECT s.member_id, mb.member_number, s.since
             FROM (SELECT * FROM customer_segment_members s
                    WHERE s.tenant_id = :tenant AND s.segment_id = :segment AND s.member_id > :after
                    ORDER BY s.member_id LIMIT :limit) s
             JOIN members mb ON mb.id = s.member_id ORDER BY s.member_id""",
        {"tenant": tenant_id, "segment": segment_id, "after": after_member or 0, "limit": limit},
    )


async def redemptions(
    session: AsyncSession, tenant_id: int, group_kind: str, group_key: str | None
) -> Sequence[Row[Any]]:
    """Redemptions of the merchant's rewards per group (tier code / segment id) and reward."""
    return await _rows(
        session,
        """SELECT r.group_key, w.id AS reward_id, w.name AS reward_name, w.kind AS reward_kind, r.redemptions,
                  r.quantity, r.points, r.members, r.last_redeemed_at
             FROM insights_reward_redemptions r JOIN rewards w ON w.id = r.reward_id
            WHERE r.tenant_id = :tenant AND r.group_kind = :kind
              AND (CAST(:key AS text) IS NULL OR r.group_key = :key)
            ORDER BY r.group_key, r.redemptions DESC, w.id""",
        {"tenant": tenant_id, "kind": group_kind, "key": group_key},
    )


async def unredeemed_rewards(session: AsyncSession, tenant_id: int, since: date) -> Sequence[Row[Any]]:
    """Active rewards with stock left (or unlimited) that nobody redeemed since ``since``."""
    return await _rows(
        session,
        """SELECT w.id AS reward_id, w.name AS reward_name, w.kind AS reward_kind, w.stock, r.last_redeemed_at
             FROM rewards w
             LEFT JOIN insights_reward_redemptions r
               ON r.tenant_id = w.tenant_id AND r.group_kind = 'all' AND r.group_key = ''
              AND r.reward_id = w.id
            WHERE w.tenant_id = :tenant AND w.status = 'active' AND (w.stock IS NULL OR w.stock > 0)
              AND (r.last_redeemed_at IS NULL OR r.last_redeemed_at < :since)
            ORDER BY w.id""",
        {"tenant": tenant_id, "since": since},
    )


async def rising_members(
    session: AsyncSession, tenant_id: int, offset: int, limit: int
) -> Sequence[Row[Any]]:
    return await _rows(
        session,
        """SELECT r.*, mb.member_number
             FROM (SELECT * FROM insights_rising r WHERE r.tenant_id = :tenant
                    ORDER BY r.score DESC, r.member_id OFFSET :offset LIMIT :limit) r
             JOIN members mb ON mb.id = r.member_id ORDER BY r.score DESC, r.member_id""",
        {"tenant": tenant_id, "offset": offset, "limit": limit},
    )


async def retention(session: AsyncSession, tenant_id: int) -> Sequence[Row[Any]]:
    return await _rows(
        session,
        """SELECT cohort_month, members, repeat_members,
                  CASE WHEN members > 0 THEN round(repeat_members::numeric / members, 4) END AS repeat_rate
             FROM insights_retention WHERE tenant_id = :tenant ORDER BY cohort_month""",
        {"tenant": tenant_id},
    )


async def coalition(session: AsyncSession, tenant_id: int, k: int) -> Sequence[Row[Any]]:
    """Both groups, each NULL unless both have at least k members (their sum is known)."""
    return await _rows(
        session,
        """SELECT g.redeems_elsewhere,
                  CASE WHEN ok THEN c.members END AS members,
                  CASE WHEN ok THEN c.repeat_members END AS repeat_members,
                  CASE WHEN ok THEN round(c.repeat_members::numeric / c.members, 4) END AS repeat_rate
             FROM (VALUES (true), (false)) AS g(redeems_elsewhere)
             LEFT JOIN insights_coalition c
               ON c.tenant_id = :tenant AND c.redeems_elsewhere = g.redeems_elsewhere
             CROSS JOIN LATERAL (
               SELECT coalesce((SELECT min(coalesce(x.members, 0)) >= greatest(:k, max(x.k))
                                  FROM insights_coalition x WHERE x.tenant_id = :tenant), false) AS ok
             ) checked
            ORDER BY g.redeems_elsewhere DESC""",
        {"tenant": tenant_id, "k": k},
    )


def latest_closed_month(today: date) -> date:
    """The newest month no posting can still be dated into: ended more than the back-dating limit ago."""
    return month_start(today - timedelta(days=BACKDATING_DAYS + 1), 1)


async def cross_categories(
    session: AsyncSession, tenant_id: int, k: int, today: date, months: int = 12
) -> Sequence[Row[Any]]:
    """For each of the last ``months`` closed months and every merchant category: how many of the
    merchant's members earned / redeemed at another merchant of that category, NULL below k."""
    latest = latest_closed_month(today)
    return await _rows(
        session,
        """SELECT m.month::date AS month, c.category,
                  CASE WHEN x.earned_members >= greatest(:k, x.k) THEN x.earned_members END AS earned_members,
                  CASE WHEN x.redeemed_members >= greatest(:k, x.k) THEN x.redeemed_members END
                    AS redeemed_members
             FROM generate_series(CAST(:oldest AS date), CAST(:latest AS date), interval '1 month')
                    AS m(month)
             CROSS JOIN unnest(CAST(:categories AS text[])) AS c(category)
             LEFT JOIN insights_cross_categories x
               ON x.tenant_id = :tenant AND x.month = m.month::date AND x.category = c.category
            ORDER BY m.month DESC, c.category""",
        {
            "tenant": tenant_id,
            "k": k,
            "oldest": month_start(latest, months - 1),
            "latest": latest,
            "categories": [category.value for category in TenantCategory],
        },
    )
