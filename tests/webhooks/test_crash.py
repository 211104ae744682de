"""At least once: a worker process killed in the middle of a delivery (claimed, sent, outcome not
recorded) loses nothing; the delivery is sent again once its lease lapses, with the same event id."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from alliance.webhooks import signing
from alliance.webhooks.worker import Worker, http_client
from tests.conftest import random_phone
from tests.ledger.test_worked_example import enroll
from tests.webhooks import Receiver, deliveries, fast, register, run_worker_until
from tests.webhooks.test_delivery import earn

LEASE_SECONDS = 3


async def test_a_worker_killed_mid_delivery_is_replaced_after_its_lease(settings, db, make_merchant):
    receiver = Receiver(hold=True).start()
    worker = None
    try:
        mart = await make_merchant()
        _, secret = await register(mart, receiver.url, "POINTS_EARNED")
        await earn(mart, await enroll(mart, random_phone()))
        assert settings.database_url is not None
        environment = os.environ | {
            "DATABASE_URL": settings.database_url,
            "ALLIANCE_APP_ROLE": settings.app_role,
            "ALLIANCE_WEBHOOK_ALLOW_INSECURE_URLS": "true",
            "ALLIANCE_WEBHOOK_LEASE_SECONDS": str(LEASE_SECONDS),
            "ALLIANCE_WEBHOOK_TIMEOUT_SECONDS": "2",
            "ALLIANCE_WEBHOOK_POLL_SECONDS": "0.1",
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "alliance.cli", "webhooks", "run"],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # The worker claimed the delivery and the request is in flight: kill it there.
        assert await asyncio.to_thread(receiver.holding.wait, 60), "the worker process never delivered"
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        [in_flight] = await deliveries(mart.api)
        assert in_flight["status"] == "PENDING" and in_flight["attempts"] == 1
        receiver.hold = False
        receiver.release.set()

        await run_worker_until(db, fast(settings), lambda: len(receiver.requests) >= 2)
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        receiver.stop()

    first, second = receiver.requests
    assert second.at - first.at >= LEASE_SECONDS - 0.5, "taken over only once the lease lapsed"
    assert first.event_id == second.event_id, "the receiver can de-duplicate on Alliance-Webhook-Id"
    assert first.body == second.body
    assert [first.headers["Alliance-Webhook-Attempt"], second.headers["Alliance-Webhook-Attempt"]] == [
        "1",
        "2",
    ]
    assert signing.verify(secret, second.headers, second.body)
    [delivery] = await deliveries(mart.api)
    assert delivery["status"] == "DELIVERED" and delivery["attempts"] == 2


async def test_a_delivery_whose_claims_keep_getting_lost_ends_as_a_dead_letter(settings, db, make_merchant):
    mart = await make_merchant()
    await register(mart, "http://127.0.0.1:9/never-called", "POINTS_EARNED")
    await earn(mart, await enroll(mart, random_phone()))
    tuned = fast(settings, webhook_lease_seconds=1, webhook_timeout_seconds=0.5, webhook_max_attempts=2)
    async with http_client(tuned) as client:
        worker = Worker(db, tuned, client)
        for attempt in (1, 2):  # claimed, then the worker "dies": no outcome is ever recorded
            mine = [c for c in await worker.claim(1000) if c.tenant_code == mart.code]
            assert [c.attempt for c in mine] == [attempt]
            await asyncio.sleep(1.1)
        assert [c for c in await worker.claim(1000) if c.tenant_code == mart.code] == []
    [letter] = await deliveries(mart.api)
    assert letter["status"] == "DEAD" and letter["attempts"] == 2
    assert letter["lastError"] == "attempts exhausted without an outcome"
