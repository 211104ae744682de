"""Helpers shared by the webhook tests: a real HTTP receiver on loopback, endpoint registration,
and running the delivery worker until the receiver has seen what a test waits for."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import text

from alliance.config import Settings
from alliance.db import Database
from alliance.db.database import OPERATOR, run_sql
from alliance.webhooks.worker import Worker, http_client

REGISTER = """mutation($i: RegisterWebhookEndpointInput!) { registerWebhookEndpoint(input: $i) {
  endpoint { id url eventTypes status description } secret userErrors { field code message } } }"""
UPDATE = """mutation($i: UpdateWebhookEndpointInput!) { updateWebhookEndpoint(input: $i) {
  endpoint { id url eventTypes status description } userErrors { field code message } } }"""
ROTATE = """mutation($i: RotateWebhookSecretInput!) { rotateWebhookSecret(input: $i) {
  endpoint { id secretRotatedAt previousSecretExpiresAt } secret userErrors { field code message } } }"""
REPLAY = """mutation($i: ReplayWebhookDeliveryInput!) { replayWebhookDelivery(input: $i) {
  delivery { id status attempts replays eventId } userErrors { field code message } } }"""
DELIVERY_FIELDS = """id eventId eventType eventCreatedAt data status attempts nextAttemptAt lastAttemptAt
  lastStatusCode lastError deliveredAt deadAt replays createdAt endpoint { id url }"""
DELIVERIES = f"""query($f: WebhookDeliveryFilterInput, $first: Int, $after: String) {{
  webhookDeliveries(filter: $f, first: $first, after: $after) {{
    edges {{ node {{ {DELIVERY_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"""
ENDPOINTS = """query($first: Int, $after: String) { webhookEndpoints(first: $first, after: $after) {
  edges { node { id url eventTypes status } } pageInfo { hasNextPage endCursor } } }"""

ALL_TYPES = [
    "POINTS_EARNED",
    "POINTS_REDEEMED",
    "POINTS_REVERSED",
    "POINTS_EXPIRING",
    "HOLD_EXPIRED",
    "SETTLEMENT_READY",
    "SETTLEMENT_DISPUTED",
]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def event_id(self) -> str:
        return self.headers["Alliance-Webhook-Id"]


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 in a thread. Answers with the next of ``statuses`` (200 once
    they run out); while ``hold`` is set, a request waits for ``release`` before answering."""

    statuses: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    hold: bool = False
    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append(Received(dict(self.headers.items()), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    hold = receiver.hold
                if hold:
                    receiver.holding.set()
                    receiver.release.wait(30)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"thanks" if status < 300 else b"receiver says no")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def of(self, event_type: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.json["type"] == event_type]


def fast(settings: Settings, **overrides: Any) -> Settings:
    """Test timing: retries within a fraction of a second, quick polling."""
    return settings.model_copy(
        update={
            "webhook_retry_base_seconds": 0.05,
            "webhook_retry_max_seconds": 0.2,
            "webhook_poll_seconds": 0.05,
            "webhook_timeout_seconds": 5.0,
            "webhook_sweep_seconds": 3600.0,
        }
        | overrides
    )


async def run_worker_until(
    db: Database, settings: Settings, done: Callable[[], bool], timeout: float = 15.0
) -> None:
    """Run the delivery worker until ``done()`` holds (the test fails if it never does)."""
    stop = asyncio.Event()
    async with http_client(settings) as client:
        task = asyncio.create_task(Worker(db, settings, client).run(stop))
        deadline = time.monotonic() + timeout
        try:
            while not done():
                assert time.monotonic() < deadline, "the worker did not get there in time"
                assert not task.done(), task
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def drain(db: Database, settings: Settings) -> None:
    """One worker pass: deliver everything due now, then stop."""
    async with http_client(settings) as client:
        await asyncio.wait_for(Worker(db, settings, client).run(asyncio.Event(), once=True), 30)


async def register(merchant, url: str, *types: str) -> tuple[str, str]:
    """A new endpoint of ``merchant`` for ``types``: (global id, secret)."""
    data = await merchant.api(REGISTER, i={"url": url, "eventTypes": list(types) or ALL_TYPES})
    payload = data["registerWebhookEndpoint"]
    assert payload["userErrors"] == [], payload
    return payload["endpoint"]["id"], payload["secret"]


async def deliveries(api, **filter_: Any) -> list[dict[str, Any]]:
    data = await api(DELIVERIES, f=filter_, first=100)
    return [edge["node"] for edge in data["webhookDeliveries"]["edges"]]


async def outbox_count(db: Database, tenant_id: int) -> int:
    """Events written for a tenant, counted as the operator."""
    async with db.transaction(OPERATOR) as session:
        found = await run_sql(
            session, text("SELECT count(*) FROM webhook_events WHERE tenant_id = :t"), {"t": tenant_id}
        )
        return found.scalar_one()
