"""Rate limiting by query cost: every response reports its cost, a client whose bucket is empty
is THROTTLED until it refills, and the bucket lives in PostgreSQL (shared by replicas)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.catalog import member_api
from tests.conftest import Api, client_token, new_client, random_phone

VIEWER = "{ viewer { kind } }"  # costs 1 (one object)
STORES = "{ viewer { tenant { stores(first: 20) { edges { node { code } } } } } }"


def cost(response: httpx.Response) -> dict[str, Any]:
    return response.json()["extensions"]["cost"]


async def operator_on(http: httpx.AsyncClient, db) -> Api:  # type: ignore[no-untyped-def]
    client_id, secret = await new_client(db, "operator", None)
    return Api(http, await client_token(http, client_id, secret))


async def test_every_response_reports_its_cost(operator: Api, settings) -> None:
    response = await operator.post(VIEWER)
    assert cost(response) == {
        "requestedQueryCost": 1,
        "actualQueryCost": 1,
        "throttleStatus": {
            "maximumAvailable": settings.rate_limit_operator_maximum,
            "currentlyAvailable": settings.rate_limit_operator_maximum - 1,
            "restoreRate": settings.rate_limit_operator_restore_rate,
        },
    }


async def test_requested_cost_counts_first_and_actual_cost_counts_what_came_back(
    make_merchant, replica
) -> None:
    m = await make_merchant()  # no stores yet: the connection comes back empty
    async with replica(rate_limit_merchant_maximum=100, rate_limit_merchant_restore_rate=1) as http:
        api = Api(http, m.api.token)
        first = await api.post(STORES)
        assert first.json()["data"]["viewer"]["tenant"]["stores"]["edges"] == []
        # viewer 1 + tenant 1 + stores (2 + 20 × node 1) asked for; 1 + 1 + 2 came back.
        assert (cost(first)["requestedQueryCost"], cost(first)["actualQueryCost"]) == (24, 4)
        assert cost(first)["throttleStatus"]["currentlyAvailable"] == 96, "charged the actual cost"
        # The refund of 20 reached the shared bucket: the next query finds 96 (- 1, + the refill).
        second = await api.post(VIEWER)
        assert cost(second)["throttleStatus"]["currentlyAvailable"] in (95, 96)


async def test_an_empty_bucket_is_throttled_until_it_refills(db, replica) -> None:
    async with replica(rate_limit_operator_maximum=3, rate_limit_operator_restore_rate=1) as http:
        api = await operator_on(http, db)
        for _ in range(3):
            assert (await api(VIEWER))["viewer"]["kind"] == "OPERATOR"
        throttled = await api.post(VIEWER)
        assert throttled.status_code == 200, "application/json keeps 200, as Shopify does"
        body = throttled.json()
        assert "data" not in body
        [error] = body["errors"]
        assert error["extensions"]["code"] == "THROTTLED"
        assert error["extensions"]["retryAfterSeconds"] == 1
        assert throttled.headers["retry-after"] == "1"
        assert cost(throttled)["actualQueryCost"] is None
        assert cost(throttled)["throttleStatus"]["currentlyAvailable"] == 0

        # Another client has its own bucket.
        other = await operator_on(http, db)
        assert (await other(VIEWER))["viewer"]["kind"] == "OPERATOR"

        await asyncio.sleep(error["extensions"]["retryAfterSeconds"] + 0.05)
        assert (await api(VIEWER))["viewer"]["kind"] == "OPERATOR", "one point restored after a second"


async def test_throttled_is_429_under_graphql_response_json(db, replica) -> None:
    async with replica(rate_limit_operator_maximum=1, rate_limit_operator_restore_rate=1) as http:
        api = await operator_on(http, db)
        headers = {"Authorization": f"Bearer {api.token}", "Accept": "application/graphql-response+json"}
        assert (await http.post("/graphql", json={"query": VIEWER}, headers=headers)).status_code == 200
        throttled = await http.post("/graphql", json={"query": VIEWER}, headers=headers)
        assert throttled.status_code == 429
        assert throttled.headers["retry-after"] == "1"
        assert throttled.json()["errors"][0]["extensions"]["code"] == "THROTTLED"


async def test_replicas_share_the_bucket(db, replica) -> None:
    limits = {"rate_limit_operator_maximum": 2, "rate_limit_operator_restore_rate": 1}
    async with replica(**limits) as first, replica(**limits) as second:
        api = await operator_on(first, db)
        await api(VIEWER)
        await api(VIEWER)
        on_second = Api(second, api.token)
        errors = await on_second.errors(VIEWER)
        assert errors[0]["extensions"]["code"] == "THROTTLED", "the other replica sees the same bucket"


async def test_a_query_costing_more_than_the_bucket_holds_is_refused_up_front(db, replica) -> None:
    async with replica(rate_limit_operator_maximum=50, rate_limit_operator_restore_rate=1) as http:
        api = await operator_on(http, db)
        response = await api.post("{ tenants(first: 60) { edges { node { code } } } }")
        body = response.json()
        assert "data" not in body
        assert body["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"
        assert cost(response)["requestedQueryCost"] == 62
        # Nothing was taken: the bucket is still full.
        assert cost(response)["throttleStatus"]["currentlyAvailable"] == 50
        assert (await api("{ tenants(first: 40) { edges { cursor } } }"))["tenants"] is not None


async def test_a_mutation_costs_ten_plus_its_payload(make_merchant) -> None:
    m = await make_merchant()
    created = await m.api.post(
        'mutation { createStore(input: {code: "S-1", name: "One"}) { store { code } userErrors { code } } }'
    )
    assert created.json()["data"]["createStore"]["userErrors"] == []
    # 10 + store 1 + userErrors (a list: one element up front, none came back).
    assert (cost(created)["requestedQueryCost"], cost(created)["actualQueryCost"]) == (12, 11)


async def test_a_member_token_draws_from_its_own_member_sized_bucket(
    app, db, make_merchant, settings
) -> None:
    m = await make_merchant()
    data = await m.api(
        "mutation($i: EnrollMemberInput!) { enrollMember(input: $i) { member { memberNumber } } }",
        i={"phone": random_phone(), "externalRef": "RL-1"},
    )
    member = await member_api(app, m.api.http, db, data["enrollMember"]["member"]["memberNumber"])
    status = cost(await member.post(VIEWER))["throttleStatus"]
    assert status["maximumAvailable"] == settings.rate_limit_member_maximum
    assert status["currentlyAvailable"] == settings.rate_limit_member_maximum - 1, "a fresh bucket"
