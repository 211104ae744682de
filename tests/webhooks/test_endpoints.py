"""Managing webhook endpoints: registration, validation, limits, disabling, secret rotation, and who
sees what (row-level security; secrets are never readable by the application role)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from alliance.db.database import OPERATOR, AccessContext, run_sql
from alliance.errors import DomainError
from alliance.webhooks import signing
from alliance.webhooks.service import MAX_ACTIVE_ENDPOINTS, check_url
from tests.catalog import member_api
from tests.conftest import random_phone
from tests.ledger.test_worked_example import enroll
from tests.webhooks import (
    ENDPOINTS,
    REGISTER,
    REPLAY,
    ROTATE,
    UPDATE,
    Receiver,
    deliveries,
    drain,
    fast,
    register,
    run_worker_until,
)
from tests.webhooks.test_delivery import earn


def codes(payload: dict) -> list[tuple[str, str | None]]:
    return [(e["code"], e["field"]) for e in payload["userErrors"]]


async def test_register_shows_the_secret_once_and_lists_the_endpoint(make_merchant):
    mart = await make_merchant()
    data = await mart.api(
        REGISTER,
        i={
            "url": " http://127.0.0.1:8080/hooks ",
            "eventTypes": ["POINTS_REDEEMED", "POINTS_EARNED", "POINTS_EARNED"],
            "description": "  POS back office ",
        },
    )
    payload = data["registerWebhookEndpoint"]
    assert payload["userErrors"] == []
    assert payload["endpoint"] | {"id": None} == {
        "id": None,
        "url": "http://127.0.0.1:8080/hooks",
        "eventTypes": ["POINTS_EARNED", "POINTS_REDEEMED"],
        "status": "ACTIVE",
        "description": "POS back office",
    }
    listed = await mart.api(ENDPOINTS, first=10)
    assert [e["node"]["id"] for e in listed["webhookEndpoints"]["edges"]] == [payload["endpoint"]["id"]]
    # The type has no secret to ask for.
    errors = await mart.api.errors("{ webhookEndpoints(first: 1) { edges { node { secret } } } }")
    assert errors[0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"url": "ftp://127.0.0.1/x"}, "INVALID_URL", "url"),
        ({"url": "not a url"}, "INVALID_URL", "url"),
        ({"url": "http://user:pw@127.0.0.1/x"}, "INVALID_URL", "url"),
        ({"url": "http://127.0.0.1:99999/x"}, "INVALID_URL", "url"),
        ({"url": "https://example.com/" + "x" * 2000}, "TOO_LONG", "url"),
        ({"eventTypes": []}, "REQUIRED", "eventTypes"),
        ({"description": "d" * 201}, "TOO_LONG", "description"),
    ],
)
async def test_bad_registrations_are_refused(make_merchant, fields, code, field):
    mart = await make_merchant()
    data = await mart.api(
        REGISTER, i={"url": "http://127.0.0.1:8080/h", "eventTypes": ["POINTS_EARNED"]} | fields
    )
    assert codes(data["registerWebhookEndpoint"]) == [(code, field)]
    assert data["registerWebhookEndpoint"]["secret"] is None
    assert (await mart.api(ENDPOINTS))["webhookEndpoints"]["edges"] == []


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://hooks.example.com/alliance", None),
        ("https://203.0.113.7:8443/in", "PRIVATE_URL"),  # documentation range: not global
        ("https://8.8.8.8/in", None),
        ("http://hooks.example.com/alliance", "INSECURE_URL"),
        ("https://localhost/x", "PRIVATE_URL"),
        ("https://127.0.0.1/x", "PRIVATE_URL"),
        ("https://10.1.2.3/x", "PRIVATE_URL"),
        ("https://169.254.169.254/latest/meta-data", "PRIVATE_URL"),
        ("https://[::1]/x", "PRIVATE_URL"),
        ("https://db.internal/x", "PRIVATE_URL"),
        ("https://intranet/x", "PRIVATE_URL"),
    ],
)
def test_production_urls_must_be_https_on_a_public_host(url, code):
    if code is None:
        assert check_url(url, allow_insecure=False) == url
    else:
        with pytest.raises(DomainError) as refused:
            check_url(url, allow_insecure=False)
        assert (refused.value.code, refused.value.field) == (code, "url")


async def test_who_may_manage_endpoints(app, http, db, make_merchant, operator):
    mart = await make_merchant()
    other = await make_merchant()
    endpoint_id, _ = await register(mart, "http://127.0.0.1:9/a", "POINTS_EARNED")
    await register(other, "http://127.0.0.1:9/b", "POINTS_EARNED")

    assert endpoint_id not in {
        e["node"]["id"] for e in (await other.api(ENDPOINTS))["webhookEndpoints"]["edges"]
    }
    for attempt in (
        await other.api(UPDATE, i={"endpointId": endpoint_id, "enabled": False}),
        await other.api(ROTATE, i={"endpointId": endpoint_id}),
    ):
        [payload] = attempt.values()
        assert codes(payload) == [("ENDPOINT_NOT_FOUND", "endpointId")]
    node = await other.api("query($id: ID!) { node(id: $id) { id } }", id=endpoint_id)
    assert node["node"] is None

    seen = await operator(ENDPOINTS, first=100)
    assert endpoint_id in {e["node"]["id"] for e in seen["webhookEndpoints"]["edges"]}
    refused = await operator.errors(
        REGISTER, i={"url": "http://127.0.0.1:9/o", "eventTypes": ["POINTS_EARNED"]}
    )
    assert refused[0]["extensions"]["code"] == "FORBIDDEN"

    number = await enroll(mart, random_phone())
    member = await member_api(app, http, db, number)
    assert (await member.errors(ENDPOINTS))[0]["extensions"]["code"] == "FORBIDDEN"


async def test_the_application_role_cannot_read_secrets_nor_other_tenants_rows(db, make_merchant):
    mart = await make_merchant()
    other = await make_merchant()
    await register(mart, "http://127.0.0.1:9/a", "POINTS_EARNED")
    await earn(mart, await enroll(mart, random_phone()))
    merchant = AccessContext("merchant", tenant_id=other.tenant_id)
    async with db.transaction(merchant) as session:
        for table in ("webhook_endpoints", "webhook_events", "webhook_deliveries"):
            found = await run_sql(
                session, text(f"SELECT count(*) FROM {table} WHERE tenant_id = :t"), {"t": mart.tenant_id}
            )
            assert found.scalar_one() == 0, table
    for context in (OPERATOR, AccessContext("merchant", tenant_id=mart.tenant_id)):
        with pytest.raises(DBAPIError, match="permission denied"):
            async with db.transaction(context) as session:
                await run_sql(session, text("SELECT secret FROM webhook_endpoints"))
    with pytest.raises(DBAPIError, match="permission denied"):
        async with db.transaction(OPERATOR) as session:
            await run_sql(session, text("SELECT count(*) FROM webhook_lot_notices"))
    # Only the operator context may claim deliveries (and so see secrets).
    with pytest.raises(DBAPIError, match="FORBIDDEN"):
        async with db.transaction(AccessContext("merchant", tenant_id=mart.tenant_id)) as session:
            await run_sql(session, text("SELECT * FROM webhook_claim(10, 60, 5)"))


async def test_at_most_ten_active_endpoints(make_merchant):
    mart = await make_merchant()
    ids = [
        (await register(mart, f"http://127.0.0.1:9/{n}", "POINTS_EARNED"))[0]
        for n in range(MAX_ACTIVE_ENDPOINTS)
    ]
    data = await mart.api(REGISTER, i={"url": "http://127.0.0.1:9/x", "eventTypes": ["POINTS_EARNED"]})
    assert codes(data["registerWebhookEndpoint"]) == [("TOO_MANY_ENDPOINTS", None)]
    disabled = await mart.api(UPDATE, i={"endpointId": ids[0], "enabled": False})
    assert disabled["updateWebhookEndpoint"]["endpoint"]["status"] == "DISABLED"
    await register(mart, "http://127.0.0.1:9/x", "POINTS_EARNED")
    again = await mart.api(UPDATE, i={"endpointId": ids[0], "enabled": True})
    assert codes(again["updateWebhookEndpoint"]) == [("TOO_MANY_ENDPOINTS", None)]


async def test_update_changes_only_what_is_given(make_merchant):
    mart = await make_merchant()
    endpoint_id, _ = await register(mart, "http://127.0.0.1:9/a", "POINTS_EARNED")
    changed = await mart.api(
        UPDATE, i={"endpointId": endpoint_id, "eventTypes": ["HOLD_EXPIRED"], "description": "holds"}
    )
    assert changed["updateWebhookEndpoint"]["endpoint"] | {"id": None} == {
        "id": None,
        "url": "http://127.0.0.1:9/a",
        "eventTypes": ["HOLD_EXPIRED"],
        "status": "ACTIVE",
        "description": "holds",
    }
    cleared = await mart.api(
        UPDATE, i={"endpointId": endpoint_id, "description": None, "url": "http://127.0.0.1:9/b"}
    )
    assert cleared["updateWebhookEndpoint"]["endpoint"]["description"] is None
    assert cleared["updateWebhookEndpoint"]["endpoint"]["url"] == "http://127.0.0.1:9/b"
    for bad, expected in (
        ({"eventTypes": None}, ("REQUIRED", "eventTypes")),
        ({"eventTypes": []}, ("REQUIRED", "eventTypes")),
        ({"url": "gopher://x"}, ("INVALID_URL", "url")),
        ({"endpointId": "bm9wZTox"}, ("INVALID_ID", "endpointId")),
    ):
        refused = await mart.api(UPDATE, i={"endpointId": endpoint_id} | bad)
        assert codes(refused["updateWebhookEndpoint"]) == [expected], bad


async def test_disabling_parks_pending_deliveries_as_dead_letters_until_replayed(db, settings, make_merchant):
    receiver = Receiver().start()
    try:
        mart = await make_merchant()
        endpoint_id, secret = await register(mart, receiver.url, "POINTS_EARNED")
        number = await enroll(mart, random_phone())
        await earn(mart, number)
        await mart.api(UPDATE, i={"endpointId": endpoint_id, "enabled": False})
        [letter] = await deliveries(mart.api)
        assert letter["status"] == "DEAD" and letter["lastError"] == "endpoint disabled"
        await earn(mart, number)  # no event for a disabled endpoint
        assert len(await deliveries(mart.api)) == 1

        refused = await mart.api(REPLAY, i={"deliveryId": letter["id"]})
        assert codes(refused["replayWebhookDelivery"]) == [("ENDPOINT_DISABLED", "deliveryId")]
        await mart.api(UPDATE, i={"endpointId": endpoint_id, "enabled": True})
        replayed = await mart.api(REPLAY, i={"deliveryId": letter["id"]})
        assert replayed["replayWebhookDelivery"]["delivery"]["status"] == "PENDING"
        await run_worker_until(db, fast(settings), lambda: len(receiver.requests) >= 1)
    finally:
        receiver.stop()
    assert receiver.requests[0].event_id == letter["eventId"]
    assert signing.verify(secret, receiver.requests[0].headers, receiver.requests[0].body)


async def test_a_rotated_secret_signs_alongside_the_old_one_for_the_grace_period(db, settings, make_merchant):
    receiver = Receiver().start()
    try:
        mart = await make_merchant()
        endpoint_id, old = await register(mart, receiver.url, "POINTS_EARNED")
        number = await enroll(mart, random_phone())
        rotated = (await mart.api(ROTATE, i={"endpointId": endpoint_id, "previousSecretValidHours": 2}))[
            "rotateWebhookSecret"
        ]
        new = rotated["secret"]
        assert rotated["userErrors"] == [] and new != old and rotated["endpoint"]["previousSecretExpiresAt"]
        await earn(mart, number)
        await run_worker_until(db, fast(settings), lambda: len(receiver.requests) >= 1)

        cut = (await mart.api(ROTATE, i={"endpointId": endpoint_id, "previousSecretValidHours": 0}))[
            "rotateWebhookSecret"
        ]
        assert cut["endpoint"]["previousSecretExpiresAt"] is None
        newest = cut["secret"]
        await earn(mart, number)
        await run_worker_until(db, fast(settings), lambda: len(receiver.requests) >= 2)
        await drain(db, fast(settings))
        bad = await mart.api(ROTATE, i={"endpointId": endpoint_id, "previousSecretValidHours": 169})
        assert codes(bad["rotateWebhookSecret"]) == [("INVALID_HOURS", "previousSecretValidHours")]
    finally:
        receiver.stop()
    during, after = receiver.requests
    assert len(during.headers["Alliance-Webhook-Signature"].split()) == 2
    assert signing.verify(new, during.headers, during.body) and signing.verify(
        old, during.headers, during.body
    )
    assert len(after.headers["Alliance-Webhook-Signature"].split()) == 1
    assert signing.verify(newest, after.headers, after.body)
    assert not signing.verify(new, after.headers, after.body)
