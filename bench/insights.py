"""Insights benchmark: the refresh and every merchant insight query on ≥ 10M ledger transactions.

    python bench/insights.py --database-url postgresql://postgres@127.0.0.1:5432/postgres \
        [--scale 1.0] [--calls 200] [--keep]

It creates its own database (``alliance_bench_insights``) and application role
(``alliance_bench_insights_app``), applies the migrations and seeds set-based as the owner
(``INSERT ... SELECT generate_series``) straight into the tables the summaries read, at
``--scale`` × (12 tenants, 100,000 members linked to 1-3 merchants over two years, 10,000,000
ledger transactions over two years: 95 % purchases with a category and 0-2 tags (most untagged),
4 % redemptions, 1 % full refunds; 200,000 reward redemptions of 240 rewards; tiers; 3 segments per merchant).
Only ``ledger_transactions`` is seeded for the postings (no entries or lots: the insights never
read them), so the books of this database do not balance — it is for this benchmark only.

Then, as the application role (operator context, like the CronJob):

  1. a full refresh from empty (``alliance insights refresh --full``), target ≤ 60 s;
  2. +100,000 purchases, then an incremental refresh;
  3. every query in `QUERIES`, ``--calls`` times each in a merchant's context (random merchant,
     random member of it), p50 / p99 / max, target ≤ 200 ms at p99.

`QUERIES` is a list of named callables ``async (session, sample) -> object``: other insight
features add theirs (targeted offers, the operator's views) by appending to it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from sqlalchemy.engine import URL, make_url
from sqlmodel.ext.asyncio.session import AsyncSession

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from alliance.config import Settings
from alliance.db import Database
from alliance.db.database import AccessContext, to_async_url
from alliance.db.migrate import upgrade
from alliance.insights import queries, segments
from alliance.insights.refresh import refresh

DB_NAME = "alliance_bench_insights"
APP_ROLE = "alliance_bench_insights_app"
TIME_ZONE = "Asia/Shanghai"
CATEGORIES = ("hotel", "auto_service", "supermarket", "retail", "baby_goods", "clothing", "other")
REFRESH_TARGET_S = 60.0
QUERY_TARGET_MS = 200.0


def asyncpg_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def admin(server_url: URL, statements: list[str]) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(server_url.set(database="postgres")))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


# -- seed ------------------------------------------------------------------------------------------

# Member m is linked to 1-3 merchants: (m % T), then (7m + 3) % T, then (13m + 5) % T (ids + 1).
LINKED = "ARRAY[m % {t}, (7 * m + 3) % {t}, (13 * m + 5) % {t}]"


def purchases_sql(first: int, count: int, tenants: int, members: int, days: int) -> str:
    """``count`` purchases numbered from ``first``: a random member at one of its merchants, on a
    day of the last ``days`` (more recent days a little more likely), 10-500 CNY, a category of
    the merchant's five, 0-2 of twenty tags."""
    return f"""
    INSERT INTO ledger_transactions (kind, asset, member_id, tenant_id, client_scope, points, amount,
                                     currency, order_ref, store_id, details, effective_at, created_at)
    SELECT 'earn', 'POINTS', m, t, 'bench', floor(amount)::bigint, amount, 'CNY', 'o' || i, t, details, at, at
      FROM (
        SELECT i, m,
               1 + ({LINKED.format(t=tenants)})[1 + (i % (1 + m % 3))] AS t,
               round((10 + (hashint4(i) & 1023) * 0.4774)::numeric, 2) AS amount,
               jsonb_build_object(
                 'category', 'cat-' || (m % {tenants}) || '-' || ((hashint4(i * 3) & 2147483647) % 5),
                 'tags', CASE WHEN (hashint4(i * 5) & 15) < 10 THEN '[]'::jsonb
                   WHEN (hashint4(i * 5) & 15) < 15
                     THEN jsonb_build_array('tag-' || ((hashint4(i * 7) & 2147483647) % 20))
                   ELSE jsonb_build_array('tag-' || ((hashint4(i * 7) & 2147483647) % 20),
                                          'tag-' || (20 + (hashint4(i * 11) & 2147483647) % 20)) END
               ) AS details,
               now() - make_interval(secs => ({days} * 86400.0) * power((hashint4(i * 13) & 2147483647)
                                                                          / 2147483647.0, 1.3)) AS at
          FROM (SELECT i, 1 + (hashint4(i) & 2147483647) % {members} AS m
                  FROM generate_series({first}, {first + count - 1}) AS i) s
      ) p"""


async def seed(owner_url: URL, scale: float) -> dict[str, int]:
    tenants = 12
    members = int(100_000 * scale)
    transactions = int(10_000_000 * scale)
    earns = int(transactions * 0.95)
    redeems = int(transactions * 0.04)
    refunds = transactions - earns - redeems
    days = 730
    conn = await asyncpg.connect(asyncpg_dsn(owner_url))
    try:

        async def step(label: str, sql: str) -> None:
            started = time.perf_counter()
            status = await conn.execute(sql)
            print(f"  {label}: {status} ({time.perf_counter() - started:.1f} s)", flush=True)

        await step(
            "tenants",
            f"""INSERT INTO tenants (code, name, category)
                SELECT 'bench-' || n, 'Bench ' || n, (ARRAY{list(CATEGORIES)})[1 + n % 7]
                  FROM generate_series(1, {tenants}) AS n""",
        )
        await step(
            "stores",
            "INSERT INTO stores (tenant_id, code, name) SELECT id, 'S1', 'Store of ' || code FROM tenants",
        )
        await step(
            "members",
            f"""INSERT INTO members (phone, name)
                SELECT '+86138' || lpad(n::text, 8, '0'), 'Member ' || n
                  FROM generate_series(1, {members}) AS n""",
        )
        await step(
            "member_links",
            f"""INSERT INTO member_links (tenant_id, member_id, external_ref, created_at)
                SELECT DISTINCT ON (t, m) t, m, 'c' || m,
                       now() - make_interval(days => ((hashint4(m * 17 + t) & 2147483647) % {days}))
                  FROM (SELECT m, 1 + ({LINKED.format(t=tenants)})[k] AS t
                          FROM generate_series(1, {members}) AS m, generate_series(1, 3) AS k
                         WHERE k <= 1 + m % 3) l""",
        )
        await step(
            "member_tiers",
            f"""INSERT INTO member_tiers (member_id, tier_code)
                SELECT m, CASE WHEN m % 31 = 0 THEN 'GOLD' ELSE 'SILVER' END
                  FROM generate_series(1, {members}) AS m WHERE m % 10 = 0 OR m % 31 = 0""",
        )
        # Load without the secondary indexes and build them afterwards (much faster than
        # maintaining them row by row); triggers (webhook outbox) off while loading.
        indexes = await conn.fetch(
            """SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'ledger_transactions'
                 AND indexname <> 'ledger_transactions_pkey'"""
        )
        for index in indexes:
            await conn.execute(f'DROP INDEX "{index["indexname"]}"')
        await conn.execute("SET maintenance_work_mem = '512MB'")
        await conn.execute("ALTER TABLE ledger_transactions DISABLE TRIGGER USER")
        try:
            chunk = 2_000_000
            for first in range(1, earns + 1, chunk):
                count = min(chunk, earns - first + 1)
                await step(
                    f"purchases {first:,}-{first + count - 1:,}",
                    purchases_sql(first, count, tenants, members, days),
                )
            await step(
                "redemptions (ledger)",
                f"""INSERT INTO ledger_transactions (kind, asset, member_id, tenant_id, client_scope, points,
                                                     order_ref, store_id, effective_at, created_at)
                    SELECT 'redeem', 'POINTS', m, t, 'bench', 100, 'r' || i, t, at, at
                      FROM (SELECT i, m, 1 + ({LINKED.format(t=tenants)})[1 + (i % (1 + m % 3))] AS t,
                                   now() - make_interval(days => (hashint4(i * 19) & 2147483647) % {days})
                                     AS at
                              FROM (SELECT i, 1 + (hashint4(i + 7) & 2147483647) % {members} AS m
                                      FROM generate_series(1, {redeems}) AS i) s) r""",
            )
            await step(
                "refunds",
                f"""INSERT INTO ledger_transactions (kind, asset, member_id, tenant_id, client_scope, points,
                                                     reverses_id, reason, effective_at, created_at)
                    SELECT 'reverse', 'POINTS', member_id, tenant_id, 'bench', points, id, 'refund',
                           effective_at + interval '1 day', effective_at + interval '1 day'
                      FROM ledger_transactions WHERE kind = 'earn' AND id % {max(1, earns // refunds)} = 0""",
            )
        finally:
            await conn.execute("ALTER TABLE ledger_transactions ENABLE TRIGGER USER")
        for index in indexes:
            await step(f"index {index['indexname']}", index["indexdef"])
        await step(
            "rewards",
            """INSERT INTO rewards (tenant_id, kind, name, points, stock)
               SELECT t.id, (ARRAY['goods', 'service', 'upgrade', 'coupon'])[1 + n % 4], 'Reward ' || n,
                      100 * n,
                      CASE WHEN n % 5 = 0 THEN NULL ELSE 50 * n END
                 FROM tenants t, generate_series(1, 20) AS n""",
        )
        # Reward redemptions of the first redeem transactions; the last 4 rewards of each merchant
        # have no takers.
        await step(
            "reward_redemptions",
            f"""INSERT INTO reward_redemptions (member_id, member_number, reward_id, tenant_id, asset,
                                                quantity, unit_points, points, status, transaction_id,
                                                client_scope,
                                                created_at, closed_at)
                SELECT x.member_id, mb.member_number, w.id, x.tenant_id, 'POINTS', 1, 100, 100,
                       CASE WHEN x.id % 10 = 0 THEN 'cancelled' ELSE 'fulfilled' END, x.id, 'bench',
                       x.effective_at, x.effective_at
                  FROM (SELECT * FROM ledger_transactions WHERE kind = 'redeem' ORDER BY id
                         LIMIT {int(200_000 * scale)}) x
                  JOIN members mb ON mb.id = x.member_id
                  JOIN LATERAL (SELECT id FROM rewards r WHERE r.tenant_id = x.tenant_id
                                 ORDER BY id OFFSET x.id % 16 LIMIT 1) w ON true""",
        )
        await step(
            "customer_segments",
            """INSERT INTO customer_segments (tenant_id, code, name, definition)
               SELECT t.id, s.code, s.code, s.definition FROM tenants t,
                 LATERAL (VALUES
                   ('monthly-cat0', jsonb_build_object('category', 'cat-' || (t.id - 1) || '-0',
                                                       'minMonths', 3, 'windowMonths', 4)),
                   ('tag3', '{"tag": "tag-3", "minMonths": 2, "windowMonths": 3}'::jsonb),
                   ('big-spenders', '{"minVisits": 4, "minSpend": "800", "windowMonths": 3}'::jsonb)
                 ) AS s(code, definition)""",
        )
        started = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE)")
        print(f"  VACUUM (ANALYZE) ({time.perf_counter() - started:.1f} s)", flush=True)
        count = await conn.fetchval("SELECT count(*) FROM ledger_transactions")
        return {"tenants": tenants, "members": members, "transactions": count}
    finally:
        await conn.close()


async def add_purchases(owner_url: URL, count: int, scale: float) -> float:
    conn = await asyncpg.connect(asyncpg_dsn(owner_url))
    try:
        first = 50_000_000
        started = time.perf_counter()
        await conn.execute("ALTER TABLE ledger_transactions DISABLE TRIGGER USER")
        await conn.execute(purchases_sql(first, count, 12, int(100_000 * scale), 7))
        await conn.execute("ALTER TABLE ledger_transactions ENABLE TRIGGER USER")
        await conn.execute("ANALYZE ledger_transactions")
        return time.perf_counter() - started
    finally:
        await conn.close()


# -- queries ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One call's arguments: a merchant, one of its members, one of its segments, today."""

    tenant_id: int
    member_id: int
    member_number: str
    segment_id: int
    today: date


Query = Callable[[AsyncSession, Sample], Awaitable[Any]]


def _month(sample: Sample, back: int) -> date:
    return queries.month_start(sample.today, back)


QUERIES: list[tuple[str, Query]] = [
    ("member_profile", lambda s, x: queries.member_profile(s, x.tenant_id, x.member_number, x.today)),
    ("member_profiles_page", lambda s, x: queries.member_profiles(s, x.tenant_id, x.member_id, 51, x.today)),
    (
        "member_top_categories",
        lambda s, x: queries.member_top(s, x.tenant_id, x.member_id, "category", _month(x, 11)),
    ),
    ("member_top_tags", lambda s, x: queries.member_top(s, x.tenant_id, x.member_id, "tag", _month(x, 11))),
    ("top_categories_12m", lambda s, x: queries.tenant_top(s, x.tenant_id, "category", _month(x, 11))),
    ("top_tags_12m", lambda s, x: queries.tenant_top(s, x.tenant_id, "tag", _month(x, 11))),
    ("segments", lambda s, x: segments.list_segments(s, x.tenant_id, False)),
    ("segment_members_page", lambda s, x: queries.segment_members(s, x.tenant_id, x.segment_id, None, 51)),
    ("redemptions_by_tier", lambda s, x: queries.redemptions(s, x.tenant_id, "tier", None)),
    ("redemptions_by_segment", lambda s, x: queries.redemptions(s, x.tenant_id, "segment", None)),
    ("unredeemed_rewards", lambda s, x: queries.unredeemed_rewards(s, x.tenant_id, x.today.replace(day=1))),
    ("rising_members_page", lambda s, x: queries.rising_members(s, x.tenant_id, 0, 51)),
    ("retention", lambda s, x: queries.retention(s, x.tenant_id)),
    ("coalition_retention", lambda s, x: queries.coalition(s, x.tenant_id, 10)),
    ("cross_merchant", lambda s, x: queries.cross_categories(s, x.tenant_id, 10, x.today)),
]


async def samples(owner_url: URL, count: int, today: date) -> list[Sample]:
    conn = await asyncpg.connect(asyncpg_dsn(owner_url))
    try:
        rows = await conn.fetch(
            """SELECT l.tenant_id, l.member_id, m.member_number,
                      (SELECT min(id) FROM customer_segments s WHERE s.tenant_id = l.tenant_id) AS segment_id
                 FROM member_links l JOIN members m ON m.id = l.member_id
                WHERE l.tenant_id IN (SELECT id FROM tenants WHERE code LIKE 'bench-%')
                ORDER BY hashint8(l.member_id * 31 + l.tenant_id) LIMIT $1""",
            count,
        )
        return [
            Sample(r["tenant_id"], r["member_id"], r["member_number"], r["segment_id"], today) for r in rows
        ]
    finally:
        await conn.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def measure_queries(
    db: Database, picks: list[Sample], calls: int
) -> list[tuple[str, float, float, float]]:
    results = []
    for name, query in QUERIES:
        timings = []
        for index in range(calls):
            sample = picks[index % len(picks)]
            started = time.perf_counter()
            async with db.transaction(AccessContext("merchant", tenant_id=sample.tenant_id)) as session:
                await query(session, sample)
            timings.append((time.perf_counter() - started) * 1000)
        results.append((name, statistics.median(timings), percentile(timings, 0.99), max(timings)))
        print(
            f"  {name:<26} p50 {results[-1][1]:7.2f} ms  p99 {results[-1][2]:7.2f} ms"
            f"  max {results[-1][3]:7.2f} ms",
            flush=True,
        )
    return results


async def run(owner_url: URL, settings: Settings, args: argparse.Namespace) -> int:
    db = Database(owner_url.render_as_string(hide_password=False), settings)
    try:
        started = time.perf_counter()
        counts = await refresh(db, settings, full=True)
        full_s = time.perf_counter() - started
        print(f"full refresh from empty: {full_s:.1f} s  {counts}", flush=True)

        inserted_s = await add_purchases(owner_url, args.increment, args.scale)
        print(f"+{args.increment:,} purchases inserted in {inserted_s:.1f} s", flush=True)
        started = time.perf_counter()
        counts = await refresh(db, settings)
        incremental_s = time.perf_counter() - started
        print(f"incremental refresh: {incremental_s:.1f} s  {counts}", flush=True)

        today = datetime.now(UTC).astimezone(ZoneInfo(TIME_ZONE)).date()
        picks = await samples(owner_url, max(args.calls, 50), today)
        random.Random(7).shuffle(picks)
        print(f"queries, {args.calls} calls each, merchant context, sequential:", flush=True)
        results = await measure_queries(db, picks, args.calls)

        print("\nsummary")
        print(
            f"  full refresh        {full_s:7.1f} s   target ≤ {REFRESH_TARGET_S:.0f} s  "
            f"{'ok' if full_s <= REFRESH_TARGET_S else 'MISSED'}"
        )
        print(f"  incremental refresh {incremental_s:7.1f} s   (+{args.increment:,} transactions)")
        worst = max(results, key=lambda r: r[2])
        print(
            f"  worst p99 query     {worst[2]:7.2f} ms  ({worst[0]}) target ≤ {QUERY_TARGET_MS:.0f} ms  "
            f"{'ok' if worst[2] <= QUERY_TARGET_MS else 'MISSED'}"
        )
        return 0
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server's owner URL")
    parser.add_argument("--scale", type=float, default=1.0, help="× (100k members, 10M transactions)")
    parser.add_argument("--calls", type=int, default=200, help="calls per query")
    parser.add_argument(
        "--increment", type=int, default=100_000, help="purchases added before the incremental run"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and role")
    args = parser.parse_args(argv)

    server_url = to_async_url(args.database_url)
    owner_url = make_url(server_url.render_as_string(hide_password=False)).set(database=DB_NAME)
    settings = Settings(
        database_url=owner_url.render_as_string(hide_password=False),
        app_role=APP_ROLE,
        pool_size=2,
        insights_refresh_lag_seconds=0,
        time_zone=TIME_ZONE,
    )
    drop = [f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)', f'DROP ROLE IF EXISTS "{APP_ROLE}"']
    try:
        asyncio.run(admin(server_url, [*drop, f'CREATE DATABASE "{DB_NAME}"']))
        upgrade(owner_url.render_as_string(hide_password=False), settings)
        print(
            f"seeding at scale {args.scale} (load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}):",
            flush=True,
        )
        started = time.perf_counter()
        record = asyncio.run(seed(owner_url, args.scale))
        print(f"seeded {record} in {time.perf_counter() - started:.1f} s", flush=True)
        return asyncio.run(run(owner_url, settings, args))
    finally:
        if args.keep:
            print(f"kept database {DB_NAME}")
        else:
            asyncio.run(admin(server_url, drop))
            print(f"dropped database {DB_NAME} and role {APP_ROLE}")


if __name__ == "__main__":
    raise SystemExit(main())
