"""Member tokens from an external OpenID Connect issuer, verified against its published keys."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from alliance.api.app import create_app
from tests.conftest import Api, random_phone, unique

ISSUER = "https://id.partner.example"
AUDIENCE = "alliance-member-app"


def serve_jwks(keys: KeySet) -> ThreadingHTTPServer:
    body = json.dumps(keys.as_dict(private=False)).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def id_token(key: RSAKey, phone: str, **overrides: object) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": unique("u"),
        "iat": now,
        "exp": now + 300,
        "phone_number": phone,
        "phone_number_verified": True,
    } | overrides
    return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


async def test_external_issuer_tokens_act_as_the_member_with_that_phone(settings, make_merchant):
    key = RSAKey.generate_key(2048, parameters={"kid": "partner-1"})
    server = serve_jwks(KeySet([key]))
    issuers = [
        {"issuer": ISSUER, "jwks_url": f"http://127.0.0.1:{server.server_port}/jwks", "audience": AUDIENCE}
    ]
    app = create_app(settings.database_url, settings.model_copy(update={"member_oidc_issuers": issuers}))
    merchant = await make_merchant()
    phone = random_phone()
    enrolled = await merchant.api(
        "mutation($i: EnrollMemberInput!) { enrollMember(input: $i) { member { memberNumber } } }",
        i={"phone": phone, "externalRef": unique("r")},
    )
    number = enrolled["enrollMember"]["member"]["memberNumber"]
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://alliance.test"
            ) as http,
        ):
            viewer = await Api(http, id_token(key, phone))("{ viewer { kind member { memberNumber } } }")
            assert viewer["viewer"] == {"kind": "MEMBER", "member": {"memberNumber": number}}

            async def status(token: str) -> int:
                return (await Api(http, token).post("{ viewer { kind } }")).status_code

            assert await status(id_token(key, random_phone())) == 401, "a phone that is no member"
            assert await status(id_token(key, phone, aud="someone-else")) == 401
            assert await status(id_token(key, phone, exp=int(time.time()) - 10)) == 401
            assert await status(id_token(key, phone, phone_number_verified=False)) == 401
            stranger = RSAKey.generate_key(2048, parameters={"kid": "partner-1"})
            assert await status(id_token(stranger, phone)) == 401, (
                "signed by a key the issuer does not publish"
            )
    finally:
        server.shutdown()
