"""What the webhook outbox and live-balance triggers cost the earn path.

    python bench/webhooks.py [--database-url URL | --data-dir DIR] [--rounds 10]

Runs against the database ``bench/ledger.py --keep`` leaves behind (``alliance_bench``; seed it
first, e.g. ``--members 20000 --lots 200000 --skip-http --keep``) under three variants:

  none        the triggers of revision 0013 disabled (the ledger as it was before);
  empty       triggers on, no endpoint, nobody watching: two index probes per posting;
  subscribed  every benchmark merchant has an active endpoint for points.*: an event and a
              delivery written with every earn;
  watched     every member's balance is watched live (balanceChanged): a NOTIFY with every earn.

Two measurements, each interleaved round after round in a shuffled order so that load from
anything else on the machine falls on every variant alike:

  (1) PostgreSQL CPU per earn: ``--calls`` sequential ``ledger_earn`` calls on one connection,
      the backend's user+system time read from /proc before and after (the server must run on
      this machine). CPU time hardly depends on other load, unlike throughput; the figure is the
      median over rounds of the difference to ``none`` in the same round.
  (2) ``earn_points`` throughput, phase (a) of ``bench/ledger.py``: ``--concurrency`` clients for
      ``--duration`` seconds (NOTIFY takes a database-wide lock at commit: this shows contention).

The database is left with the triggers on and the benchmark's endpoints disabled.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import tempfile
from pathlib import Path

import asyncpg
from sqlalchemy.engine import URL

from alliance.config import Settings
from alliance.db import Database
from ledger import (
    APP_ROLE,
    DB_NAME,
    asyncpg_dsn,
    bench_server,
    code_version,
    domain_earn,
    drive,
    load,
    load_dataset,
)

TRIGGERS = """ALTER TABLE ledger_transactions {0} TRIGGER webhook_outbox;
              ALTER TABLE holds {0} TRIGGER balance_changed;"""
BENCH_ENDPOINTS = "url LIKE 'https://bench.invalid/%'"
BENCH_LISTENER = "00000000-0000-0000-0000-00000000b0b0"
# scope, key (also the order), tenant, member number: 100 points, the rules' planning skipped.
EARN = (
    "SELECT ledger_earn($1, $2, 'h', $3, 'earn', $4, 'POINTS', 100, 100, 'CNY', $2, NULL, NULL, NULL, NULL)"
)
VARIANTS = {
    "none": TRIGGERS.format("DISABLE"),
    "empty": TRIGGERS.format("ENABLE"),
    "subscribed": TRIGGERS.format("ENABLE")
    + f"""INSERT INTO webhook_endpoints (tenant_id, url, event_types, secret)
            SELECT t.id, 'https://bench.invalid/' || t.code, ARRAY['points.earned', 'points.redeemed',
              'points.reversed'], 'whsec_' || md5(t.code) || md5(t.code)
            FROM tenants t WHERE t.code LIKE 'bench-%' AND NOT EXISTS (
              SELECT 1 FROM webhook_endpoints e WHERE e.url = 'https://bench.invalid/' || t.code);
          UPDATE webhook_endpoints SET status = 'active' WHERE {BENCH_ENDPOINTS};""",
    "watched": TRIGGERS.format("ENABLE")
    + f"""INSERT INTO balance_watches (member_id, listener, expires_at)
            SELECT id, '{BENCH_LISTENER}', now() + interval '1 day' FROM members;""",
}


async def switch(conn: asyncpg.Connection, variant: str) -> None:
    # Every variant starts from "no endpoint is active, nobody watches": nothing else counts.
    active = await conn.fetchval(
        f"SELECT count(*) FROM webhook_endpoints WHERE status = 'active' AND NOT {BENCH_ENDPOINTS}"
    )
    watched = await conn.fetchval(
        f"SELECT count(*) FROM balance_watches WHERE listener <> '{BENCH_LISTENER}'"
    )
    assert active == 0 and watched == 0, f"{active} endpoints, {watched} watches outside the benchmark's"
    await conn.execute(
        f"""UPDATE webhook_endpoints SET status = 'disabled' WHERE {BENCH_ENDPOINTS};
            DELETE FROM balance_watches WHERE listener = '{BENCH_LISTENER}';"""
    )
    await conn.execute(VARIANTS[variant])


def backend_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_per_earn(
    owner_url: URL, args: argparse.Namespace, rng: random.Random
) -> dict[str, list[float]]:
    admin = await asyncpg.connect(asyncpg_dsn(owner_url))
    conn = await asyncpg.connect(asyncpg_dsn(owner_url))
    pid = conn.get_server_pid()
    if not Path(f"/proc/{pid}/stat").exists():
        print("  (1) skipped: the server's processes are not visible here")
        return {}
    pairs = await conn.fetch(
        """SELECT l.tenant_id, m.member_number FROM member_links l JOIN members m ON m.id = l.member_id
           JOIN tenants t ON t.id = l.tenant_id AND t.code LIKE 'bench-%' ORDER BY random() LIMIT 50000"""
    )
    earn = await conn.prepare(EARN)
    tag = f"c{secrets.token_hex(4)}"
    samples: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    calls = 0
    try:
        for round_ in range(1, args.rounds + 1):
            order = list(VARIANTS)
            rng.shuffle(order)
            for variant in order:
                await switch(admin, variant)
                before = backend_cpu_seconds(pid)
                for _ in range(args.calls):
                    tenant, number = pairs[calls % len(pairs)]
                    calls += 1
                    await earn.fetchval(f"bench-mc-{tenant}", f"{tag}-{calls}", tenant, number)
                samples[variant].append((backend_cpu_seconds(pid) - before) / args.calls * 1000)
            print(f"  (1) round {round_}: " + ", ".join(f"{v} {samples[v][-1]:.3f} ms" for v in VARIANTS))
    finally:
        await switch(admin, "empty")
        await admin.close()
        await conn.close()
    return samples


async def throughput(owner_url: URL, args: argparse.Namespace, rng: random.Random) -> dict[str, list[float]]:
    settings = Settings(
        database_url=owner_url.render_as_string(hide_password=False),
        app_role=APP_ROLE,
        graphiql=False,
        pool_size=args.concurrency,
    )
    data = await load_dataset(owner_url)
    db = Database(owner_url.render_as_string(hide_password=False), settings)
    admin = await asyncpg.connect(asyncpg_dsn(owner_url))
    rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    tag = f"w{secrets.token_hex(4)}"
    try:
        for round_ in range(1, args.rounds + 1):
            order = list(VARIANTS)
            rng.shuffle(order)
            for variant in order:
                await switch(admin, variant)
                run = await drive(
                    f"(2) round {round_} {variant:<10}",
                    domain_earn(db, data, f"{tag}-{round_}-{variant}"),
                    duration=args.duration,
                    concurrency=args.concurrency,
                    warmup=args.warmup,
                )
                rates[variant].append(run.rate)
    finally:
        await switch(admin, "empty")
        await admin.close()
        await db.close()
    return rates


def report(title: str, unit: str, samples: dict[str, list[float]]) -> None:
    if not samples:
        return
    print(f"\n{title}")
    for variant, values in samples.items():
        deltas = [value - base for value, base in zip(values, samples["none"], strict=True)]
        ratios = [value / base for value, base in zip(values, samples["none"], strict=True)]
        print(
            f"  {variant:<10} median {statistics.median(values):8.3f} {unit}; vs none in the same round: "
            f"{statistics.median(deltas):+.3f} {unit} ({statistics.median(ratios):.2f}x)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="the server bench/ledger.py used")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "alliance-bench")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=400, help="(1): sequential earns per variant and round")
    parser.add_argument("--duration", type=float, default=4.0, help="(2): seconds per variant and round")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    server_url, _ = bench_server(args)
    owner_url = server_url.set(database=DB_NAME)
    print(f"code under test: {code_version()}; load average {load()}")
    rng = random.Random(args.seed)
    cpu = asyncio.run(cpu_per_earn(owner_url, args, rng))
    rates = asyncio.run(throughput(owner_url, args, rng))
    report("(1) PostgreSQL CPU per earn (ledger_earn, one connection):", "ms", cpu)
    report(f"(2) earn_points throughput ({args.concurrency} clients):", "ops/s", rates)
    print(f"load average at the end: {load()} (other work on this machine skews every figure)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
