"""A database that refuses connections is SERVICE_UNAVAILABLE with Retry-After, never a leaked
driver message or a bare internal error; the retry with the same idempotency key then posts once."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from alliance.api.errors import RETRY_AFTER_SECONDS, SERVICE_UNAVAILABLE
from tests.conftest import Api, random_phone, unique
from tests.ledger.test_worked_example import EARN, enroll


async def set_connection_limit(settings, limit: int) -> None:  # type: ignore[no-untyped-def]
    owner = create_async_engine(settings.database_url)
    try:
        async with owner.begin() as conn:
            await conn.execute(text(f'ALTER ROLE "{settings.app_role}" CONNECTION LIMIT {limit}'))
    finally:
        await owner.dispose()


async def test_a_refused_connection_is_service_unavailable_and_the_retry_posts_once(
    settings, make_merchant, replica
) -> None:
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    earn = {"memberNumber": number, "amount": "12", "orderRef": unique("o"), "idempotencyKey": unique("k")}
    # A replica of its own: its call connections are opened on first use, after the limit is set.
    async with replica() as http:
        api = Api(http, merchant.api.token)
        strict = {"Authorization": f"Bearer {api.token}", "Accept": "application/graphql-response+json"}
        await set_connection_limit(settings, 0)
        try:
            refused = await api.post(EARN, {"i": earn})
            refused_strict = await http.post(
                "/graphql", json={"query": EARN, "variables": {"i": earn}}, headers=strict
            )
        finally:
            await set_connection_limit(settings, -1)
        # The rate limiter's take is the request's first statement: nothing executed.
        assert refused.status_code == 200, "application/json keeps 200"
        assert refused_strict.status_code == 503, "application/graphql-response+json says why"
        for response in (refused, refused_strict):
            body = response.json()
            assert "data" not in body
            [error] = body["errors"]
            assert error["extensions"] == {
                "code": SERVICE_UNAVAILABLE,
                "retryAfterSeconds": RETRY_AFTER_SECONDS,
            }
            assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
            assert "role" not in error["message"] and "connection" not in error["message"], "nothing leaks"

        retried = (await api.post(EARN, {"i": earn})).json()["data"]["earnPoints"]
        assert retried["userErrors"] == [] and retried["transaction"]["points"] == 12
        again = (await api.post(EARN, {"i": earn})).json()["data"]["earnPoints"]
        assert again == retried, "the key's first success is the answer from now on"


async def test_a_refused_connection_inside_a_resolver_is_a_field_error_with_retry_after(
    settings, make_merchant, replica
) -> None:
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    earn = {"memberNumber": number, "amount": "7", "orderRef": unique("o"), "idempotencyKey": unique("k")}
    # Without the limiter, the resolver's posting is the first statement.
    async with replica(rate_limit_enabled=False) as http:
        api = Api(http, merchant.api.token)
        await set_connection_limit(settings, 0)
        try:
            refused = await api.post(EARN, {"i": earn})
        finally:
            await set_connection_limit(settings, -1)
        body = refused.json()
        assert body["data"] is None, "earnPoints is non-null: the field error nulls its parent"
        [error] = body["errors"]
        assert error["path"] == ["earnPoints"]
        assert error["extensions"] == {"code": SERVICE_UNAVAILABLE, "retryAfterSeconds": RETRY_AFTER_SECONDS}
        assert refused.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
        posted = (await api.post(EARN, {"i": earn})).json()["data"]["earnPoints"]
        assert posted["userErrors"] == [] and posted["transaction"]["points"] == 7


async def test_a_refused_connection_looking_up_a_persisted_query_is_service_unavailable(
    settings, make_merchant, replica
) -> None:
    merchant = await make_merchant()
    query = f"query Probe{secrets.token_hex(4)} {{ viewer {{ kind }} }}"  # registered by no one yet
    sha256 = hashlib.sha256(query.encode()).hexdigest()
    hash_only = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha256}}}
    async with replica() as http:  # a fresh process: nothing in its persisted-query cache
        headers = {"Authorization": f"Bearer {merchant.api.token}"}
        await set_connection_limit(settings, 0)
        try:
            refused = await http.post("/graphql", json=hash_only, headers=headers)
        finally:
            await set_connection_limit(settings, -1)
        assert refused.status_code == 200
        [error] = refused.json()["errors"]
        assert error["extensions"]["code"] == SERVICE_UNAVAILABLE
        assert refused.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
        # The APQ protocol goes on as usual once the database answers.
        missing = (await http.post("/graphql", json=hash_only, headers=headers)).json()
        assert missing["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
