"""Request ids, Prometheus metrics behind a token, and phone masking in logs."""

import httpx

from alliance.api.app import create_app
from alliance.observability import _mask_phones
from tests.conftest import Api, client_token, new_client


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
