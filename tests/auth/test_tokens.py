"""Bearer-token verification at /graphql: expiry, signature, audience, key rotation, scopes."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
from joserfc import jwt
from sqlalchemy import text
from sqlmodel import select

from alliance.auth.keys import ALGORITHM, generate_key, rotate_signing_key
from alliance.auth.models import ApiClient
from alliance.auth.tokens import TokenIssuer
from alliance.db.database import OPERATOR, run_sql
from tests.conftest import Api, client_token, new_client, random_phone, unique

VIEWER = "{ viewer { kind subject } }"
ENROLL = "mutation($i: EnrollMemberInput!) { enrollMember(input: $i) { member { memberNumber } created userErrors { code } } }"
TWO_HOURS = 2 * 3600


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def unb64(segment: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def claims_of(token: str) -> dict[str, Any]:
    return unb64(token.split(".")[1])


def kid_of(token: str) -> str:
    return unb64(token.split(".")[0])["kid"]


async def call(http: httpx.AsyncClient, token: str, query: str = VIEWER) -> httpx.Response:
    return await http.post("/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"})


def assert_rejected(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert "invalid_token" in response.headers["www-authenticate"]
    body = response.json()
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def enrolled(api: Api, ref: str) -> str:
    """The member number of a new member enrolled through ``api``."""
    data = await api(ENROLL, i={"phone": random_phone(), "externalRef": ref})
    return data["enrollMember"]["member"]["memberNumber"]


async def api_client(db, client_id: str) -> ApiClient:  # type: ignore[no-untyped-def]
    async with db.transaction(OPERATOR) as session:
        return (await session.exec(select(ApiClient).where(ApiClient.client_id == client_id))).one()


async def test_valid_token_is_accepted(http, make_merchant) -> None:
    # The control for every rejection below.
    m = await make_merchant()
    response = await call(http, m.api.token)
    assert response.status_code == 200
    assert response.json()["data"]["viewer"] == {"kind": "MERCHANT", "subject": m.client_id}


async def test_missing_token(http) -> None:
    response = await http.post("/graphql", json={"query": VIEWER})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "data" not in response.json()
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_non_bearer_scheme(http, make_merchant) -> None:
    m = await make_merchant()
    response = await http.post("/graphql", json={"query": VIEWER}, auth=(m.client_id, m.client_secret))
    assert response.status_code == 401


async def test_garbage_token(http) -> None:
    assert_rejected(await call(http, "not.a.jwt"))


async def test_expired_client_token(app, http, db, make_merchant) -> None:
    m = await make_merchant()
    client = await api_client(db, m.client_id)
    issued = app.state.token_issuer.for_client(client, m.code, now=int(time.time()) - TWO_HOURS)
    assert claims_of(issued.access_token)["exp"] < time.time()
    assert_rejected(await call(http, issued.access_token))


async def test_expired_member_token(app, http, db, make_merchant) -> None:
    m = await make_merchant()
    number = await enrolled(m.api, "E1")
    member_id = await member_pk(db, number)
    ttl = app.state.token_issuer.settings.member_token_ttl_seconds
    expired = app.state.token_issuer.for_member(member_id, number, now=int(time.time()) - ttl - TWO_HOURS)
    assert_rejected(await call(http, expired.access_token))
    fresh = app.state.token_issuer.for_member(member_id, number)
    assert (await call(http, fresh.access_token)).status_code == 200


async def test_token_signed_by_a_foreign_key(http, make_merchant) -> None:
    m = await make_merchant()
    claims = claims_of(m.api.token)
    foreign = generate_key()
    token = jwt.encode(
        {"alg": ALGORITHM, "typ": "at+jwt", "kid": foreign.kid}, claims, foreign, algorithms=[ALGORITHM]
    )
    assert_rejected(await call(http, token))


async def test_token_signed_by_a_foreign_key_claiming_our_kid(http, make_merchant) -> None:
    # The kid only selects a key; the signature must still verify against it.
    m = await make_merchant()
    claims = claims_of(m.api.token)
    foreign = generate_key()
    header = {"alg": ALGORITHM, "typ": "at+jwt", "kid": kid_of(m.api.token)}
    token = jwt.encode(header, claims, foreign, algorithms=[ALGORITHM])
    assert_rejected(await call(http, token))


async def test_tampered_claims_are_rejected(http, make_merchant) -> None:
    # A merchant promoting itself to operator by editing its token's payload.
    m = await make_merchant()
    header, _, signature = m.api.token.split(".")
    claims = claims_of(m.api.token) | {"role": "operator", "scope": "tenants:read tenants:write"}
    claims.pop("tenant_id")
    assert_rejected(await call(http, f"{header}.{b64(claims)}.{signature}"))


async def test_unsigned_token_is_rejected(http, make_merchant) -> None:
    m = await make_merchant()
    token = f"{b64({'alg': 'none', 'typ': 'at+jwt'})}.{b64(claims_of(m.api.token))}."
    assert_rejected(await call(http, token))


async def test_wrong_audience(app, http, db, settings, make_merchant) -> None:
    m = await make_merchant()
    client = await api_client(db, m.client_id)
    other = TokenIssuer(settings.model_copy(update={"audience": "other"}), app.state.keyring)
    token = other.for_client(client, m.code).access_token
    assert claims_of(token)["aud"] == "other"
    assert_rejected(await call(http, token))


async def test_wrong_issuer(app, http, db, settings, make_merchant) -> None:
    m = await make_merchant()
    client = await api_client(db, m.client_id)
    other = TokenIssuer(settings.model_copy(update={"issuer": "urn:elsewhere"}), app.state.keyring)
    assert_rejected(await call(http, other.for_client(client, m.code).access_token))


async def test_key_rotation_keeps_old_tokens_valid(app, http, db, make_merchant) -> None:
    m = await make_merchant()
    old_token = m.api.token
    old_kid = kid_of(old_token)

    async with db.transaction(OPERATOR) as session:
        new_kid = await rotate_signing_key(session)
    await app.state.reload_keys()

    assert new_kid != old_kid
    assert (await call(http, old_token)).status_code == 200

    new_token = await client_token(http, m.client_id, m.client_secret)
    assert kid_of(new_token) == new_kid
    assert (await call(http, new_token)).status_code == 200

    jwks = (await http.get("/.well-known/jwks.json")).json()
    kids = {key["kid"] for key in jwks["keys"]}
    assert {old_kid, new_kid} <= kids
    assert all("d" not in key for key in jwks["keys"])


async def test_missing_scope_is_forbidden(http, db, make_merchant) -> None:
    m = await make_merchant()
    client_id, secret = await new_client(db, "merchant", m.tenant_id, scopes=["tenants:read"])
    limited = Api(http, await client_token(http, client_id, secret))
    assert claims_of(limited.token)["scope"] == "tenants:read"

    phone = random_phone()
    errors = await limited.errors(ENROLL, i={"phone": phone, "externalRef": unique("r")})
    assert errors[0]["extensions"]["code"] == "FORBIDDEN"
    assert errors[0]["path"] == ["enrollMember"]
    # What the scope does allow still works.
    data = await limited("{ tenants { edges { node { code } } } }")
    assert [edge["node"]["code"] for edge in data["tenants"]["edges"]] == [m.code]
    # Nothing was enrolled: the full-scope client can enrol that phone as a brand-new member.
    retry = await m.api(ENROLL, i={"phone": phone, "externalRef": unique("r")})
    assert retry["enrollMember"]["created"] is True


async def member_pk(db, member_number: str) -> int:  # type: ignore[no-untyped-def]
    async with db.transaction(OPERATOR) as session:
        result = await run_sql(
            session, text("SELECT id FROM members WHERE member_number = :n"), {"n": member_number}
        )
        return result.scalar_one()


async def test_member_token_sees_itself(app, http, db, make_merchant) -> None:
    m = await make_merchant()
    number = await enrolled(m.api, "M1")
    token = app.state.token_issuer.for_member(await member_pk(db, number), number).access_token
    member = Api(http, token)
    data = await member("{ viewer { kind subject clientId tenant { code } member { memberNumber } } }")
    assert data["viewer"] == {
        "kind": "MEMBER",
        "subject": f"member:{number}",
        "clientId": None,
        "tenant": None,
        "member": {"memberNumber": number},
    }


async def test_member_token_cannot_see_other_members(app, http, db, make_merchant) -> None:
    m = await make_merchant()
    me, other = await enrolled(m.api, "A"), await enrolled(m.api, "B")
    member = Api(http, app.state.token_issuer.for_member(await member_pk(db, me), me).access_token)
    query = "query($n: String!) { member(memberNumber: $n) { memberNumber } }"
    assert (await member(query, n=me))["member"] == {"memberNumber": me}
    assert (await member(query, n=other))["member"] is None


async def test_a_remembered_token_is_refused_once_it_expires(app, http, db, make_merchant) -> None:
    """Verified tokens are remembered (an ES256 check per request is costly), never past expiry."""
    m = await make_merchant()
    client = await api_client(db, m.client_id)
    ttl = app.state.token_issuer.settings.access_token_ttl_seconds
    issued = app.state.token_issuer.for_client(client, m.code, now=int(time.time()) - ttl + 2)
    assert (await call(http, issued.access_token)).status_code == 200
    assert (await call(http, issued.access_token)).status_code == 200
    await asyncio.sleep(2.1)
    assert_rejected(await call(http, issued.access_token))
