"""Automatic persisted queries (Apollo's protocol): a known hash runs its query, over GET too."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

import httpx

from alliance.api.app import create_app
from tests.conftest import Api


def fresh_query() -> tuple[str, str]:
    """A query no test has registered yet (an alias makes it unique), and its SHA-256."""
    query = f"{{ q{secrets.token_hex(4)}: viewer {{ kind }} }}"
    return query, hashlib.sha256(query.encode()).hexdigest()


def persisted(sha256: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha256}}


async def post(api: Api, body: dict[str, Any]) -> httpx.Response:
    return await api.http.post("/graphql", json=body, headers={"Authorization": f"Bearer {api.token}"})


async def get(api: Api, sha256: str, **params: str) -> httpx.Response:
    query = {"extensions": json.dumps(persisted(sha256)), **params}
    return await api.http.get("/graphql", params=query, headers={"Authorization": f"Bearer {api.token}"})


def codes(response: httpx.Response) -> list[str]:
    return [e["extensions"]["code"] for e in response.json().get("errors", [])]


async def test_unknown_hash_then_registration_then_the_hash_alone(operator: Api) -> None:
    query, sha256 = fresh_query()
    unknown = await post(operator, {"extensions": persisted(sha256)})
    assert unknown.status_code == 200
    assert codes(unknown) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert unknown.json()["errors"][0]["message"] == "PersistedQueryNotFound", "what Apollo clients look for"

    registered = await post(operator, {"query": query, "extensions": persisted(sha256)})
    assert next(iter(registered.json()["data"].values())) == {"kind": "OPERATOR"}

    by_hash = await post(operator, {"extensions": persisted(sha256)})
    assert by_hash.json()["data"] == registered.json()["data"]
    over_get = await get(operator, sha256)
    assert over_get.status_code == 200
    assert over_get.json()["data"] == registered.json()["data"]


async def test_the_hash_must_match_the_query(operator: Api) -> None:
    query, sha256 = fresh_query()
    other, _ = fresh_query()
    mismatch = await post(operator, {"query": other, "extensions": persisted(sha256)})
    assert codes(mismatch) == ["PERSISTED_QUERY_HASH_MISMATCH"]
    assert "data" not in mismatch.json()
    assert codes(await post(operator, {"extensions": persisted(sha256)})) == ["PERSISTED_QUERY_NOT_FOUND"]
    for bad in ({"version": 2, "sha256Hash": sha256}, {"version": 1, "sha256Hash": "abc"}, "x"):
        refused = await post(operator, {"query": query, "extensions": {"persistedQuery": bad}})
        assert codes(refused) == ["PERSISTED_QUERY_INVALID"]


async def test_an_invalid_document_is_not_registered(operator: Api) -> None:
    query = "{ viewer { noSuchField } }"
    sha256 = hashlib.sha256(query.encode()).hexdigest()
    invalid = await post(operator, {"query": query, "extensions": persisted(sha256)})
    assert codes(invalid) == ["GRAPHQL_VALIDATION_FAILED"]
    assert codes(await post(operator, {"extensions": persisted(sha256)})) == ["PERSISTED_QUERY_NOT_FOUND"]


async def test_a_persisted_mutation_is_refused_over_get(operator: Api) -> None:
    mutation = 'mutation { createTenant(input: {code: "apq-get", name: "X", category: HOTEL}) { userErrors { code } } }'
    sha256 = hashlib.sha256(mutation.encode()).hexdigest()
    refused = await get(operator, sha256, query=mutation)
    assert refused.status_code == 405
    assert refused.headers["allow"] == "POST"
    await post(operator, {"query": mutation, "extensions": persisted(sha256)})  # registered with POST
    assert (await get(operator, sha256)).status_code == 405, "a mutation named by its hash is no safer"


async def test_replicas_share_persisted_queries_and_the_store_is_bounded(settings, operator: Api) -> None:
    queries = [fresh_query() for _ in range(3)]
    bounded = settings.model_copy(update={"persisted_queries_max": 2})
    first, second = create_app(settings.database_url, bounded), create_app(settings.database_url, bounded)
    async with (
        first.router.lifespan_context(first),
        second.router.lifespan_context(second),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url="http://a.test") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://b.test") as b,
    ):
        for query, sha256 in queries:
            assert (
                "data"
                in (
                    await post(Api(a, operator.token), {"query": query, "extensions": persisted(sha256)})
                ).json()
            )
        on_b = Api(b, operator.token)
        # The second replica never saw these queries: it finds the newest two in PostgreSQL...
        for _, sha256 in queries[1:]:
            assert codes(await post(on_b, {"extensions": persisted(sha256)})) == []
        # ...and not the oldest, removed when the third was registered beyond the bound of two.
        assert codes(await post(on_b, {"extensions": persisted(queries[0][1])})) == [
            "PERSISTED_QUERY_NOT_FOUND"
        ]
