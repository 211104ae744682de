"""``POST /oauth/token`` (client-credentials grant, RFC 6749 §4.4) and the JWKS endpoint."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from tests.conftest import new_client

FORM = {"grant_type": "client_credentials"}


def b64json(segment: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _signature = token.split(".")
    return b64json(header), b64json(payload)


@pytest.fixture
async def merchant_client(make_merchant):  # type: ignore[no-untyped-def]
    return await make_merchant()


async def test_client_secret_basic(http, merchant_client) -> None:
    m = merchant_client
    response = await http.post("/oauth/token", data=FORM, auth=(m.client_id, m.client_secret))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    assert body["access_token"].count(".") == 2
    # The token it returns is accepted by the API.
    graphql = await http.post(
        "/graphql",
        json={"query": "{ viewer { kind tenant { code } } }"},
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert graphql.json()["data"]["viewer"] == {"kind": "MERCHANT", "tenant": {"code": m.code}}


async def test_client_secret_post(http, merchant_client) -> None:
    m = merchant_client
    response = await http.post(
        "/oauth/token", data=FORM | {"client_id": m.client_id, "client_secret": m.client_secret}
    )
    assert response.status_code == 200, response.text
    _, claims = jwt_parts(response.json()["access_token"])
    assert claims["client_id"] == m.client_id


async def test_wrong_secret_is_invalid_client(http, merchant_client) -> None:
    m = merchant_client
    response = await http.post("/oauth/token", data=FORM, auth=(m.client_id, m.client_secret + "x"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "access_token" not in response.json()
    assert response.headers["www-authenticate"].lower().startswith("basic")


async def test_wrong_secret_by_post_is_invalid_client(http, merchant_client) -> None:
    m = merchant_client
    response = await http.post(
        "/oauth/token", data=FORM | {"client_id": m.client_id, "client_secret": "not-the-secret"}
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_unknown_client_is_invalid_client(http) -> None:
    response = await http.post("/oauth/token", data=FORM, auth=("mc_doesnotexist", "whatever"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


async def test_unknown_grant_type(http, merchant_client) -> None:
    m = merchant_client
    response = await http.post(
        "/oauth/token", data={"grant_type": "password"}, auth=(m.client_id, m.client_secret)
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
    assert "access_token" not in response.json()


async def test_both_authentication_methods_at_once(http, merchant_client) -> None:
    m = merchant_client
    response = await http.post(
        "/oauth/token",
        data=FORM | {"client_id": m.client_id, "client_secret": m.client_secret},
        auth=(m.client_id, m.client_secret),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_missing_grant_type(http, merchant_client) -> None:
    m = merchant_client
    response = await http.post("/oauth/token", data={"scope": ""}, auth=(m.client_id, m.client_secret))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_body_must_be_form_encoded(http, merchant_client) -> None:
    m = merchant_client
    response = await http.post(
        "/oauth/token",
        json={"grant_type": "client_credentials"},
        auth=(m.client_id, m.client_secret),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_requested_scope_narrows_the_token(http, merchant_client) -> None:
    m = merchant_client
    response = await http.post(
        "/oauth/token", data=FORM | {"scope": "tenants:read"}, auth=(m.client_id, m.client_secret)
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "tenants:read"
    _, claims = jwt_parts(response.json()["access_token"])
    assert claims["scope"] == "tenants:read"


async def test_scope_beyond_the_grant_is_refused(http, merchant_client) -> None:
    m = merchant_client
    response = await http.post(
        "/oauth/token", data=FORM | {"scope": "tenants:write"}, auth=(m.client_id, m.client_secret)
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


@pytest.mark.parametrize("outcome", ["success", "invalid_client", "unsupported_grant_type"])
async def test_token_responses_are_never_cached(http, merchant_client, outcome: str) -> None:
    m = merchant_client
    secret = m.client_secret + ("x" if outcome == "invalid_client" else "")
    grant = "password" if outcome == "unsupported_grant_type" else "client_credentials"
    response = await http.post("/oauth/token", data={"grant_type": grant}, auth=(m.client_id, secret))
    assert (response.status_code == 200) == (outcome == "success")
    assert response.headers["cache-control"] == "no-store"


async def test_merchant_token_claims_and_header(http, settings, merchant_client) -> None:
    m = merchant_client
    before = int(time.time())
    response = await http.post("/oauth/token", data=FORM, auth=(m.client_id, m.client_secret))
    body = response.json()
    header, claims = jwt_parts(body["access_token"])

    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    assert header["kid"]
    assert claims["iss"] == settings.issuer
    assert claims["aud"] == settings.audience
    assert claims["sub"] == m.client_id
    assert claims["client_id"] == m.client_id
    assert claims["tenant"] == m.code
    assert claims["tenant_id"] == m.tenant_id
    assert claims["role"] == "merchant"
    assert before <= claims["iat"] <= int(time.time())
    assert (
        claims["exp"]
        == claims["iat"] + settings.access_token_ttl_seconds
        == claims["iat"] + body["expires_in"]
    )
    assert claims["jti"]
    scopes = set(claims["scope"].split())
    assert claims["scope"] == body["scope"]
    assert {"members:write", "tenants:read"} <= scopes
    assert "tenants:write" not in scopes  # operator-only


async def test_each_token_has_a_unique_jti(http, merchant_client) -> None:
    m = merchant_client
    jtis = set()
    for _ in range(3):
        response = await http.post("/oauth/token", data=FORM, auth=(m.client_id, m.client_secret))
        jtis.add(jwt_parts(response.json()["access_token"])[1]["jti"])
    assert len(jtis) == 3


async def test_operator_token_has_no_tenant(http, db) -> None:
    client_id, secret = await new_client(db, "operator", None)
    response = await http.post("/oauth/token", data=FORM, auth=(client_id, secret))
    _, claims = jwt_parts(response.json()["access_token"])
    assert claims["role"] == "operator"
    assert "tenant" not in claims
    assert "tenant_id" not in claims
    assert "tenants:write" in claims["scope"].split()


async def test_jwks_publishes_the_signing_key_without_private_parts(http, merchant_client) -> None:
    m = merchant_client
    token = (await http.post("/oauth/token", data=FORM, auth=(m.client_id, m.client_secret))).json()
    kid = jwt_parts(token["access_token"])[0]["kid"]

    response = await http.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert kid in {key["kid"] for key in keys}
    for key in keys:
        assert key["kty"] == "EC"
        assert {"x", "y", "crv"} <= key.keys()
        assert "d" not in key
