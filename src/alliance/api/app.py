"""The Starlette application: routes, bearer authentication for /graphql, health probes."""

from __future__ import annotations

import gc
import hmac
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from sqlmodel import select
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from alliance.api.context import Context, Services
from alliance.api.oauth import jwks_endpoint, token_endpoint
from alliance.api.schema import build_schema
from alliance.api.transport import GraphQLOverHTTP
from alliance.auth.keys import KeyRing, ensure_signing_key
from alliance.auth.oidc import ExternalIssuer, unverified_issuer, verified_phone
from alliance.auth.principal import DEFAULT_SCOPES, Principal
from alliance.auth.tokens import InvalidToken, TokenIssuer
from alliance.config import Settings
from alliance.db import Database
from alliance.db.database import OPERATOR
from alliance.db.migrate import is_current
from alliance.members.models import Member

KEY_RELOAD_ON_UNKNOWN_KID_SECONDS = 5.0
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,128}")
access_log = structlog.get_logger("alliance.access")
DB_POOL_IN_USE = Gauge("alliance_db_pool_connections_in_use", "Connections checked out of the pool")


class AllianceGraphQL(GraphQL[Context, None]):
    async def get_context(self, request: Request, response: Response) -> Context:  # type: ignore[override]
        return Context(
            request=request, services=request.app.state.services, principal=request.state.principal
        )

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:  # type: ignore[override]
        """Every error leaves with a code, even one raised before the extensions ran (a cached parse)."""
        response = await super().process_result(request, result)
        for error in response.get("errors") or []:
            error.setdefault("extensions", {}).setdefault("code", "GRAPHQL_VALIDATION_FAILED")
        return response


def _unauthorized(description: str) -> JSONResponse:
    header = f'Bearer error="invalid_token", error_description="{description}"'
    return JSONResponse(
        {"errors": [{"message": description, "extensions": {"code": "UNAUTHENTICATED"}}]},
        status_code=401,
        headers={"WWW-Authenticate": header},
    )


class RequestContext:
    """A request id for every request (the caller's `X-Request-ID` or a new one), bound to every
    log line, echoed in the response, and one access-log line per request."""

    def __init__(self, app: ASGIApp, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        supplied = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = supplied if REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log:
                access_log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
            structlog.contextvars.clear_contextvars()


class BearerAuthenticated:
    """Every /graphql request carries a valid bearer token, except a browser loading GraphiQL."""

    def __init__(self, app: GraphQL[Context, None], allow_graphiql: bool) -> None:
        self.app = app
        self.allow_graphiql = allow_graphiql

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        wants_page = request.method == "GET" and "text/html" in request.headers.get("accept", "")
        if wants_page and self.allow_graphiql:
            await self.app(scope, receive, send)
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            response: Response = JSONResponse(
                {
                    "errors": [
                        {"message": "a bearer token is required", "extensions": {"code": "UNAUTHENTICATED"}}
                    ]
                },
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="alliance"'},
            )
            await response(scope, receive, send)
            return
        try:
            principal = await authenticate(request, token.strip())
        except InvalidToken:
            await _unauthorized("the access token is invalid or expired")(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        structlog.contextvars.bind_contextvars(
            principal=principal.kind, tenant_id=principal.tenant_id, client_id=principal.client_id
        )
        await self.app(scope, receive, send)


async def authenticate(request: Request, token: str) -> Principal:
    state = request.app.state
    issuer: TokenIssuer = state.token_issuer
    external = state.external_issuers.get(unverified_issuer(token) or "")
    if external is not None:
        return await member_from_external(state.db, external, token)
    try:
        return issuer.verify(token)
    except InvalidToken:
        # Another replica may have rotated the key moments ago: reload once, at a bounded rate.
        if time.monotonic() - state.keyring.loaded_at < KEY_RELOAD_ON_UNKNOWN_KID_SECONDS:
            raise
        await state.reload_keys()
        return issuer.verify(token)


async def member_from_external(db: Database, external: ExternalIssuer, token: str) -> Principal:
    """A member principal for a valid token of a configured OIDC issuer (by its verified phone)."""
    phone = await verified_phone(external, token)
    async with db.transaction(OPERATOR) as session:
        member = (await session.exec(select(Member).where(Member.phone == phone))).first()
    if member is None or member.id is None or member.status != "active":
        raise InvalidToken("no active alliance member has this phone number")
    return Principal(
        "member", f"member:{member.member_number}", DEFAULT_SCOPES["member"], member_id=member.id
    )


async def metrics(request: Request) -> Response:
    """Prometheus metrics, for a scraper holding the metrics token (off when none is set)."""
    token = request.app.state.services.settings.metrics_token
    if not token:
        return PlainTextResponse("not found", status_code=404)
    supplied = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(supplied.encode(), token.encode()):
        return PlainTextResponse("unauthorized", status_code=401, headers={"WWW-Authenticate": "Bearer"})
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> JSONResponse:
    db: Database = request.app.state.db
    try:
        async with db.engine.connect() as connection:
            current = await is_current(connection)
    except Exception:
        return JSONResponse({"status": "database unreachable"}, status_code=503)
    if not current:
        return JSONResponse({"status": "migrations pending"}, status_code=503)
    return JSONResponse({"status": "ready"})


def create_app(owner_url: str, settings: Settings) -> Starlette:
    db = Database(owner_url, settings)
    DB_POOL_IN_USE.set_function(lambda: db.engine.pool.checkedout())  # type: ignore[attr-defined]
    keyring = KeyRing(
        max_token_ttl_seconds=max(settings.access_token_ttl_seconds, settings.member_token_ttl_seconds)
    )

    async def reload_keys() -> None:
        async with db.transaction(OPERATOR) as session:
            await keyring.load(session)

    async def refresh_keys_if_stale() -> None:
        if keyring.is_stale():
            await reload_keys()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with db.transaction(OPERATOR) as session:
            await ensure_signing_key(session)
        await reload_keys()
        # What exists now (schema, types, pools) lives as long as the process: out of the
        # collector's way, so its collections stop walking it on every request (~10 % of an
        # earn's CPU, ~15 % of a 1000-item batch's, measured with bench/ledger.py).
        gc.freeze()
        yield
        await db.close()

    graphql = AllianceGraphQL(build_schema(settings), graphql_ide="graphiql" if settings.graphiql else None)
    app = Starlette(
        routes=[
            Route(
                "/graphql",
                GraphQLOverHTTP(BearerAuthenticated(graphql, settings.graphiql)),
                methods=["GET", "POST"],
            ),
            Route("/oauth/token", token_endpoint, methods=["POST"]),
            Route("/.well-known/jwks.json", jwks_endpoint, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        lifespan=lifespan,
        middleware=[Middleware(RequestContext, access_log=settings.access_log)],
    )
    app.state.db = db
    app.state.services = Services(settings=settings, db=db)
    app.state.keyring = keyring
    app.state.external_issuers = {
        entry["issuer"]: ExternalIssuer(entry["issuer"], entry["jwks_url"], entry["audience"])
        for entry in settings.member_oidc_issuers
    }
    app.state.token_issuer = TokenIssuer(settings, keyring)
    app.state.reload_keys = reload_keys
    app.state.refresh_keys_if_stale = refresh_keys_if_stale
    return app


def create_app_from_environment() -> Starlette:
    """The app for a uvicorn worker process (``alliance serve --workers N``); needs DATABASE_URL."""
    from alliance.config import get_settings

    settings = get_settings()
    assert settings.database_url, "worker processes are started with DATABASE_URL set"
    return create_app(settings.database_url, settings)
