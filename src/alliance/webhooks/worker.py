"""The delivery worker behind ``alliance webhooks run`` (one or more per cluster).

Each loop claims due deliveries (``webhook_claim``: FOR UPDATE SKIP LOCKED, so workers never
take the same one, and a lease, so a crashed worker's claim is taken over when it lapses),
signs and POSTs them, and records the outcome under the attempt number it claimed (a late
answer of a lapsed claim is ignored). Failures are retried with exponential backoff and jitter
until ``webhook_max_attempts`` or ``webhook_max_age_seconds``; then the delivery is a dead
letter the merchant can see and replay. Every ``webhook_sweep_seconds`` it also writes the
events no ledger write announces (points.expiring, hold.expired) and purges old ones.

Delivery is at least once: a receiver de-duplicates on ``Alliance-Webhook-Id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from alliance.config import Settings
from alliance.db import Database
from alliance.db.database import OPERATOR, run_sql
from alliance.observability import (
    WEBHOOK_DELIVERIES,
    WEBHOOK_EVENTS_SWEPT,
    WEBHOOK_LATENCY,
    WEBHOOK_WORKER_HEARTBEAT,
)
from alliance.webhooks import signing
from alliance.webhooks.models import EventType
from alliance.webhooks.service import is_public_address

log = structlog.get_logger("alliance.webhooks")
T = TypeVar("T")

HOLD_LOOKBACK_DAYS = 7  # holds that lapsed longer ago are never announced (retention is longer)
SWEEP_LIMIT = 5000  # lots and holds per sweep
PURGE_LIMIT = 5000  # events per sweep
MAX_ERROR = 500
RESPONSE_EXCERPT = 200  # bytes of a failing endpoint's answer kept for the merchant
UNHEALTHY_AFTER_SECONDS = 300


@dataclass(frozen=True, slots=True)
class Claim:
    delivery_id: int
    attempt: int
    event_id: uuid.UUID
    event_type: str
    tenant_code: str
    data: dict[str, Any]
    event_created_at: datetime
    url: str
    secrets: tuple[str, ...]

    def body(self) -> bytes:
        """The request body: the same bytes on every attempt (only the signature's timestamp changes)."""
        created = self.event_created_at.astimezone(UTC).isoformat(timespec="microseconds")
        envelope = {
            "id": str(self.event_id),
            "type": self.event_type,
            "createdAt": created.replace("+00:00", "Z"),
            "tenant": self.tenant_code,
            "data": self.data,
        }
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    status_code: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SweepResult:
    expiring_events: int
    hold_events: int
    purged_events: int


def retry_delay(attempt: int, settings: Settings, rng: random.Random) -> float:
    """Exponential backoff (base x 2^(attempt-1), capped) with equal jitter: between half and all of it."""
    ceiling = min(
        settings.webhook_retry_max_seconds, settings.webhook_retry_base_seconds * 2 ** (attempt - 1)
    )
    return ceiling * (0.5 + rng.random() / 2)


_RECORD_DELIVERED = text(
    """UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), last_status_code = :code,
         last_error = NULL
       WHERE id = :id AND attempts = :attempt AND status = 'pending'
       RETURNING status"""
)
_RECORD_FAILED = text(
    """UPDATE webhook_deliveries d SET status = v.status,
         dead_at = CASE WHEN v.status = 'dead' THEN now() END,
         next_attempt_at = now() + make_interval(secs => :delay),
         last_status_code = :code, last_error = :error
       FROM (SELECT x.id, CASE WHEN x.attempts >= :max_attempts
                    OR now() + make_interval(secs => :delay) - coalesce(x.replayed_at, x.created_at)
                       > make_interval(secs => :max_age)
                  THEN 'dead' ELSE 'pending' END AS status
             FROM webhook_deliveries x WHERE x.id = :id) v
       WHERE d.id = v.id AND d.attempts = :attempt AND d.status = 'pending'
       RETURNING d.status"""
)


class Worker:
    def __init__(self, db: Database, settings: Settings, client: httpx.AsyncClient) -> None:
        self.db = db
        self.settings = settings
        self.client = client
        self.rng = random.Random()
        self.last_beat = time.monotonic()

    # -- the steps ---------------------------------------------------------------------------

    async def claim(self, limit: int) -> list[Claim]:
        async with self.db.transaction(OPERATOR) as session:
            rows = await run_sql(
                session,
                text("SELECT * FROM webhook_claim(:limit, :lease, :max_attempts)"),
                {
                    "limit": limit,
                    "lease": self.settings.webhook_lease_seconds,
                    "max_attempts": self.settings.webhook_max_attempts,
                },
            )
            return [
                Claim(
                    delivery_id=row.delivery_id,
                    attempt=row.attempt,
                    event_id=row.event_id,
                    event_type=row.event_type,
                    tenant_code=row.tenant_code,
                    data=row.data,
                    event_created_at=row.event_created_at,
                    url=row.url,
                    secrets=tuple(row.secrets),
                )
                for row in rows
            ]

    async def send(self, claim: Claim) -> Outcome:
        """One signed POST, bounded by webhook_timeout_seconds in all; 2xx is success."""
        if not self.settings.webhook_allow_insecure_urls and not await self._resolves_publicly(claim.url):
            return Outcome(False, error="URL_NOT_ALLOWED: the host does not resolve to public addresses only")
        body = claim.body()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Alliance-Webhooks/1",
            signing.ID_HEADER: str(claim.event_id),
            signing.TIMESTAMP_HEADER: str(timestamp),
            signing.SIGNATURE_HEADER: signing.signature_header(
                claim.secrets, str(claim.event_id), timestamp, body
            ),
            signing.EVENT_HEADER: claim.event_type,
            signing.ATTEMPT_HEADER: str(claim.attempt),
        }
        started = time.perf_counter()
        try:
            async with (
                asyncio.timeout(self.settings.webhook_timeout_seconds),
                self.client.stream("POST", claim.url, content=body, headers=headers) as response,
            ):
                excerpt = b""
                async for chunk in response.aiter_raw():
                    excerpt += chunk
                    if len(excerpt) >= RESPONSE_EXCERPT:
                        break
        except TimeoutError:
            return Outcome(False, error="TIMEOUT: no answer in time")
        except httpx.HTTPError as exc:
            return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR])
        finally:
            WEBHOOK_LATENCY.observe(time.perf_counter() - started)
        if 200 <= response.status_code < 300:
            return Outcome(True, response.status_code)
        answer = excerpt[:RESPONSE_EXCERPT].decode("utf-8", "replace")
        return Outcome(False, response.status_code, f"HTTP {response.status_code}: {answer}"[:MAX_ERROR])

    async def record(self, claim: Claim, outcome: Outcome) -> str:
        """delivered, retry, dead, or superseded (the claim lapsed and another attempt started)."""
        params: dict[str, Any] = {
            "id": claim.delivery_id,
            "attempt": claim.attempt,
            "code": outcome.status_code,
        }
        if outcome.delivered:
            statement = _RECORD_DELIVERED
        else:
            statement = _RECORD_FAILED
            params |= {
                "delay": retry_delay(claim.attempt, self.settings, self.rng),
                "error": outcome.error,
                "max_attempts": self.settings.webhook_max_attempts,
                "max_age": self.settings.webhook_max_age_seconds,
            }
        async with self.db.transaction(OPERATOR) as session:
            status = (await run_sql(session, statement, params)).scalar_one_or_none()
        return {"delivered": "delivered", "pending": "retry", "dead": "dead", None: "superseded"}[status]

    async def deliver(self, claim: Claim) -> None:
        try:
            outcome = await self.send(claim)
        except Exception as exc:  # a defect must end in a failed attempt, not in a silent retry loop
            log.exception("webhook send failed unexpectedly", delivery_id=claim.delivery_id)
            outcome = Outcome(False, error=f"INTERNAL: {type(exc).__name__}")
        try:
            result = await self.record(claim, outcome)
        except Exception:  # the lease lapses and the delivery is attempted again
            log.exception("webhook outcome not recorded", delivery_id=claim.delivery_id)
            return
        WEBHOOK_DELIVERIES.labels(result).inc()
        log.info(
            "webhook delivery",
            delivery_id=claim.delivery_id,
            event_id=str(claim.event_id),
            event_type=claim.event_type,
            tenant=claim.tenant_code,
            attempt=claim.attempt,
            status_code=outcome.status_code,
            result=result,
            error=outcome.error,
        )

    async def sweep(self) -> SweepResult:
        """Announce points about to expire and holds that lapsed (once each), and purge old events."""
        async with self.db.transaction(OPERATOR) as session:
            swept = (
                await run_sql(
                    session,
                    text("SELECT * FROM webhook_sweep(:days, :lookback, :limit)"),
                    {
                        "days": self.settings.webhook_expiring_days,
                        "lookback": HOLD_LOOKBACK_DAYS,
                        "limit": SWEEP_LIMIT,
                    },
                )
            ).one()
            purged = (
                await run_sql(
                    session,
                    text("SELECT webhook_purge(:days, :limit)"),
                    {"days": self.settings.webhook_retention_days, "limit": PURGE_LIMIT},
                )
            ).scalar_one()
        WEBHOOK_EVENTS_SWEPT.labels(EventType.POINTS_EXPIRING.value).inc(swept.expiring_events)
        WEBHOOK_EVENTS_SWEPT.labels(EventType.HOLD_EXPIRED.value).inc(swept.hold_events)
        return SweepResult(swept.expiring_events, swept.hold_events, purged)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, once: bool = False) -> None:
        """Deliver until ``stop`` is set (in-flight deliveries finish first); with ``once``, until
        nothing is due any more."""
        concurrency = self.settings.webhook_concurrency
        inflight: set[asyncio.Task[None]] = set()
        stopping = asyncio.ensure_future(stop.wait())
        next_sweep = 0.0
        try:
            while not stop.is_set():
                self.beat()
                if time.monotonic() >= next_sweep:
                    await self._guarded("sweep", self.sweep, None)
                    next_sweep = time.monotonic() + self.settings.webhook_sweep_seconds
                free = concurrency - len(inflight)
                claimed = (
                    await self._guarded("claim", functools.partial(self.claim, free), []) if free else []
                )
                inflight.update(asyncio.create_task(self.deliver(c)) for c in claimed)
                if once and not inflight:
                    return
                done, _ = await asyncio.wait(
                    {*inflight, stopping},
                    timeout=self.settings.webhook_poll_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                inflight -= done
        finally:
            stopping.cancel()
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)

    def beat(self) -> None:
        self.last_beat = time.monotonic()
        WEBHOOK_WORKER_HEARTBEAT.set(time.time())

    def healthy(self) -> bool:
        return time.monotonic() - self.last_beat < UNHEALTHY_AFTER_SECONDS

    async def _guarded(self, step: str, action: Callable[[], Awaitable[T]], fallback: T) -> T:
        """A database outage must not end the worker: log, back off one poll interval, go on."""
        try:
            return await action()
        except Exception:
            log.exception("webhook worker step failed", step=step)
            await asyncio.sleep(self.settings.webhook_poll_seconds)
            return fallback

    async def _resolves_publicly(self, url: str) -> bool:
        parts = urlsplit(url)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                parts.hostname, parts.port or 443, type=socket.SOCK_STREAM
            )
        except OSError:
            return False
        return bool(infos) and all(is_public_address(str(info[4][0])) for info in infos)


def http_client(settings: Settings) -> httpx.AsyncClient:
    """No redirects (a 3xx is a failed attempt), pooled connections, the request timeout."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.webhook_timeout_seconds),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=settings.webhook_concurrency),
    )


async def serve_health(worker: Worker, port: int) -> asyncio.Server:
    """``/healthz`` (200 while the loop turns, 503 once it has been stuck) and ``/metrics``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.split()
            path = parts[1].split(b"?")[0] if len(parts) > 1 else b""
            if path == b"/metrics":
                status, content_type, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest()
            elif path == b"/healthz":
                ok = worker.healthy()
                status = "200 OK" if ok else "503 Service Unavailable"
                content_type, body = "text/plain", b"ok" if ok else b"stuck"
            else:
                status, content_type, body = "404 Not Found", "text/plain", b"not found"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host="0.0.0.0", port=port)


async def run_worker(
    db: Database, settings: Settings, stop: asyncio.Event, once: bool = False, health_port: int | None = None
) -> None:
    async with http_client(settings) as client:
        worker = Worker(db, settings, client)
        server = await serve_health(worker, health_port) if health_port else None
        try:
            await worker.run(stop, once=once)
        finally:
            if server is not None:
                server.close()
                await server.wait_closed()
