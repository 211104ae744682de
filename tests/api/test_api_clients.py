"""API client management over GraphQL: create (secret shown once), rotate, revoke; tenancy; audit."""

from alliance.auth.principal import CLIENTS_MANAGE, POINTS_EARN
from alliance.tenants.models import TenantCategory
from tests.conftest import Api, client_token, new_client

FIELDS = "client { id clientId name role tenantCode scopes status revokedAt secretRotatedAt }"
CREATE = (
    "mutation($i: CreateApiClientInput!) { createApiClient(input: $i) { "
    + FIELDS
    + " clientSecret userErrors { field code message } } }"
)
ROTATE = (
    "mutation($i: RotateApiClientSecretInput!) { rotateApiClientSecret(input: $i) { "
    + FIELDS
    + " clientSecret userErrors { field code } } }"
)
REVOKE = (
    "mutation($i: RevokeApiClientInput!) { revokeApiClient(input: $i) { "
    + FIELDS
    + " userErrors { field code } } }"
)
LIST = """query($after: String, $status: ApiClientStatus) {
  apiClients(first: 100, after: $after, filter: {status: $status}) {
    edges { node { clientId tenantCode status } } pageInfo { hasNextPage endCursor } } }"""
VIEWER = "{ viewer { clientId tenant { code } } }"


async def token_status(http, client_id: str, secret: str) -> int:
    response = await http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    return response.status_code


async def all_client_ids(api: Api) -> set[str]:
    seen: set[str] = set()
    after = None
    while True:
        page = (await api(LIST, after=after))["apiClients"]
        seen |= {edge["node"]["clientId"] for edge in page["edges"]}
        if not page["pageInfo"]["hasNextPage"]:
            return seen
        after = page["pageInfo"]["endCursor"]


async def test_a_merchant_creates_a_client_whose_secret_is_shown_once_and_works(http, make_merchant):
    merchant = await make_merchant(TenantCategory.HOTEL)
    created = (await merchant.api(CREATE, i={"name": "  Front desk POS  "}))["createApiClient"]
    assert created["userErrors"] == []
    client = created["client"]
    assert client["name"] == "Front desk POS"
    assert client["role"] == "MERCHANT" and client["tenantCode"] == merchant.code
    assert client["status"] == "ACTIVE" and client["revokedAt"] is None
    assert CLIENTS_MANAGE in client["scopes"]
    secret = created["clientSecret"]
    assert len(secret) >= 40

    # The secret is never readable again: not in the list, not by node.
    listing = await merchant.api.post(
        "query($id: ID!) { apiClients(first: 100) { edges { node { clientId } } }"
        " node(id: $id) { ... on ApiClient { clientId status } } }",
        {"id": client["id"]},
    )
    assert listing.json()["data"]["node"] == {"clientId": client["clientId"], "status": "ACTIVE"}
    assert secret not in listing.text

    token = await client_token(http, client["clientId"], secret)
    viewer = await Api(http, token)(VIEWER)
    assert viewer["viewer"] == {"clientId": client["clientId"], "tenant": {"code": merchant.code}}


async def test_a_merchant_sees_and_manages_only_its_own_tenants_clients(http, make_merchant, operator):
    mine = await make_merchant()
    other = await make_merchant()
    theirs = (await other.api(CREATE, i={"name": "their POS"}))["createApiClient"]["client"]

    visible = await all_client_ids(mine.api)
    assert mine.client_id in visible
    assert theirs["clientId"] not in visible and other.client_id not in visible

    # Another tenant's client is simply not found, for every action.
    for mutation, name in ((ROTATE, "rotateApiClientSecret"), (REVOKE, "revokeApiClient")):
        payload = (await mine.api(mutation, i={"clientId": theirs["clientId"]}))[name]
        assert payload["client"] is None
        assert payload["userErrors"] == [{"field": "clientId", "code": "CLIENT_NOT_FOUND"}]
    refused = (await mine.api(CREATE, i={"name": "x", "tenantCode": other.code}))["createApiClient"]
    assert refused["userErrors"][0]["code"] == "TENANT_NOT_FOUND" and refused["clientSecret"] is None
    escalate = (await mine.api(CREATE, i={"name": "x", "role": "OPERATOR"}))["createApiClient"]
    assert escalate["userErrors"][0]["code"] == "INVALID_ROLE"

    # Nothing was changed: their client still gets tokens. The operator sees both tenants' clients.
    assert await token_status(http, other.client_id, other.client_secret) == 200
    assert {mine.client_id, other.client_id, theirs["clientId"]} <= await all_client_ids(operator)


async def test_a_client_grants_no_scope_it_lacks(http, db, make_merchant):
    merchant = await make_merchant()
    client_id, secret = await new_client(db, "merchant", merchant.tenant_id, [CLIENTS_MANAGE, POINTS_EARN])
    narrow = Api(http, await client_token(http, client_id, secret))

    default = (await narrow(CREATE, i={"name": "till"}))["createApiClient"]
    assert default["client"]["scopes"] == [CLIENTS_MANAGE, POINTS_EARN]
    wider = (await narrow(CREATE, i={"name": "till", "scopes": ["points:redeem"]}))["createApiClient"]
    assert wider["userErrors"] == [
        {
            "field": "scopes",
            "code": "INVALID_SCOPE",
            "message": "you cannot grant what you lack: points:redeem",
        }
    ]
    unknown = (await merchant.api(CREATE, i={"name": "x", "scopes": ["tenants:write"]}))["createApiClient"]
    assert unknown["userErrors"][0]["code"] == "INVALID_SCOPE"
    blank = (await merchant.api(CREATE, i={"name": "   "}))["createApiClient"]
    assert blank["userErrors"][0] == {
        "field": "name",
        "code": "INVALID_NAME",
        "message": "name must be 1-200 characters",
    }

    # A client without clients:manage cannot list or create clients at all.
    pos_id, pos_secret = await new_client(db, "merchant", merchant.tenant_id, [POINTS_EARN])
    pos = Api(http, await client_token(http, pos_id, pos_secret))
    errors = await pos.errors("{ apiClients(first: 5) { edges { node { clientId } } } }")
    assert errors[0]["extensions"]["code"] == "FORBIDDEN"


async def test_rotation_replaces_the_secret(http, make_merchant):
    merchant = await make_merchant()
    created = (await merchant.api(CREATE, i={"name": "web shop"}))["createApiClient"]
    client_id, old_secret = created["client"]["clientId"], created["clientSecret"]
    old_token = await client_token(http, client_id, old_secret)

    rotated = (await merchant.api(ROTATE, i={"clientId": client_id}))["rotateApiClientSecret"]
    assert rotated["userErrors"] == []
    assert rotated["client"]["secretRotatedAt"] is not None
    new_secret = rotated["clientSecret"]
    assert new_secret and new_secret != old_secret
    assert await token_status(http, client_id, old_secret) == 401
    assert await token_status(http, client_id, new_secret) == 200
    # A token issued before the rotation lives until it expires (documented).
    assert (await Api(http, old_token)(VIEWER))["viewer"]["clientId"] == client_id


async def test_revocation_stops_new_tokens_and_refuses_live_ones(http, make_merchant):
    merchant = await make_merchant()
    created = (await merchant.api(CREATE, i={"name": "old kiosk"}))["createApiClient"]
    client_id, secret = created["client"]["clientId"], created["clientSecret"]
    live = Api(http, await client_token(http, client_id, secret))
    assert (await live(VIEWER))["viewer"]["clientId"] == client_id

    revoked = (await merchant.api(REVOKE, i={"clientId": client_id}))["revokeApiClient"]
    assert revoked["userErrors"] == []
    assert revoked["client"]["status"] == "REVOKED" and revoked["client"]["revokedAt"] is not None

    assert await token_status(http, client_id, secret) == 401
    response = await live.post(VIEWER)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]

    # Revoking again is a harmless retry; a revoked client gets no new secret.
    again = (await merchant.api(REVOKE, i={"clientId": client_id}))["revokeApiClient"]
    assert again["userErrors"] == [] and again["client"]["status"] == "REVOKED"
    rotate = (await merchant.api(ROTATE, i={"clientId": client_id}))["rotateApiClientSecret"]
    assert rotate["userErrors"] == [{"field": "clientId", "code": "CLIENT_REVOKED"}]
    assert rotate["clientSecret"] is None
    listed = (await merchant.api(LIST, status="REVOKED"))["apiClients"]["edges"]
    assert [edge["node"]["clientId"] for edge in listed] == [client_id]


async def test_a_revoked_clients_tokens_are_refused_by_a_replica_after_its_reload(
    settings, http, make_merchant
):
    """Another replica learns of a revocation from the database at its next reload (≤ 30 s)."""
    from alliance.api.app import create_app

    merchant = await make_merchant()
    created = (await merchant.api(CREATE, i={"name": "till 7"}))["createApiClient"]
    client_id, secret = created["client"]["clientId"], created["clientSecret"]
    token = await client_token(http, client_id, secret)

    assert settings.database_url is not None
    replica = create_app(settings.database_url, settings)
    async with replica.router.lifespan_context(replica):
        import httpx

        transport = httpx.ASGITransport(app=replica)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica.test") as other:
            assert (await Api(other, token)(VIEWER))["viewer"]["clientId"] == client_id
            await merchant.api(REVOKE, i={"clientId": client_id})
            assert (await Api(other, token).post(VIEWER)).status_code == 200  # not reloaded yet
            replica.state.revoked_clients.loaded_at = float("-inf")  # the 30 s have passed
            assert (await Api(other, token).post(VIEWER)).status_code == 401


async def test_a_client_cannot_revoke_itself_and_the_operator_manages_any_client(
    http, operator, make_merchant
):
    merchant = await make_merchant()
    own = (await merchant.api(REVOKE, i={"clientId": merchant.client_id}))["revokeApiClient"]
    assert own["userErrors"] == [{"field": "clientId", "code": "CANNOT_REVOKE_SELF"}]

    made = (await operator(CREATE, i={"name": "integration", "tenantCode": merchant.code}))["createApiClient"]
    assert made["userErrors"] == [] and made["client"]["tenantCode"] == merchant.code
    assert made["client"]["role"] == "MERCHANT"
    assert (
        await Api(http, await client_token(http, made["client"]["clientId"], made["clientSecret"]))(VIEWER)
    )["viewer"]["tenant"] == {"code": merchant.code}
    ops = (await operator(CREATE, i={"name": "second operator", "role": "OPERATOR"}))["createApiClient"]
    assert ops["client"]["tenantCode"] is None and ops["client"]["role"] == "OPERATOR"
    missing = (await operator(CREATE, i={"name": "x"}))["createApiClient"]  # a merchant client needs a tenant
    assert missing["userErrors"][0]["code"] == "INVALID_TENANT"

    revoked = (await operator(REVOKE, i={"clientId": merchant.client_id}))["revokeApiClient"]
    assert revoked["client"]["status"] == "REVOKED"
    assert (await merchant.api.post(VIEWER)).status_code == 401


async def test_client_management_is_audited_for_merchants_too(make_merchant):
    merchant = await make_merchant()
    await merchant.api(CREATE, i={"name": "audited"})
    await merchant.api(REVOKE, i={"clientId": "mc_does_not_exist"})
    log = await merchant.api(
        "{ auditLog(first: 10) { edges { node { operation outcome codes clientId tenantCode } } } }"
    )
    records = [edge["node"] for edge in log["auditLog"]["edges"]]
    assert {
        "operation": "mutation:revokeApiClient",
        "outcome": "refused",
        "codes": ["CLIENT_NOT_FOUND"],
        "clientId": merchant.client_id,
        "tenantCode": merchant.code,
    } in records
    assert any(r["operation"] == "mutation:createApiClient" and r["outcome"] == "ok" for r in records)
