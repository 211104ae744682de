"""A database that refuses connections is SERVICE_UNAVAILABLE with Retry-After, never a leaked
driver message or a bare internal error; the retry with the same idempotency key then posts once."""

from __future__ import annotations

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
