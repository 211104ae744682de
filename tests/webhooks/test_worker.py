"""The worker's own rules: backoff bounds, the send-time address check, health and metrics."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import httpx

from alliance.webhooks.worker import Claim, Worker, http_client, retry_delay, serve_health
from tests.webhooks import Receiver


def test_backoff_is_exponential_jittered_and_capped(settings):
    tuned = settings.model_copy(
        update={"webhook_retry_base_seconds": 10.0, "webhook_retry_max_seconds": 3600.0}
    )
    rng = random.Random(7)
    for attempt, ceiling in ((1, 10), (2, 20), (3, 40), (8, 1280), (9, 2560), (10, 3600), (40, 3600)):
        delays = [retry_delay(attempt, tuned, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), attempt
        assert max(delays) - min(delays) > ceiling / 4, "jittered, so retries of many deliveries spread out"


def claim_to(url: str) -> Claim:
    return Claim(
        delivery_id=1,
        attempt=1,
        event_id=uuid.uuid4(),
        event_type="points.earned",
        tenant_code="m-test",
        data={"points": 1},
        event_created_at=datetime.now(UTC),
        url=url,
        secrets=("whsec_" + "x" * 40,),
    )


async def test_outside_development_a_private_address_is_never_called(db, settings):
    receiver = Receiver().start()
    try:
        strict = settings.model_copy(update={"webhook_allow_insecure_urls": False})
        async with http_client(strict) as client:
            outcome = await Worker(db, strict, client).send(claim_to(receiver.url))
            assert not outcome.delivered and outcome.error and outcome.error.startswith("URL_NOT_ALLOWED")
            assert receiver.requests == []
        async with http_client(settings) as client:
            allowed = await Worker(db, settings, client).send(claim_to(receiver.url))
    finally:
        receiver.stop()
    assert allowed.delivered and allowed.status_code == 200 and len(receiver.requests) == 1


async def test_a_redirect_or_an_unreachable_endpoint_is_a_failed_attempt(db, settings):
    async with http_client(settings) as client:
        refused = await Worker(db, settings, client).send(claim_to("http://127.0.0.1:9/nothing-listens"))
    assert not refused.delivered and refused.status_code is None and "ConnectError" in (refused.error or "")


async def test_health_and_metrics_endpoint(db, settings):
    async with http_client(settings) as client:
        worker = Worker(db, settings, client)
        server = await serve_health(worker, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as probe:
                assert (await probe.get("/healthz")).status_code == 200
                metrics = await probe.get("/metrics")
                assert metrics.status_code == 200 and "alliance_webhook_deliveries_total" in metrics.text
                worker.last_beat -= 3600  # the loop has not turned for an hour
                assert (await probe.get("/healthz")).status_code == 503
                assert (await probe.get("/elsewhere")).status_code == 404
        finally:
            server.close()
            await server.wait_closed()
