"""``POST /oauth/token`` (client-credentials grant) and ``GET /.well-known/jwks.json``.

A small Starlette adapter that follows RFC 6749 §4.4 and §5.2: client authentication by
HTTP Basic (client_secret_basic) or form fields (client_secret_post), never both; errors as
``{"error": ..., "error_description": ...}`` with ``Cache-Control: no-store``.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qsl, unquote

from starlette.requests import Request
from starlette.responses import JSONResponse

from alliance.auth.clients import authenticate_client
from alliance.auth.tokens import TokenIssuer
from alliance.db import Database
from alliance.db.database import AUTH
from alliance.tenants.models import Tenant

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


async def token_endpoint(request: Request) -> JSONResponse:
    db: Database = request.app.state.db
    issuer: TokenIssuer = request.app.state.token_issuer
    if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
        return oauth_error("invalid_request", "the body must be application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return oauth_error("invalid_request", "request body too large")
    try:
        form = dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False, max_num_fields=20))
    except (UnicodeDecodeError, ValueError):
        return oauth_error("invalid_request", "malformed form body")
    grant_type = form.get("grant_type")
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
