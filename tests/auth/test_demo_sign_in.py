"""Demo mode: the personas at /oauth/demo and one-click member sign-in; both gone outside demo mode."""

from __future__ import annotations

import httpx

from alliance.api.app import create_app
from alliance.demo import DEMO_MEMBERS, seed_demo
from tests.conftest import Api, client_token

DEMO_MEMBER = "urn:alliance:params:oauth:grant-type:demo-member"


async def test_outside_demo_mode_there_are_no_personas_and_no_one_click_sign_in(http, db):
    await seed_demo(db)
    assert (await http.get("/oauth/demo")).status_code == 404
    refused = await http.post("/oauth/token", data={"grant_type": DEMO_MEMBER, "member_number": "8100000001"})
    assert refused.status_code == 400
    assert refused.json()["error"] == "unsupported_grant_type"


async def test_demo_mode_lists_personas_whose_credentials_work(settings, db):
    await seed_demo(db)
    app = create_app(settings.database_url, settings.model_copy(update={"demo": True, "access_log": False}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://alliance.test") as http,
    ):
        personas = (await http.get("/oauth/demo")).json()
        assert [m["name"] for m in personas["members"]] == [name for _, name, _ in DEMO_MEMBERS]
        assert all("****" in m["phone"] for m in personas["members"])
        assert [(c["role"], c["tenant"]) for c in personas["clients"]] == [
            ("operator", None),
            ("merchant", "sunrise-mart"),
            ("merchant", "lakeview-hotel"),
            ("merchant", "east-4s"),
        ]
        for client in personas["clients"]:
            assert await client_token(http, client["clientId"], client["clientSecret"])

        first = personas["members"][0]["memberNumber"]
        token = await http.post("/oauth/token", data={"grant_type": DEMO_MEMBER, "member_number": first})
        assert token.status_code == 200, token.text
        viewer = await Api(http, token.json()["access_token"])("{ viewer { member { memberNumber } } }")
        assert viewer["viewer"]["member"]["memberNumber"] == first

        stranger = await http.post(
            "/oauth/token", data={"grant_type": DEMO_MEMBER, "member_number": "8999999999"}
        )
        assert stranger.status_code == 400 and stranger.json()["error"] == "invalid_grant"
        options = (await http.get("/oauth/providers")).json()
        assert options["demo"] is True and options["phoneOtp"] is True  # demo mode logs the codes


async def test_configured_openid_providers_are_offered_and_allowed_by_the_page_policy(settings):
    provider = {
        "issuer": "https://id.example.test",
        "name": "Example ID",
        "authorization_endpoint": "https://id.example.test/authorize",
        "token_endpoint": "https://token.example.test/token",
        "client_id": "alliance-member-app",
    }
    app = create_app(settings.database_url, settings.model_copy(update={"member_oidc_providers": [provider]}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://alliance.test") as http,
    ):
        offered = (await http.get("/oauth/providers")).json()["providers"]
        assert offered == [
            {
                "issuer": "https://id.example.test",
                "name": "Example ID",
                "authorizationEndpoint": "https://id.example.test/authorize",
                "tokenEndpoint": "https://token.example.test/token",
                "clientId": "alliance-member-app",
                "scope": "openid phone",
            }
        ]
        csp = (await http.get("/app/")).headers["content-security-policy"]
        assert "connect-src 'self' https://token.example.test;" in csp
