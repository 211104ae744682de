"""Tenants and stores through GraphQL: creation, refusals, visibility and pagination."""

from __future__ import annotations

from sqlalchemy import text

from alliance.db.database import OPERATOR, run_sql
from tests.conftest import random_phone, unique
from tests.ledger.test_worked_example import EARN, enroll

CREATE_TENANT = """
mutation($i: CreateTenantInput!) {
  createTenant(input: $i) {
    tenant { id code name category status }
    userErrors { field code message }
  }
}"""
CREATE_STORE = """
mutation($i: CreateStoreInput!) {
  createStore(input: $i) {
    store { id code name city }
    userErrors { field code message }
  }
}"""
TENANT = (
    "query($c: String!) { tenant(code: $c) { id code name stores { edges { node { code name city } } } } }"
)
TENANTS = """
query($first: Int, $after: String) {
  tenants(first: $first, after: $after) {
    edges { cursor node { code } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""
NODE = "query($id: ID!) { node(id: $id) { id __typename ... on Tenant { code } ... on Store { code } } }"


async def count(db, sql: str, **params) -> int:  # type: ignore[no-untyped-def]
    async with db.transaction(OPERATOR) as session:
        return (await run_sql(session, text(sql), params)).scalar_one()


async def store_codes(operator, tenant_code: str) -> list[str]:  # type: ignore[no-untyped-def]
    data = await operator(TENANT, c=tenant_code)
    return [edge["node"]["code"] for edge in data["tenant"]["stores"]["edges"]]


# --- createTenant ---------------------------------------------------------------------------


async def test_create_tenant(operator) -> None:
    code = unique("hotel")
    data = await operator(CREATE_TENANT, i={"code": code, "name": "  Grand Hotel ", "category": "HOTEL"})
    payload = data["createTenant"]
    assert payload["userErrors"] == []
    tenant = payload["tenant"]
    assert tenant | {"id": None} == {
        "id": None,
        "code": code,
        "name": "Grand Hotel",
        "category": "HOTEL",
        "status": "ACTIVE",
    }
    assert tenant["id"]
    # It is really there.
    assert (await operator(TENANT, c=code))["tenant"]["name"] == "Grand Hotel"


async def test_duplicate_tenant_code(operator, db) -> None:
    code = unique("dup")
    await operator(CREATE_TENANT, i={"code": code, "name": "First", "category": "RETAIL"})
    data = await operator(CREATE_TENANT, i={"code": code, "name": "Second", "category": "HOTEL"})
    assert data["createTenant"]["tenant"] is None
    assert [(e["field"], e["code"]) for e in data["createTenant"]["userErrors"]] == [
        ("code", "TENANT_CODE_TAKEN")
    ]
    assert await count(db, "SELECT count(*) FROM tenants WHERE code = :c", c=code) == 1
    assert (await operator(TENANT, c=code))["tenant"]["name"] == "First"


async def test_invalid_tenant_code(operator, db) -> None:
    for bad in ("Upper-Case", "x", "-leading-dash", "has space", "ünïcode"):
        data = await operator(CREATE_TENANT, i={"code": bad, "name": "Bad", "category": "OTHER"})
        assert data["createTenant"]["tenant"] is None, bad
        assert [e["code"] for e in data["createTenant"]["userErrors"]] == ["INVALID_TENANT_CODE"], bad
    assert await count(db, "SELECT count(*) FROM tenants WHERE name = 'Bad'") == 0


async def test_blank_tenant_name(operator) -> None:
    data = await operator(CREATE_TENANT, i={"code": unique("blank"), "name": "   ", "category": "OTHER"})
    assert [e["code"] for e in data["createTenant"]["userErrors"]] == ["INVALID_NAME"]


async def test_merchant_cannot_create_a_tenant(make_merchant, db) -> None:
    m = await make_merchant()
    code = unique("rogue")
    errors = await m.api.errors(CREATE_TENANT, i={"code": code, "name": "Rogue", "category": "OTHER"})
    assert [e["extensions"]["code"] for e in errors] == ["FORBIDDEN"]
    assert await count(db, "SELECT count(*) FROM tenants WHERE code = :c", c=code) == 0


# --- tenants / tenant -----------------------------------------------------------------------


async def all_codes(operator, first: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Every tenant code, walking pages of ``first``; checks each page's pageInfo on the way."""
    codes: list[str] = []
    after = None
    while True:
        page = (await operator(TENANTS, first=first, after=after))["tenants"]
        edges = page["edges"]
        info = page["pageInfo"]
        assert info["hasPreviousPage"] is (after is not None)
        assert 1 <= len(edges) <= first
        assert info["startCursor"] == edges[0]["cursor"]
        assert info["endCursor"] == edges[-1]["cursor"]
        codes += [edge["node"]["code"] for edge in edges]
        if not info["hasNextPage"]:
            return codes
        assert len(edges) == first
        after = info["endCursor"]


async def test_operator_paginates_tenants(operator, make_merchant, settings) -> None:
    for _ in range(3):
        await make_merchant()

    first = (await operator(TENANTS, first=2))["tenants"]
    assert len(first["edges"]) == 2
    assert first["pageInfo"]["hasNextPage"] is True
    assert first["pageInfo"]["hasPreviousPage"] is False
    second = (await operator(TENANTS, first=2, after=first["pageInfo"]["endCursor"]))["tenants"]
    first_codes = [e["node"]["code"] for e in first["edges"]]
    second_codes = [e["node"]["code"] for e in second["edges"]]
    assert second_codes
    assert not set(first_codes) & set(second_codes)
    assert second["pageInfo"]["hasPreviousPage"] is True

    # Small pages, walked to the end, give exactly the same sequence as the largest pages:
    # nothing skipped, nothing repeated, and hasNextPage is false only on the last page.
    small = await all_codes(operator, 2)
    large = await all_codes(operator, settings.max_page_size)
    assert small == large
    assert len(set(small)) == len(small)
    assert small[:4] == first_codes + second_codes


async def test_page_after_the_last_tenant_is_empty(operator) -> None:
    everything = (await operator(TENANTS, first=100))["tenants"]
    while everything["pageInfo"]["hasNextPage"]:
        everything = (await operator(TENANTS, first=100, after=everything["pageInfo"]["endCursor"]))[
            "tenants"
        ]
    last = everything["pageInfo"]["endCursor"]
    beyond = (await operator(TENANTS, first=5, after=last))["tenants"]
    assert beyond["edges"] == []
    assert beyond["pageInfo"]["hasNextPage"] is False
    assert beyond["pageInfo"]["endCursor"] is None


async def test_page_size_above_the_maximum_is_refused(operator, settings) -> None:
    for first in (settings.max_page_size + 1, 0, -1):
        response = await operator.post(TENANTS, {"first": first})
        body = response.json()
        assert body["data"] is None, first
        assert body["errors"][0]["extensions"]["code"] == "INVALID_PAGE_SIZE"
    # The maximum itself is fine.
    await operator(TENANTS, first=settings.max_page_size)


async def test_malformed_cursor_is_refused(operator) -> None:
    errors = await operator.errors(TENANTS, first=2, after="not-a-cursor")
    assert errors[0]["extensions"]["code"] in {"INVALID_CURSOR", "INVALID_ID"}


async def test_merchant_sees_only_itself(make_merchant) -> None:
    a, b = await make_merchant(), await make_merchant()
    data = await a.api(TENANTS)
    assert [edge["node"]["code"] for edge in data["tenants"]["edges"]] == [a.code]
    assert data["tenants"]["pageInfo"]["hasNextPage"] is False
    assert (await a.api(TENANT, c=a.code))["tenant"]["code"] == a.code
    assert (await a.api(TENANT, c=b.code))["tenant"] is None


async def test_unknown_tenant_is_null(operator) -> None:
    assert (await operator(TENANT, c=unique("nope")))["tenant"] is None


# --- createStore ----------------------------------------------------------------------------


async def test_operator_creates_a_store(operator, make_merchant) -> None:
    m = await make_merchant()
    data = await operator(
        CREATE_STORE, i={"tenantCode": m.code, "code": "SH-001", "name": "Jing'an", "city": "Shanghai"}
    )
    assert data["createStore"]["userErrors"] == []
    assert data["createStore"]["store"] | {"id": None} == {
        "id": None,
        "code": "SH-001",
        "name": "Jing'an",
        "city": "Shanghai",
    }
    assert await store_codes(operator, m.code) == ["SH-001"]


async def test_operator_must_name_the_tenant(operator) -> None:
    data = await operator(CREATE_STORE, i={"code": "S1", "name": "Nowhere"})
    assert data["createStore"]["store"] is None
    assert [e["code"] for e in data["createStore"]["userErrors"]] == ["TENANT_REQUIRED"]


async def test_merchant_creates_a_store_for_itself(operator, make_merchant) -> None:
    m = await make_merchant()
    data = await m.api(CREATE_STORE, i={"code": "BJ-1", "name": "Chaoyang", "city": "Beijing"})
    assert data["createStore"]["userErrors"] == []
    assert data["createStore"]["store"]["code"] == "BJ-1"
    # Naming its own tenant explicitly works too.
    data = await m.api(CREATE_STORE, i={"tenantCode": m.code, "code": "BJ-2", "name": "Haidian"})
    assert data["createStore"]["userErrors"] == []
    assert await store_codes(operator, m.code) == ["BJ-1", "BJ-2"]
    # The merchant sees its own stores.
    mine = await m.api(TENANT, c=m.code)
    assert [e["node"]["code"] for e in mine["tenant"]["stores"]["edges"]] == ["BJ-1", "BJ-2"]


async def test_merchant_cannot_create_a_store_for_another_tenant(operator, make_merchant, db) -> None:
    a, b = await make_merchant(), await make_merchant()
    code = unique("X")
    data = await a.api(CREATE_STORE, i={"tenantCode": b.code, "code": code, "name": "Intruder"})
    assert data["createStore"]["store"] is None
    assert [(e["field"], e["code"]) for e in data["createStore"]["userErrors"]] == [
        ("tenantCode", "TENANT_NOT_FOUND")
    ]
    assert await store_codes(operator, b.code) == []
    assert await count(db, "SELECT count(*) FROM stores WHERE code = :c", c=code) == 0


async def test_duplicate_store_code(operator, make_merchant) -> None:
    m = await make_merchant()
    await m.api(CREATE_STORE, i={"code": "S1", "name": "First"})
    data = await m.api(CREATE_STORE, i={"code": "S1", "name": "Second"})
    assert data["createStore"]["store"] is None
    assert [(e["field"], e["code"]) for e in data["createStore"]["userErrors"]] == [
        ("code", "STORE_CODE_TAKEN")
    ]
    stores = (await operator(TENANT, c=m.code))["tenant"]["stores"]["edges"]
    assert [(e["node"]["code"], e["node"]["name"]) for e in stores] == [("S1", "First")]


async def test_same_store_code_at_two_tenants(make_merchant) -> None:
    a, b = await make_merchant(), await make_merchant()
    for m in (a, b):
        data = await m.api(CREATE_STORE, i={"code": "MAIN", "name": "Main"})
        assert data["createStore"]["userErrors"] == []


async def test_store_for_unknown_tenant(operator) -> None:
    data = await operator(CREATE_STORE, i={"tenantCode": unique("ghost"), "code": "S1", "name": "Ghost"})
    assert data["createStore"]["store"] is None
    assert [e["code"] for e in data["createStore"]["userErrors"]] == ["TENANT_NOT_FOUND"]


async def test_invalid_store_code(make_merchant) -> None:
    m = await make_merchant()
    data = await m.api(CREATE_STORE, i={"code": "has space", "name": "Bad"})
    assert [e["code"] for e in data["createStore"]["userErrors"]] == ["INVALID_STORE_CODE"]


async def test_store_code_with_trailing_newline_is_invalid_not_taken(make_merchant) -> None:
    m = await make_merchant()
    data = await m.api(CREATE_STORE, i={"code": "S1\n", "name": "Bad"})
    assert [e["code"] for e in data["createStore"]["userErrors"]] == ["INVALID_STORE_CODE"]


# --- node(id:) ------------------------------------------------------------------------------


async def test_node_refetches_a_tenant(operator) -> None:
    code = unique("node")
    created = await operator(CREATE_TENANT, i={"code": code, "name": "Node", "category": "CLOTHING"})
    tenant_id = created["createTenant"]["tenant"]["id"]
    data = await operator(NODE, id=tenant_id)
    assert data["node"] == {"id": tenant_id, "__typename": "Tenant", "code": code}


async def test_node_refetches_a_store(make_merchant) -> None:
    m = await make_merchant()
    store_id = (await m.api(CREATE_STORE, i={"code": "N1", "name": "N"}))["createStore"]["store"]["id"]
    assert (await m.api(NODE, id=store_id))["node"] == {"id": store_id, "__typename": "Store", "code": "N1"}


async def test_merchant_cannot_refetch_another_tenants_nodes(make_merchant) -> None:
    a, b = await make_merchant(), await make_merchant()
    b_tenant = (await b.api(TENANT, c=b.code))["tenant"]["id"]
    b_store = (await b.api(CREATE_STORE, i={"code": "S1", "name": "B's"}))["createStore"]["store"]["id"]
    assert (await b.api(NODE, id=b_tenant))["node"]["code"] == b.code
    assert (await a.api(NODE, id=b_tenant))["node"] is None
    assert (await a.api(NODE, id=b_store))["node"] is None


async def test_malformed_node_id(operator) -> None:
    errors = await operator.errors(NODE, id="%%%")
    assert errors[0]["extensions"]["code"] == "INVALID_ID"


async def test_node_refetches_ledger_objects_within_the_callers_visibility(make_merchant, operator):
    merchant, other = await make_merchant(), await make_merchant()
    number = await enroll(merchant, random_phone())
    earned = await merchant.api(
        EARN,
        i={"memberNumber": number, "amount": "42", "orderRef": unique("o"), "idempotencyKey": unique("k")},
    )
    tx_id = earned["earnPoints"]["transaction"]["id"]
    query = "query($id: ID!) { node(id: $id) { id ... on LedgerTransaction { kind points } } }"
    assert (await merchant.api(query, id=tx_id))["node"] == {"id": tx_id, "kind": "EARN", "points": 42}
    assert (await operator(query, id=tx_id))["node"]["points"] == 42
    assert (await other.api(query, id=tx_id))["node"] is None, "another merchant's transaction is not found"


async def test_create_tenant_and_store_with_an_idempotency_key_replay(operator):
    key, code = unique("k"), unique("idem")
    request = {"code": code, "name": "Idempotent", "category": "RETAIL", "idempotencyKey": key}
    query = "mutation($i: CreateTenantInput!) { createTenant(input: $i) { tenant { id code } userErrors { code } } }"
    first = await operator(query, i=request)
    again = await operator(query, i=request)
    assert first == again and first["createTenant"]["tenant"]["code"] == code, "a retry gets the same tenant"
    reused = await operator(query, i=request | {"name": "Other"})
    assert reused["createTenant"]["userErrors"] == [{"code": "IDEMPOTENCY_KEY_REUSED"}]
    store = "mutation($i: CreateStoreInput!) { createStore(input: $i) { store { id } userErrors { code } } }"
    store_request = {"tenantCode": code, "code": "S1", "name": "Main", "idempotencyKey": unique("k")}
    assert await operator(store, i=store_request) == await operator(store, i=store_request)
