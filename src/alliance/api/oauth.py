"""``POST /oauth/token``, the member sign-in endpoints and ``GET /.well-known/jwks.json``.

A small Starlette adapter that follows RFC 6749 §4.4 and §5.2: client authentication by
HTTP Basic (client_secret_basic) or form fields (client_secret_post), never both; errors as
``{"error": ..., "error_description": ...}`` with ``Cache-Control: no-store``.

Members sign in without a client secret (the member app is a public client): the
``phone-otp`` grant (a code from ``POST /oauth/otp``), in demo mode the ``demo-member`` grant,
or a token of a configured OpenID provider used directly as the bearer token
(``GET /oauth/providers`` tells the browser how to start that flow).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, unquote

import structlog
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse

from alliance import demo
from alliance.auth import otp
from alliance.auth.clients import authenticate_client
from alliance.auth.sms import SmsSender
from alliance.auth.tokens import TokenIssuer
from alliance.config import Settings
from alliance.db import Database
from alliance.db.database import AUTH
from alliance.errors import DomainError
from alliance.members.phone import mask_phone, normalize_phone
from alliance.tenants.models import Tenant

PHONE_OTP_GRANT = "urn:alliance:params:oauth:grant-type:phone-otp"
DEMO_MEMBER_GRANT = "urn:alliance:params:oauth:grant-type:demo-member"
log = structlog.get_logger("alliance.oauth")

MAX_BODY_BYTES = 4096
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def oauth_error(error: str, description: str, status: int = 400, basic: bool = False) -> JSONResponse:
    headers = dict(NO_STORE)
    if status == 401 and basic:
        headers["WWW-Authenticate"] = 'Basic realm="alliance"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        client_id, sep, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (unquote(client_id), unquote(secret)) if sep else None


async def _form(request: Request, json_allowed: bool = False) -> dict[str, str] | JSONResponse:
    """The url-encoded body (or, where ``json_allowed``, a flat JSON object), size-limited."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return oauth_error("invalid_request", "request body too large")
    content_type = request.headers.get("content-type", "")
    if json_allowed and "application/json" in content_type:
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            return oauth_error("invalid_request", "malformed JSON body")
        if not isinstance(document, dict):
            return oauth_error("invalid_request", "the body must be a JSON object")
        return {k: v for k, v in document.items() if isinstance(v, str)}
    if "application/x-www-form-urlencoded" not in content_type:
        return oauth_error("invalid_request", "the body must be application/x-www-form-urlencoded")
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False, max_num_fields=20))
    except (UnicodeDecodeError, ValueError):
        return oauth_error("invalid_request", "malformed form body")


async def token_endpoint(request: Request) -> JSONResponse:
    db: Database = request.app.state.db
    issuer: TokenIssuer = request.app.state.token_issuer
    form = await _form(request)
    if isinstance(form, JSONResponse):
        return form
    grant_type = form.get("grant_type")
    if grant_type in MEMBER_GRANTS:
        return await MEMBER_GRANTS[grant_type](request, form)
    authorization = request.headers.get("authorization")
    basic = _basic_credentials(authorization) if authorization else None
    if authorization and basic is None:
        return oauth_error("invalid_client", "malformed Basic credentials", 401, basic=True)
    if basic and ("client_secret" in form):
        return oauth_error("invalid_request", "use one client authentication method, not two")
    client_id, secret = basic or (form.get("client_id"), form.get("client_secret"))
    if not isinstance(client_id, str) or not isinstance(secret, str) or not client_id or not secret:
        return oauth_error("invalid_client", "client authentication failed", 401, basic=basic is not None)
    if grant_type is None:
        return oauth_error("invalid_request", "grant_type is required")
    async with db.transaction(AUTH) as session:
        client = await authenticate_client(session, client_id, secret)
        tenant_code = None
        if client is not None and client.tenant_id is not None:
            tenant = await session.get(Tenant, client.tenant_id)
            tenant_code = tenant.code if tenant is not None and tenant.status == "active" else None
    if client is None:
        return oauth_error("invalid_client", "client authentication failed", 401, basic=basic is not None)
    if grant_type != "client_credentials":
        return oauth_error("unsupported_grant_type", "only client_credentials is supported")
    requested = form.get("scope")
    if isinstance(requested, str) and requested.strip():
        wanted = set(requested.split())
        if not wanted <= set(client.scopes):
            return oauth_error("invalid_scope", "the requested scope exceeds the client's grant")
        client.scopes = sorted(wanted)
    if client.role == "merchant" and tenant_code is None:
        return oauth_error("invalid_client", "the client's tenant is not available", 401)
    await request.app.state.refresh_keys_if_stale()
    token = issuer.for_client(client, tenant_code)
    body = {
        "access_token": token.access_token,
        "token_type": "Bearer",
        "expires_in": token.expires_in,
        "scope": token.scope,
    }
    return JSONResponse(body, headers=NO_STORE)


async def jwks_endpoint(request: Request) -> JSONResponse:
    await request.app.state.refresh_keys_if_stale()
    return JSONResponse(request.app.state.keyring.public_jwks(), headers={"Cache-Control": "max-age=60"})


# -- member sign-in ---------------------------------------------------------------------------------


def _not_found() -> JSONResponse:
    return JSONResponse({"error": "not_found"}, status_code=404, headers=NO_STORE)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.services.settings
    return settings


def _member_token(request: Request, member_id: int, member_number: str) -> JSONResponse:
    token = request.app.state.token_issuer.for_member(member_id, member_number)
    body = {
        "access_token": token.access_token,
        "token_type": "Bearer",
        "expires_in": token.expires_in,
        "scope": token.scope,
    }
    return JSONResponse(body, headers=NO_STORE)


def _client_ip(request: Request) -> str:
    """The peer address (uvicorn rewrites it from X-Forwarded-For only for trusted proxies)."""
    return request.client.host if request.client is not None else "unknown"


async def otp_endpoint(request: Request) -> JSONResponse:
    """``POST /oauth/otp`` with ``phone``: a sign-in code by SMS. The same answer for any phone."""
    sender: SmsSender | None = request.app.state.sms_sender
    if sender is None:
        return _not_found()
    form = await _form(request, json_allowed=True)
    if isinstance(form, JSONResponse):
        return form
    try:
        phone = normalize_phone(form.get("phone", ""))
    except DomainError as error:
        return oauth_error("invalid_request", error.message)
    settings = _settings(request)
    db: Database = request.app.state.db
    try:
        async with db.transaction(AUTH) as session:
            issued = await otp.issue_code(session, phone, _client_ip(request), settings)
    except otp.RateLimited as limited:
        headers = NO_STORE | {"Retry-After": str(limited.retry_after)}
        body = {
            "error": "slow_down",
            "error_description": limited.message,
            "retry_after": limited.retry_after,
        }
        return JSONResponse(body, status_code=429, headers=headers)
    # Sent after the response: a member's answer takes no longer than anyone else's.
    text = otp.sms_text(issued.code, issued.expires_in)
    task = BackgroundTask(_send, sender, phone, text) if issued.member else None
    body = {"expires_in": issued.expires_in, "resend_in": settings.otp_resend_seconds}
    return JSONResponse(body, headers=NO_STORE, background=task)


async def _send(sender: SmsSender, phone: str, text: str) -> None:
    try:
        await sender.send(phone, text)
    except Exception:
        log.exception("sms_failed", phone=phone)


async def _phone_otp_grant(request: Request, form: dict[str, str]) -> JSONResponse:
    if request.app.state.sms_sender is None:
        return oauth_error("unsupported_grant_type", "phone sign-in is not enabled")
    try:
        phone = normalize_phone(form.get("phone", ""))
    except DomainError as error:
        return oauth_error("invalid_request", error.message)
    code = form.get("code", "").strip()
    if not code:
        return oauth_error("invalid_request", "code is required")
    db: Database = request.app.state.db
    async with db.transaction(AUTH) as session:
        verdict = await otp.check_code(session, phone, code, _settings(request))
    if isinstance(verdict, otp.Refused):
        return oauth_error("invalid_grant", verdict.message)
    await request.app.state.refresh_keys_if_stale()
    return _member_token(request, verdict.member_id, verdict.member_number)


async def _demo_member_grant(request: Request, form: dict[str, str]) -> JSONResponse:
    if not _settings(request).demo:
        return oauth_error("unsupported_grant_type", "demo sign-in exists only in demo mode")
    number = form.get("member_number", "")
    personas = await demo.demo_members(request.app.state.db)
    persona = next((p for p in personas if p.member_number == number), None)
    if persona is None:
        return oauth_error("invalid_grant", "not a demo member")
    await request.app.state.refresh_keys_if_stale()
    return _member_token(request, persona.member_id, persona.member_number)


MEMBER_GRANTS: dict[str, Callable[[Request, dict[str, str]], Awaitable[JSONResponse]]] = {
    PHONE_OTP_GRANT: _phone_otp_grant,
    DEMO_MEMBER_GRANT: _demo_member_grant,
}


async def demo_endpoint(request: Request) -> JSONResponse:
    """``GET /oauth/demo`` (demo mode only): the demo members and the demo API clients.

    Demo credentials are public by design: they are printed by ``alliance serve --demo`` and
    written in the README.
    """
    if not _settings(request).demo:
        return _not_found()
    members = await demo.demo_members(request.app.state.db)
    body = {
        "members": [
            {"memberNumber": m.member_number, "name": m.name, "phone": mask_phone(m.phone)} for m in members
        ],
        "clients": [
            {
                "role": c.role,
                "tenant": c.tenant,
                "tenantName": c.tenant_name,
                "clientId": c.client_id,
                "clientSecret": c.client_secret,
            }
            for c in demo.demo_credentials()
        ],
    }
    return JSONResponse(body, headers=NO_STORE)


async def providers_endpoint(request: Request) -> JSONResponse:
    """``GET /oauth/providers``: how members may sign in here (what the sign-in page offers)."""
    settings = _settings(request)
    body = {
        "phoneOtp": request.app.state.sms_sender is not None,
        "demo": settings.demo,
        "providers": [
            {
                "issuer": p["issuer"],
                "name": p.get("name", p["issuer"]),
                "authorizationEndpoint": p["authorization_endpoint"],
                "tokenEndpoint": p["token_endpoint"],
                "clientId": p["client_id"],
                "scope": p.get("scope", "openid phone"),
            }
            for p in settings.member_oidc_providers
        ],
    }
    return JSONResponse(body, headers={"Cache-Control": "no-cache"})
