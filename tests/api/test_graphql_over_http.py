"""GraphQL over HTTP: what a standard client expects of the transport."""

from tests.conftest import Api


async def test_queries_work_over_get_but_mutations_do_not(operator: Api) -> None:
    headers = {"Authorization": f"Bearer {operator.token}", "Accept": "application/json"}
    query = await operator.http.get("/graphql", params={"query": "{ viewer { kind } }"}, headers=headers)
    assert query.status_code == 200 and query.json()["data"]["viewer"]["kind"] == "OPERATOR"
    mutation = (
        'mutation { createTenant(input: {code: "x1", name: "X", category: HOTEL}) { userErrors { code } } }'
    )
    refused = await operator.http.get("/graphql", params={"query": mutation}, headers=headers)
    assert refused.status_code == 405


async def test_graphql_response_json_is_negotiated(operator: Api) -> None:
    response = await operator.http.post(
        "/graphql",
        json={"query": "{ viewer { kind } }"},
        headers={"Authorization": f"Bearer {operator.token}", "Accept": "application/graphql-response+json"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/graphql-response+json")


async def test_a_malformed_request_is_a_client_error(operator: Api) -> None:
    response = await operator.http.post(
        "/graphql",
        content=b"{not json",
        headers={"Authorization": f"Bearer {operator.token}", "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500


async def test_a_request_that_cannot_execute_is_400_under_graphql_response_json(operator: Api) -> None:
    headers = {"Authorization": f"Bearer {operator.token}", "Accept": "application/graphql-response+json"}
    invalid = await operator.http.post("/graphql", json={"query": "{ noSuchField }"}, headers=headers)
    assert invalid.status_code == 400
    assert invalid.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    plain = await operator.http.post(
        "/graphql", json={"query": "{ noSuchField }"}, headers={"Authorization": f"Bearer {operator.token}"}
    )
    assert plain.status_code == 200, "application/json keeps the legacy 200"
