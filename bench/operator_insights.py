"""Operator insights benchmark: refresh time and per-query latency from the summaries.

    python bench/operator_insights.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
        [--consumptions 2000000] [--history-consumptions 2000000] [--expiring-lots 500000]
        [--runs 50] [--reuse] [--keep]

It seeds with ``bench/settlement.py``'s set-based seeder (one month of cross-merchant
redemptions, older history, lots past expiry: every group leaves one partly consumed lot open, so
the liability covers about a million open lots at the defaults) in a database of its own
(``alliance_bench_operator_insights``), settles the month (so merchant health reads real
settlement lines), then measures as the application role in OPERATOR transactions:

  * the first refresh (every transaction folded), an incremental refresh of the last 10,000
    transactions, and a refresh with nothing new (liability recomputed only);
  * each operator insight query ``--runs`` times: p50, p99 and max in ms (target: p99 <= 200 ms).

``time_operator_refresh`` and ``time_operator_queries`` are what ``bench/insights.py`` calls
(``from operator_insights import time_operator_queries, time_operator_refresh``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import text

from alliance.config import Settings
from alliance.db import Database
from alliance.db.database import OPERATOR, run_sql
from alliance.db.migrate import upgrade
from alliance.insights import operator
from alliance.settlement.periods import period_bounds
from alliance.settlement.service import run_settlement
from ledger import admin, bench_server, code_version, load
from settlement import Plan, groups_for, seed

DB_NAME = "alliance_bench_operator_insights"
APP_ROLE = "alliance_bench_operator_insights_app"
TARGET_MS = 200.0


async def time_operator_refresh(db: Database, incremental_tail: int = 10_000) -> dict[str, float]:
    """Seconds for: a refresh from scratch, one folding the last ``incremental_tail`` transactions,
    and one with nothing new. Rewinds the operator watermark first (the summaries are rebuilt)."""
    engine = db.owner_engine()
    try:
        async with engine.begin() as conn:
            rewind = "UPDATE insight_refresh_state SET last_transaction_id = 0 WHERE name = 'operator'"
            await conn.execute(text(rewind))
            newest = (await conn.execute(text("SELECT coalesce(max(id), 0) FROM ledger_transactions"))).one()
            newest = int(newest[0])
    finally:
        await engine.dispose()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    await operator.refresh_operator_insights(db, max(newest - incremental_tail, 0))
    timings["from scratch"] = time.perf_counter() - started
    started = time.perf_counter()
    await operator.refresh_operator_insights(db, newest)
    timings[f"incremental ({incremental_tail:,} transactions)"] = time.perf_counter() - started
    started = time.perf_counter()
    await operator.refresh_operator_insights(db, newest)
    timings["nothing new (liability only)"] = time.perf_counter() - started
    return timings


async def time_operator_queries(
    db: Database, asset: str = "POINTS", runs: int = 50, today: date | None = None
) -> dict[str, tuple[float, float, float]]:
    """(p50, p99, max) in ms of every operator insight query, each in its own OPERATOR
    transaction as a request would run it."""
    zone = db.settings.time_zone
    today = today or datetime.now(ZoneInfo(zone)).date()
    year_ago, tomorrow = today - timedelta(days=365), today + timedelta(days=1)
    queries: dict[str, Callable[..., Awaitable[object]]] = {
        "pointFlowTotals month x merchant, 12 months": lambda s: operator.flow_totals(
            s, asset, year_ago, tomorrow, "month", "merchant"
        ),
        "pointFlowTotals day x category, 31 days": lambda s: operator.flow_totals(
            s, asset, today - timedelta(days=30), tomorrow, "day", "category"
        ),
        "pointFlowPairs week x category, 26 weeks": lambda s: operator.flow_pairs(
            s, asset, today - timedelta(days=182), tomorrow, "week", "category", False
        ),
        "pointFlowPairs month x merchant, 3 months": lambda s: operator.flow_pairs(
            s, asset, today - timedelta(days=91), tomorrow, "month", "merchant", True
        ),
        "pointFlowPairs month x category, 12 months": lambda s: operator.flow_pairs(
            s, asset, year_ago, tomorrow, "month", "category", True
        ),
        "pointFlowPairs month, one merchant, 12 months": lambda s: operator.flow_pairs(
            s, asset, year_ago, tomorrow, "month", "merchant", True, "bench-0007"
        ),
        "pointsLiability": lambda s: operator.liability(s, asset, zone),
        "merchantHealth, 12 months": lambda s: operator.merchant_health(s, asset, year_ago, tomorrow, zone),
    }
    results: dict[str, tuple[float, float, float]] = {}
    for name, query in queries.items():
        samples = []
        for _ in range(runs + 3):
            started = time.perf_counter()
            async with db.transaction(OPERATOR) as session:
                await query(session)
            samples.append((time.perf_counter() - started) * 1000)
        samples = sorted(samples[3:])  # the first runs warm caches and plans
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        results[name] = (statistics.median(samples), p99, samples[-1])
    return results


async def measure(settings: Settings, month: date, runs: int, refresh: bool = True) -> None:
    assert settings.database_url is not None
    db = Database(settings.database_url, settings)
    try:
        started = time.perf_counter()
        async with db.transaction(OPERATOR) as session:
            await run_settlement(session, "POINTS", month, None)
        print(f"settled {month:%Y-%m} in {time.perf_counter() - started:.1f} s", flush=True)
        async with db.transaction(OPERATOR) as session:
            counts = (
                await run_sql(
                    session,
                    text(
                        "SELECT (SELECT count(*) FROM ledger_transactions) AS transactions,"
                        " (SELECT count(*) FROM lot_movements) AS movements,"
                        " (SELECT count(*) FROM lots WHERE remaining > 0) AS open_lots"
                    ),
                )
            ).one()
        print(
            f"ledger: {counts.transactions:,} transactions, {counts.movements:,} movements, "
            f"{counts.open_lots:,} open lots",
            flush=True,
        )
        if refresh:
            for name, seconds in (await time_operator_refresh(db)).items():
                print(f"  refresh {name:<44} {seconds:7.2f} s", flush=True)
        async with db.transaction(OPERATOR) as session:
            sizes = (
                await run_sql(
                    session,
                    text(
                        "SELECT (SELECT count(*) FROM insight_point_flows) AS flows,"
                        " (SELECT count(*) FROM insight_liability) AS liability,"
                        " (SELECT count(*) FROM insight_redemption_latency) AS latency"
                    ),
                )
            ).one()
        print(
            f"summaries: {sizes.flows:,} flow rows, {sizes.liability:,} liability rows, "
            f"{sizes.latency:,} latency rows",
            flush=True,
        )
        # The seeded month ends before today: query a window that covers it.
        for name, (p50, p99, worst) in (await time_operator_queries(db, runs=runs)).items():
            verdict = "ok" if p99 <= TARGET_MS else "OVER TARGET"
            print(
                f"  {name:<46} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {worst:7.1f} ms  {verdict}",
                flush=True,
            )
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="e.g. postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--data-dir", type=Path, default=Path("/tmp/alliance-bench"), help="embedded PostgreSQL data dir"
    )
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--consumptions", type=int, default=2_000_000)
    parser.add_argument("--history-consumptions", type=int, default=2_000_000)
    parser.add_argument("--expiring-lots", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--reuse", action="store_true", help="keep an existing seeded bench database")
    parser.add_argument("--keep", action="store_true", help="do not drop the bench database at the end")
    parser.add_argument(
        "--queries-only", action="store_true", help="with --reuse: time the queries, no refresh"
    )
    args = parser.parse_args(argv)
    server_url, _ = bench_server(args)
    owner_url = server_url.set(database=DB_NAME)
    settings = Settings(
        database_url=owner_url.render_as_string(hide_password=False),
        app_role=APP_ROLE,
        graphiql=False,
        pool_size=2,
    )
    today = datetime.now(ZoneInfo(settings.time_zone)).date()
    month = date(today.year - (today.month == 1), (today.month - 2) % 12 + 1, 1)
    start, end = period_bounds(month, "monthly", settings.time_zone)
    drop = [f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)', f'DROP ROLE IF EXISTS "{APP_ROLE}"']
    print(f"database {DB_NAME}; code {code_version()}; load average {load()}", flush=True)
    try:
        if not args.reuse:
            asyncio.run(admin(server_url, [*drop, f'CREATE DATABASE "{DB_NAME}"']))
        upgrade(settings.database_url, settings)  # type: ignore[arg-type]
        if not args.reuse:
            plan = Plan(
                tenants=args.tenants,
                members=max(1000, args.consumptions // 10),
                groups=groups_for(args.consumptions),
                history_groups=groups_for(args.history_consumptions) if args.history_consumptions else 0,
                expiring_groups=groups_for(args.expiring_lots),
                same_tenant=0.1,
                reversal_share=0.02,
                start=start,
                end=end,
            )
            asyncio.run(seed(owner_url, plan))
        asyncio.run(measure(settings, month, args.runs, refresh=not args.queries_only))
        print(f"load average at the end: {load()}")
    finally:
        if not args.keep:
            asyncio.run(admin(server_url, drop))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
