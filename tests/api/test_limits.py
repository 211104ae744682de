"""Query-cost limits and error hygiene at /graphql."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from alliance.api.app import create_app
from tests.conftest import Api, client_token, new_client

# A valid query of operation depth 5: within the default limit, beyond a limit of 4.
DEEP_VALID = "{ viewer { tenant { stores { edges { node { code } } } } } }"


def nested(depth: int) -> str:
    """A query of operation depth ``depth`` (the top-level field is depth 0). The fields below
    ``viewer`` do not exist; they only need to be nested, whatever the schema looks like."""
    inner = "leaf"
    for i in range(depth - 1, 0, -1):
        inner = f"f{i} {{ {inner} }}"
    return f"{{ viewer {{ {inner} }} }}"


def refused(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code in (200, 400), response.text
    body = response.json()
    assert body.get("data") is None, body
    assert body["errors"], body
    for error in body["errors"]:
        assert error["extensions"]["code"], error
    return body["errors"]


def leaks_nothing(text: str) -> None:
    for marker in ("Traceback", "SELECT", "sqlalchemy", "asyncpg", 'File "', ".py"):
        assert marker not in text, f"{marker!r} leaked: {text}"


@pytest.fixture(scope="module")
async def strict_api(settings, operator_token_for_module) -> AsyncIterator[Api]:  # type: ignore[no-untyped-def]
    """The same service with tight limits, so that otherwise valid queries exceed them."""
    assert settings.database_url is not None
    strict = settings.model_copy(update={"graphql_max_depth": 4, "graphql_max_tokens": 40})
    application = create_app(settings.database_url, strict)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://strict.test"
        ) as http,
    ):
        yield Api(http, operator_token_for_module)


@pytest.fixture(scope="module")
async def operator_token_for_module(http, db) -> str:  # type: ignore[no-untyped-def]
    client_id, secret = await new_client(db, "operator", None)
    return await client_token(http, client_id, secret)


async def test_depth_beyond_the_limit_is_refused(operator, settings) -> None:
    errors = refused(await operator.post(nested(settings.graphql_max_depth + 1)))
    assert any("exceeds maximum operation depth" in e["message"] for e in errors), errors
    # One level less is only refused for its unknown fields.
    errors = refused(await operator.post(nested(settings.graphql_max_depth)))
    assert not any("depth" in e["message"] for e in errors), errors


async def test_within_the_limits_the_deepest_query_runs(operator) -> None:
    data = await operator(DEEP_VALID)
    assert data == {"viewer": {"tenant": None}}


async def test_valid_query_deeper_than_the_limit_is_refused(strict_api) -> None:
    errors = refused(await strict_api.post(DEEP_VALID))
    assert [e["extensions"]["code"] for e in errors] == ["GRAPHQL_VALIDATION_FAILED"]
    assert "exceeds maximum operation depth of 4" in errors[0]["message"]
    # A query within the tightened limit still runs there.
    assert (await strict_api("{ viewer { kind } }")) == {"viewer": {"kind": "OPERATOR"}}


async def test_too_many_tokens_is_refused(operator, settings) -> None:
    query = "{ viewer { " + "kind " * settings.graphql_max_tokens + "} }"
    errors = refused(await operator.post(query))
    assert any("tokens" in e["message"] for e in errors), errors


async def test_just_under_the_token_limit_runs(operator, settings) -> None:
    # 15 tokens per repetition; identical repeated fields merge into one.
    field = "tenants(first: 1, after: null) { edges { cursor } } "
    query = "{ " + field * ((settings.graphql_max_tokens - 10) // 15) + "}"
    assert "tenants" in await operator(query)


async def test_token_limit_applies_to_otherwise_valid_queries(strict_api) -> None:
    query = "{ viewer { " + "kind " * 50 + "} }"
    errors = refused(await strict_api.post(query))
    assert "more than 40 tokens" in errors[0]["message"]


async def test_too_many_aliases_is_refused(operator, settings) -> None:
    count = settings.graphql_max_aliases + 1
    query = "{ " + " ".join(f"a{i}: viewer {{ kind }}" for i in range(count)) + " }"
    errors = refused(await operator.post(query))
    assert any("aliases" in e["message"] for e in errors), errors


async def test_syntax_error_has_a_code(operator) -> None:
    response = await operator.post("{ viewer { kind ")
    errors = refused(response)
    assert "Syntax Error" in errors[0]["message"]
    leaks_nothing(response.text)


async def test_unknown_field_has_a_code(operator) -> None:
    response = await operator.post("{ viewer { password } }")
    errors = refused(response)
    assert errors[0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


async def test_internal_errors_leak_no_internals(operator) -> None:
    # An id beyond PostgreSQL's bigint range fails inside the database driver: the client
    # must see a generic message and a code, never the exception, the SQL or a traceback.
    for query, variables in [
        ("query($id: ID!) { node(id: $id) { id } }", {"id": b64("Tenant:99999999999999999999")}),
        (
            "query($c: String) { tenants(after: $c) { edges { cursor } } }",
            {"c": b64("k:99999999999999999999")},
        ),
    ]:
        response = await operator.post(query, variables)
        assert response.status_code == 200
        body = response.json()
        assert body["errors"], body
        for error in body["errors"]:
            assert error["extensions"]["code"]
        leaks_nothing(response.text)


async def test_out_of_range_ids_are_client_errors(operator) -> None:
    for query, variables in [
        ("query($id: ID!) { node(id: $id) { id } }", {"id": b64("Tenant:99999999999999999999")}),
        (
            "query($c: String) { tenants(after: $c) { edges { cursor } } }",
            {"c": b64("k:99999999999999999999")},
        ),
    ]:
        body = (await operator.post(query, variables)).json()
        codes = [e["extensions"]["code"] for e in body.get("errors", [])]
        assert "INTERNAL_ERROR" not in codes, body


async def test_refused_operations_leak_no_internals(make_merchant, operator) -> None:
    m = await make_merchant()
    responses = [
        await m.api.post(
            'mutation { createTenant(input: {code: "x-y", name: "n", category: OTHER}) { tenant { code } } }'
        ),
        await operator.post("{ tenants(first: 100000) { edges { cursor } } }"),
        await operator.post("query($id: ID!) { node(id: $id) { id } }", {"id": "%%%"}),
    ]
    for response in responses:
        body = response.json()
        assert body["errors"][0]["extensions"]["code"] in {"FORBIDDEN", "INVALID_PAGE_SIZE", "INVALID_ID"}
        leaks_nothing(response.text)
