"""The query-cost model, on the real schema: what a query may cost up front, and what it did cost."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import parse

from alliance.api.cost import query_cost
from alliance.api.schema import build_schema
from alliance.config import Settings

MAX_PAGE = 100
EARN = """mutation($i: EarnPointsInput!) { earnPoints(input: $i) {
  transaction { id points breakdown { rule points } } balance { available } userErrors { code } } }"""


@pytest.fixture(scope="module")
def schema():  # type: ignore[no-untyped-def]
    return build_schema(Settings())._schema


def requested(schema, query: str, variables: dict[str, Any] | None = None) -> int:  # type: ignore[no-untyped-def]
    return query_cost(schema, parse(query), None, variables, MAX_PAGE)


def actual(schema, query: str, data: dict[str, Any], variables: dict[str, Any] | None = None) -> int:  # type: ignore[no-untyped-def]
    return query_cost(schema, parse(query), None, variables, MAX_PAGE, data, executed=True)


def test_scalars_are_free_objects_cost_one(schema) -> None:  # type: ignore[no-untyped-def]
    assert requested(schema, "{ viewer { kind scopes } }") == 1
    assert requested(schema, "{ viewer { kind tenant { code name } } }") == 2
    assert requested(schema, "{ __typename }") == 1, "every operation costs at least 1"


def test_a_connection_costs_two_plus_first_times_one_edge(schema) -> None:  # type: ignore[no-untyped-def]
    nested = "{ tenants(first: 10) { edges { node { code stores(first: 5) { edges { node { code } } } } } } }"
    assert requested(schema, nested) == 2 + 10 * (1 + 2 + 5 * 1)
    by_variable = (
        "query($n: Int) { tenants(first: $n) { edges { cursor node { code } } pageInfo { hasNextPage } } }"
    )
    assert requested(schema, by_variable, {"n": 3}) == 2 + 3
    assert requested(schema, "{ tenants { edges { node { code } } } }") == 2 + MAX_PAGE, (
        "no first: a full page"
    )
    assert requested(schema, "{ tenants(first: 100000) { edges { cursor } } }") == 2, "cursors are scalars"
    assert requested(schema, "{ tenants(first: 100000) { edges { node { id } } } }") == 2 + MAX_PAGE


def test_the_actual_cost_counts_what_came_back(schema) -> None:  # type: ignore[no-untyped-def]
    query = "{ tenants(first: 10) { edges { node { code } } } }"
    assert (
        actual(schema, query, {"tenants": {"edges": [{"node": {"code": "a"}}, {"node": {"code": "b"}}]}}) == 4
    )
    assert (
        actual(
            schema, "{ viewer { kind tenant { code } } }", {"viewer": {"kind": "OPERATOR", "tenant": None}}
        )
        == 1
    )


def test_a_mutation_costs_ten_plus_its_payload(schema) -> None:  # type: ignore[no-untyped-def]
    # transaction 1 + breakdown (a list: one element up front) 1 + balance 1 + userErrors 1
    assert requested(schema, EARN) == 10 + 4
    data = {
        "earnPoints": {
            "transaction": {
                "id": "x",
                "points": 5,
                "breakdown": [{"rule": "a"}, {"rule": "b"}, {"rule": "c"}],
            },
            "balance": {"available": 5},
            "userErrors": [],
        }
    }
    assert actual(schema, EARN, data) == 10 + 1 + 3 + 1 + 0
    assert actual(schema, EARN, {"earnPoints": None}) == 10, "a refused mutation still costs its 10"


BATCH = """mutation($i: EarnPointsBatchInput!) { earnPointsBatch(input: $i) {
  results { index transaction { id } userErrors { code } } userErrors { code } } }"""


def test_a_batch_is_charged_for_each_result_as_it_came_back(schema) -> None:  # type: ignore[no-untyped-def]
    # Up front the results list counts as one element: result 1 + transaction 1 + userErrors 1.
    assert requested(schema, BATCH) == 10 + 3 + 1
    posted = {"index": 0, "transaction": {"id": "x"}, "userErrors": []}
    refused = {"index": 1, "transaction": None, "userErrors": [{"code": "MEMBER_NOT_FOUND"}]}
    twice_refused = {"index": 2, "transaction": None, "userErrors": [{"code": "A"}, {"code": "B"}]}
    data = {"earnPointsBatch": {"results": [posted, refused, posted, twice_refused], "userErrors": []}}
    # Each result is walked with its own data: 2 (posted), 2 (one error), 2, 3 (two errors).
    assert actual(schema, BATCH, data) == 10 + 2 + 2 + 2 + 3
    many = {"earnPointsBatch": {"results": [posted] * 1000, "userErrors": []}}
    assert actual(schema, BATCH, many) == 10 + 2 * 1000


def test_fragments_and_aliases_count_where_they_are_used(schema) -> None:  # type: ignore[no-untyped-def]
    query = """query($id: ID!) { a: node(id: $id) { ...T } b: node(id: $id) { ... on Member { memberNumber } } }
      fragment T on Tenant { stores(first: 2) { edges { node { code } } } }"""
    assert requested(schema, query, {"id": "x"}) == (1 + 2 + 2) + 1
    assert actual(schema, query, {"a": {"stores": {"edges": []}}, "b": None}, {"id": "x"}) == 1 + 2


def test_introspection_costs_one(schema) -> None:  # type: ignore[no-untyped-def]
    assert requested(schema, "{ __schema { types { name fields { name args { name } } } } }") == 1
