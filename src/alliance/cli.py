"""The ``alliance`` command: serve, migrate, seed the demo, manage clients, keys and tokens."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from alliance.config import Settings, get_settings
from alliance.db import Database
from alliance.db.database import OPERATOR
from alliance.db.migrate import resolve_owner_url, upgrade
from alliance.jobs import JobRun, recorded_run
from alliance.observability import configure_logging

T = TypeVar("T")


def _with_database(settings: Settings, action: Callable[[Database], Awaitable[T]]) -> T:
    owner_url, _ = resolve_owner_url(settings)

    async def run() -> T:
        db = Database(owner_url, settings)
        try:
            return await action(db)
        finally:
            await db.close()

    return asyncio.run(run())


def _run_job(settings: Settings, job: str, action: Callable[[Database, JobRun], Awaitable[T]]) -> T:
    """Run a scheduled job recorded in ``job_runs``, so its duration and outcome reach /metrics
    after its pod is gone."""

    async def run(db: Database) -> T:
        async with recorded_run(db, job) as record:
            return await action(db, record)

    return _with_database(settings, run)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from alliance.api.app import create_app
    from alliance.api.workers import APP_FACTORY, MAX_WORKERS, can_share_port, serve_workers

    if not 1 <= args.workers <= MAX_WORKERS:
        print(f"--workers takes 1 to {MAX_WORKERS}", file=sys.stderr)
        return 2
    owner_url, embedded = resolve_owner_url(settings)
    if embedded:
        upgrade(owner_url, settings)
    if args.demo:
        from alliance.auth.keys import ensure_signing_key

        async def prepare(db: Database) -> None:
            async with db.transaction(OPERATOR) as session:
                await ensure_signing_key(session)

        _with_database(settings, prepare)
        _print_demo(settings)
    settings = settings.model_copy(update={"access_log": args.access_log, "demo": args.demo or settings.demo})
    if args.workers == 1:
        app = create_app(owner_url, settings)
        uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_config=None)
        return 0
    # Worker processes build the app from the environment; point them at the same database.
    os.environ["DATABASE_URL"] = owner_url
    os.environ["ALLIANCE_ACCESS_LOG"] = "true" if args.access_log else "false"
    os.environ["ALLIANCE_DEMO"] = "true" if settings.demo else "false"
    if can_share_port():  # a listening socket per worker (see alliance.api.workers)
        return serve_workers(args.host, args.port, args.workers)
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        workers=args.workers,
        host=args.host,
        port=args.port,
        access_log=False,
        log_config=None,
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    owner_url, _ = resolve_owner_url(settings)
    upgrade(owner_url, settings)
    print("database is at the newest migration")
    return 0


def _print_demo(settings: Settings) -> None:
    from alliance.demo import seed_demo

    credentials = _with_database(settings, seed_demo)
    print("Demo alliance ready. API clients (client_id / client_secret):")
    for cred in credentials:
        who = cred.role if cred.tenant is None else f"{cred.role} {cred.tenant}"
        print(f"  {who:<28} {cred.client_id}  {cred.client_secret}")


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    owner_url, embedded = resolve_owner_url(settings)
    if embedded:
        upgrade(owner_url, settings)
    _print_demo(settings)
    return 0


def cmd_client_create(args: argparse.Namespace, settings: Settings) -> int:
    from alliance.auth.clients import create_client
    from alliance.errors import DomainError
    from alliance.tenants.service import tenant_by_code

    async def create(db: Database) -> tuple[str, str]:
        async with db.transaction(OPERATOR) as session:
            tenant_id = None
            if args.tenant:
                tenant = await tenant_by_code(session, args.tenant)
                if tenant is None:
                    raise DomainError("TENANT_NOT_FOUND", f"no tenant {args.tenant!r}", "tenant")
                tenant_id = tenant.id
            scopes = args.scopes.split(",") if args.scopes else None
            issued = await create_client(session, args.role, args.name, tenant_id, scopes)
            return issued.client.client_id, issued.client_secret

    try:
        client_id, secret = _with_database(settings, create)
    except DomainError as error:
        print(f"error: {error.code}: {error.message}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"client_id": client_id, "client_secret": secret}))
    else:
        print(f"client_id:     {client_id}\nclient_secret: {secret}\n(the secret is shown only once)")
    return 0


def cmd_token_member(args: argparse.Namespace, settings: Settings) -> int:
    from alliance.auth.keys import KeyRing, ensure_signing_key
    from alliance.auth.tokens import TokenIssuer
    from alliance.errors import NotFound
    from alliance.members.service import member_by_number

    async def mint(db: Database) -> str:
        keyring = KeyRing(settings.member_token_ttl_seconds)
        async with db.transaction(OPERATOR) as session:
            await ensure_signing_key(session)
            await keyring.load(session)
            member = await member_by_number(session, args.member_number)
        assert member.id is not None
        return TokenIssuer(settings, keyring).for_member(member.id, member.member_number).access_token

    try:
        print(_with_database(settings, mint))
    except NotFound:
        print(f"error: no member {args.member_number}", file=sys.stderr)
        return 2
    return 0


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    from alliance.auth.keys import rotate_signing_key

    async def rotate(db: Database) -> str:
        async with db.transaction(OPERATOR) as session:
            return await rotate_signing_key(session)

    kid = _with_database(settings, rotate)
    print(f"new signing key {kid}; previous keys stay valid until their tokens expire")
    return 0


def cmd_ledger_verify(args: argparse.Namespace, settings: Settings) -> int:
    from alliance.ledger.service import verify_ledger

    async def verify(db: Database, run: JobRun) -> list:  # type: ignore[type-arg]
        async with db.transaction(OPERATOR) as session:
            failures = await verify_ledger(session)
        run.counts = {"failed_checks": len(failures)}
        run.failed = bool(failures)
        return failures

    failures = _run_job(settings, "ledger_verify", verify)
    if not failures:
        print("ledger verified: every invariant holds")
        return 0
    print(f"ledger verification FAILED ({len(failures)} checks):", file=sys.stderr)
    for failure in failures:
        print(f"  - {failure.check}: {failure.failures} failing (e.g. {failure.example})", file=sys.stderr)
    return 1


def cmd_settle(args: argparse.Namespace, settings: Settings) -> int:
    """Build the batch of one asset and month (default: last month) — the monthly CronJob."""
    from datetime import date

    from alliance.errors import DomainError
    from alliance.settlement.periods import parse_month
    from alliance.settlement.service import run_settlement

    if args.period:
        start = parse_month(args.period)
    else:
        today = date.today()
        start = date(today.year - (today.month == 1), (today.month - 2) % 12 + 1, 1)

    async def run(db: Database, job: JobRun) -> str:
        async with db.transaction(OPERATOR) as session:
            batch = await run_settlement(session, args.asset, start, None)
            job.counts = {"batch": batch.id, "line_points": batch.line_points}
            return (
                f"batch {batch.id} {batch.asset} {batch.period_start:%Y-%m-%d}..{batch.period_end:%Y-%m-%d} "
                f"{batch.status}: {batch.line_points} points, "
                f"gross {batch.gross_amount}, fees {batch.fee_amount}"
            )

    try:
        print(_run_job(settings, "settle", run))
    except DomainError as error:
        print(f"error: {error.code}: {error.message}", file=sys.stderr)
        return 2
    return 0


def cmd_settle_export(args: argparse.Namespace, settings: Settings) -> int:
    from alliance.errors import DomainError
    from alliance.settlement.service import batch_by_id, batch_lines, batch_positions, statement_csv

    async def export(db: Database) -> str:
        async with db.transaction(OPERATOR) as session:
            if args.format == "csv":
                return await statement_csv(session, args.batch)
            batch = await batch_by_id(session, args.batch)
            lines = await batch_lines(session, args.batch, None, 1_000_000)
            positions = await batch_positions(session, args.batch)
        document = {
            "batch": {
                "id": batch.id,
                "asset": batch.asset,
                "status": batch.status,
                "periodStart": batch.period_start.isoformat(),
                "periodEnd": batch.period_end.isoformat(),
            },
            "lines": [
                {
                    "issuer": line.issuer_code,
                    "redeemer": line.redeemer_code,
                    "points": line.points,
                    "grossAmount": str(line.gross_amount),
                    "feeAmount": str(line.fee_amount),
                    "netAmount": str(line.net_amount),
                }
                for line in lines
            ],
            "positions": [
                {
                    "party": p.party,
                    "netAmount": str(p.net_amount),
                    "direction": p.direction,
                    "paymentReference": p.payment_reference,
                }
                for p in positions
            ],
        }
        return json.dumps(document, indent=2) + "\n"

    try:
        sys.stdout.write(_with_database(settings, export))
    except DomainError as error:
        print(f"error: {error.code}: {error.message}", file=sys.stderr)
        return 2
    return 0


def cmd_expire(args: argparse.Namespace, settings: Settings) -> int:
    """Expire every lot past its expiry, in chunks; safe beside traffic and beside itself."""
    import uuid

    from alliance.settlement.service import expire_lots

    run_id = str(uuid.uuid4())

    async def expire(db: Database, run: JobRun) -> tuple[int, int, int]:
        totals = [0, 0, 0]

        async def worker() -> None:
            # Wallets are locked with SKIP LOCKED, so the loops share the work; each stops when
            # it finds nothing left that it can lock.
            while True:
                async with db.transaction(OPERATOR) as session:
                    chunk = await expire_lots(session, run_id, args.chunk)
                totals[0] += chunk.members
                totals[1] += chunk.lots
                totals[2] += chunk.points
                if chunk.members == 0:
                    return

        await asyncio.gather(*(worker() for _ in range(args.workers)))
        run.counts = {"members": totals[0], "lots": totals[1], "points": totals[2]}
        return totals[0], totals[1], totals[2]

    members, lots, points = _run_job(settings, "expire", expire)
    print(
        f"expiry run {run_id}: {points} points from {lots} lots of {members} member wallets moved to breakage"
    )
    return 0


def cmd_insights_refresh(args: argparse.Namespace, settings: Settings) -> int:
    """Fold new postings into the insight summaries (CronJob; overlapping runs skip)."""
    from alliance.insights.refresh import refresh

    async def run(db: Database, job: JobRun) -> dict[str, int] | None:
        counts = await refresh(db, settings, full=args.full)
        job.counts = counts if counts is not None else {"skipped": 1}
        return counts

    counts = _run_job(settings, "insights_refresh", run)
    if counts is None:
        print("another insights refresh is running; nothing done")
    else:
        print("insights refreshed: " + ", ".join(f"{name} {rows}" for name, rows in counts.items()))
    return 0


def cmd_birthdays(args: argparse.Namespace, settings: Settings) -> int:
    """Grant birthday gift packs (daily CronJob; running it twice grants once)."""
    from alliance.earning.jobs import BirthdayRun, grant_birthday_gifts

    async def grant(db: Database, job: JobRun) -> BirthdayRun:
        run = await grant_birthday_gifts(db, settings.time_zone)
        job.counts = {"granted": run.granted, "already_granted": run.already_granted}
        return run

    run = _run_job(settings, "birthdays", grant)
    print(
        f"birthday gifts: {run.granted} granted, {run.already_granted} had theirs ({run.tenants} merchants)"
    )
    return 0


def cmd_tiers_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    """Re-evaluate every member's tier — the nightly CronJob; idempotent, safe to run twice."""
    from alliance.tiers.models import Evaluation
    from alliance.tiers.service import evaluate

    async def run(db: Database, job: JobRun) -> Evaluation:
        async with db.transaction(OPERATOR) as session:
            result = await evaluate(session)
        job.counts = {
            "evaluated": result.evaluated,
            "upgraded": result.upgraded,
            "downgraded": result.downgraded,
        }
        return result

    result = _run_job(settings, "tiers_evaluate", run)
    print(
        f"tiers evaluated for {result.evaluated} members: {result.upgraded} up, {result.downgraded} down "
        f"(grace expired), {result.grace_started} entered and {result.grace_ended} left a grace period"
    )
    return 0


def cmd_webhooks_run(args: argparse.Namespace, settings: Settings) -> int:
    """The delivery worker (a Deployment): until SIGTERM, finishing in-flight deliveries first."""
    from alliance.webhooks.worker import run_worker

    async def run(db: Database) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_worker(db, settings, stop, once=args.once, health_port=args.health_port)

    _with_database(settings, run)
    return 0


def cmd_schema_export(args: argparse.Namespace, settings: Settings) -> int:
    from alliance.api.schema import export_sdl

    sdl = export_sdl(settings)
    if args.output == "-":
        sys.stdout.write(sdl)
    else:
        Path(args.output).write_text(sdl)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alliance", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the GraphQL gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--demo", action="store_true", help="seed the demo alliance first")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (one per core is a good start)"
    )
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one JSON line per request (off for benchmarks)",
    )
    serve.set_defaults(handler=cmd_serve)

    db = commands.add_parser("db", help="database maintenance").add_subparsers(
        dest="db_command", required=True
    )
    db.add_parser("upgrade", help="apply migrations").set_defaults(handler=cmd_db_upgrade)

    commands.add_parser("demo", help="seed the demo alliance and print credentials").set_defaults(
        handler=cmd_demo
    )

    client = commands.add_parser("client", help="API clients").add_subparsers(
        dest="client_command", required=True
    )
    create = client.add_parser("create", help="create an API client (prints the secret once)")
    create.add_argument("--role", choices=["operator", "merchant"], required=True)
    create.add_argument("--tenant", help="tenant code (merchant clients)")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", help="comma-separated scopes (default: all of the role's)")
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=cmd_client_create)

    token = commands.add_parser("token", help="mint tokens").add_subparsers(
        dest="token_command", required=True
    )
    member = token.add_parser("member", help="a member token, for development")
    member.add_argument("member_number")
    member.set_defaults(handler=cmd_token_member)

    keys = commands.add_parser("keys", help="signing keys").add_subparsers(dest="keys_command", required=True)
    keys.add_parser("rotate", help="make a new signing key current").set_defaults(handler=cmd_keys_rotate)

    ledger = commands.add_parser("ledger", help="the points ledger").add_subparsers(
        dest="ledger_command", required=True
    )
    ledger.add_parser("verify", help="check every ledger invariant; exit 1 if one fails").set_defaults(
        handler=cmd_ledger_verify
    )

    settle = commands.add_parser("settle", help="settlement: build a period's batch (default: last month)")
    settle.add_argument("--asset", default="POINTS")
    settle.add_argument("--period", help="month to settle, e.g. 2026-11")
    settle.set_defaults(handler=cmd_settle)
    settle_commands = settle.add_subparsers(dest="settle_command")
    export_batch = settle_commands.add_parser("export", help="a batch's statement as CSV or JSON")
    export_batch.add_argument("--batch", type=int, required=True)
    export_batch.add_argument("--format", choices=["csv", "json"], default="csv")
    export_batch.set_defaults(handler=cmd_settle_export)

    expire_parser = commands.add_parser("expire", help="expire lots past their expiry into breakage")
    expire_parser.add_argument("--chunk", type=int, default=5000, help="member wallets per transaction")
    expire_parser.add_argument("--workers", type=int, default=2, help="concurrent loops (one per core)")
    expire_parser.set_defaults(handler=cmd_expire)

    tiers = commands.add_parser("tiers", help="member tiers").add_subparsers(
        dest="tiers_command", required=True
    )
    tiers.add_parser(
        "evaluate", help="nightly: upgrade the qualified, downgrade after the grace period"
    ).set_defaults(handler=cmd_tiers_evaluate)

    commands.add_parser("birthdays", help="grant this month's birthday gift packs").set_defaults(
        handler=cmd_birthdays
    )

    insights = commands.add_parser("insights", help="merchant insights").add_subparsers(
        dest="insights_command", required=True
    )
    insights_refresh = insights.add_parser("refresh", help="bring the insight summaries up to date")
    insights_refresh.add_argument("--full", action="store_true", help="rebuild from the whole ledger")
    insights_refresh.set_defaults(handler=cmd_insights_refresh)

    webhooks = commands.add_parser("webhooks", help="merchant webhooks").add_subparsers(
        dest="webhooks_command", required=True
    )
    webhooks_run = webhooks.add_parser("run", help="deliver webhook events (a long-running worker)")
    webhooks_run.add_argument("--once", action="store_true", help="deliver what is due now, then exit")
    webhooks_run.add_argument(
        "--health-port", type=int, help="serve /healthz and /metrics (Prometheus) on this port"
    )
    webhooks_run.set_defaults(handler=cmd_webhooks_run)

    schema = commands.add_parser("schema", help="GraphQL schema").add_subparsers(
        dest="schema_command", required=True
    )
    export = schema.add_parser("export", help="write the SDL")
    export.add_argument("--output", default="schema.graphql")
    export.set_defaults(handler=cmd_schema_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_logging(logging.INFO)
    args = build_parser().parse_args(argv)
    return int(args.handler(args, get_settings()) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
