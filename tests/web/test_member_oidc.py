"""Member sign-in with an external OpenID provider, end to end in Chromium: authorization code +
PKCE (S256) against a real issuer on loopback, the code exchanged by the browser, the ID token
accepted by /graphql as the member with that verified phone."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from playwright.sync_api import expect

from alliance.api.app import create_app
from alliance.config import Settings
from alliance.demo import DEMO_MEMBERS
from tests.web.conftest import WebServer, screenshot, serving, web_settings

CLIENT_ID = "alliance-member-app"


@dataclass
class PartnerIssuer:
    """A minimal OpenID provider: it "authenticates" whoever is next in ``sign_in_as`` and
    checks what a real provider checks at the token endpoint (code once, same redirect URI and
    client, the PKCE verifier that hashes to the challenge)."""

    key: RSAKey
    sign_in_as: list[str] = field(default_factory=list)  # phones, consumed in order
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    app_origin: str = ""

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID
        assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
        code = secrets.token_urlsafe(16)
        self.codes[code] = query | {"phone": self.sign_in_as.pop(0)}
        location = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"
        return 302, {"Location": location}, b""

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        self.token_requests.append(form)
        granted = self.codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "").encode()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
        if (
            granted is None
            or form.get("grant_type") != "authorization_code"
            or form.get("redirect_uri") != granted["redirect_uri"]
            or form.get("client_id") != CLIENT_ID
            or challenge != granted["code_challenge"]
        ):
            return 400, {}, json.dumps({"error": "invalid_grant"}).encode()
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": CLIENT_ID,
            "sub": secrets.token_hex(8),
            "iat": now,
            "exp": now + 600,
            "nonce": granted["nonce"],
            "phone_number": granted["phone"],
            "phone_number_verified": True,
        }
        id_token = jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, self.key)
        body = {"id_token": id_token, "access_token": secrets.token_hex(16), "token_type": "Bearer", "expires_in": 600}
        return 200, {"Cache-Control": "no-store"}, json.dumps(body).encode()

    def jwks(self) -> tuple[int, dict[str, str], bytes]:
        return 200, {}, json.dumps(KeySet([self.key]).as_dict(private=False)).encode()


def _serve_issuer(issuer: PartnerIssuer) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            # The browser calls the token endpoint from the app's origin (CORS, no preflight:
            # a form POST is a simple request).
            self.send_header("Access-Control-Allow-Origin", issuer.app_origin)
            self.send_header("Content-Type", "application/json")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if parts.path == "/authorize":
                self._answer(*issuer.authorize(query))
            elif parts.path == "/jwks":
                self._answer(*issuer.jwks())
            else:
                self._answer(404, {}, b"{}")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            self._answer(*(issuer.token(form) if self.path == "/token" else (404, {}, b"{}")))

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def oidc(settings: Settings, server: WebServer) -> Iterator[tuple[WebServer, PartnerIssuer]]:
    """A second gateway on the same (demo-seeded) database, configured with the partner issuer."""
    issuer = PartnerIssuer(RSAKey.generate_key(2048, parameters={"kid": "partner-1"}))
    http_server = _serve_issuer(issuer)
    issuer.url = f"http://127.0.0.1:{http_server.server_port}"
    configured = web_settings(
        settings,
        member_oidc_issuers=[{"issuer": issuer.url, "jwks_url": f"{issuer.url}/jwks", "audience": CLIENT_ID}],
        member_oidc_providers=[
            {
                "issuer": issuer.url,
                "name": "Partner ID",
                "authorization_endpoint": f"{issuer.url}/authorize",
                "token_endpoint": f"{issuer.url}/token",
                "client_id": CLIENT_ID,
                "scope": "openid phone",
            }
        ],
    )
    assert settings.database_url is not None
    app = create_app(settings.database_url, configured)
    try:
        with serving(app) as url:
            issuer.app_origin = url
            yield WebServer(url=url, app=app), issuer
    finally:
        http_server.shutdown()


def test_a_member_signs_in_with_the_partner_provider(oidc: tuple[WebServer, PartnerIssuer], new_page: Any) -> None:
    gateway, issuer = oidc
    phone, name, _ = DEMO_MEMBERS[0]
    issuer.sign_in_as.append(phone)
    page = new_page(base_url=gateway.url)
    page.goto("/app/")
    page.get_by_role("button", name="Sign in with Partner ID").click()

    expect(page.get_by_role("heading", name=f"Hello, {name}")).to_be_visible()
    assert urlsplit(page.url).query == "", "the one-time code is removed from the address bar"
    expect(page.locator("[data-balance=POINTS]")).to_have_text(re.compile(r"\d"))
    screenshot(page, "member-signed-in-with-partner-provider")
    (exchange,) = issuer.token_requests
    assert exchange["redirect_uri"] == f"{gateway.url}/app/" and len(exchange["code_verifier"]) >= 43


def test_a_forged_answer_from_the_provider_is_refused(oidc: tuple[WebServer, PartnerIssuer], new_page: Any) -> None:
    """A redirect back that this browser did not start (a code injected with a made-up state)
    never reaches the token endpoint and leaves the member signed out, with the reason shown."""
    gateway, issuer = oidc
    before = len(issuer.token_requests)
    page = new_page(base_url=gateway.url)
    page.goto("/app/?code=stolen&state=made-up")
    expect(page.get_by_role("alert")).to_contain_text("Sign-in with the provider failed")
    expect(page.get_by_role("button", name="Sign in with Partner ID")).to_be_visible()
    assert len(issuer.token_requests) == before
