"""Request ids, Prometheus metrics behind a token (and the jobs' runs), and phone masking in logs."""

import time

import httpx
import pytest
from sqlalchemy import text

from alliance.api.app import create_app
from alliance.db.database import OPERATOR, run_sql
from alliance.jobs import recorded_run
from alliance.observability import _mask_phones
from tests.conftest import Api, client_token, new_client
from tests.test_cli import run_cli_async


async def test_request_id_is_echoed_or_generated(http):
    given = await http.get("/healthz", headers={"X-Request-ID": "pos-7-000123"})
    assert given.headers["x-request-id"] == "pos-7-000123"
    generated = await http.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    hostile = await http.get("/healthz", headers={"X-Request-ID": "x\u0000y"})
    assert hostile.headers["x-request-id"] != "x\u0000y", "only a sane id is echoed into logs and headers"


async def test_metrics_need_the_token_and_count_operations(settings, db, http):
    assert (await http.get("/metrics")).status_code == 404, "off when no metrics token is configured"
    app = create_app(settings.database_url, settings.model_copy(update={"metrics_token": "scrape-me"}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://alliance.test") as client,
    ):
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
        client_id, secret = await new_client(db, "operator", None)
        api = Api(client, await client_token(client, client_id, secret))
        await api("query Who { viewer { kind } }")
        scraped = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert scraped.status_code == 200
    assert 'alliance_graphql_requests_total{operation="Who",outcome="ok"}' in scraped.text
    assert "alliance_graphql_request_seconds_bucket" in scraped.text
    assert "alliance_db_pool_connections_in_use" in scraped.text


def test_phone_numbers_are_masked_in_log_lines():
    event = {"event": "enrolled +8613800138000 at SM-001", "member": "13912345678", "points": 10}
    masked = _mask_phones(None, "info", dict(event))
    assert "13800138000" not in masked["event"] and "+86138****8000" in masked["event"]
    assert masked["member"] == "139****5678"
    assert masked["points"] == 10


async def scrape(settings) -> str:  # type: ignore[no-untyped-def]
    """/metrics of a gateway (any replica: the job gauges come from PostgreSQL)."""
    app = create_app(settings.database_url, settings.model_copy(update={"metrics_token": "scrape-me"}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://alliance.test") as client,
    ):
        response = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert response.status_code == 200
    return response.text


def gauge(text: str, name: str, job: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f'{name}{{job="{job}"}} '):
            return float(line.split()[-1])
    return None


async def test_a_cli_job_run_outlives_its_process_in_metrics(settings) -> None:
    before = time.time()
    result = await run_cli_async(settings, "ledger", "verify")
    assert result.returncode == 0, result.stderr
    scraped = await scrape(settings)  # another process than the job's, which has exited
    duration = gauge(scraped, "alliance_job_last_duration_seconds", "ledger_verify")
    assert duration is not None and 0 < duration < time.time() - before
    assert gauge(scraped, "alliance_job_last_run_failed", "ledger_verify") == 0
    succeeded = gauge(scraped, "alliance_job_last_success_timestamp_seconds", "ledger_verify")
    assert succeeded is not None and before <= succeeded <= time.time()


async def test_a_failed_run_is_recorded_with_its_outcome(settings, db) -> None:
    refused = await run_cli_async(settings, "settle", "--asset", "NO-SUCH-ASSET", "--period", "2001-01")
    assert refused.returncode == 2
    assert gauge(await scrape(settings), "alliance_job_last_run_failed", "settle") == 1
    with pytest.raises(RuntimeError):
        async with recorded_run(db, "birthdays") as run:
            run.counts = {"granted": 3}
            raise RuntimeError("the pod ran out of memory")
    async with db.transaction(OPERATOR) as session:
        row = (
            await run_sql(
                session,
                text("SELECT outcome, counts, finished_at >= started_at FROM job_runs WHERE id = :id"),
                {"id": run.id},
            )
        ).one()
    assert tuple(row) == ("failed", {"granted": 3}, True)
