"""The Starlette application: routes, bearer authentication for /graphql, health probes."""

from __future__ import annotations

import gc
import hmac
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from sqlmodel import select
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.async_base_view import AsyncHTTPRequestAdapter
from strawberry.http.base import BaseRequestProtocol
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from alliance.api.context import Context, Services
from alliance.api.errors import (
    RETRY_AFTER_SECONDS,
    asks_to_retry,
    database_unavailable,
    stable_error,
    unavailable,
)
from alliance.api.oauth import (
    demo_endpoint,
    jwks_endpoint,
    otp_endpoint,
    providers_endpoint,
    token_endpoint,
)
from alliance.api.persisted import PersistedQueries, PersistedQueryError, requested_hash
from alliance.api.schema import build_schema
from alliance.api.transport import GraphQLOverHTTP, is_request_error, refuse_mutation_over_get
from alliance.api.web import web_routes
from alliance.auth.keys import KeyRing, ensure_signing_key
from alliance.auth.oidc import ExternalIssuer, unverified_claim, unverified_issuer, verified_phone
from alliance.auth.principal import DEFAULT_SCOPES, Principal
from alliance.auth.revocation import RevokedClients
from alliance.auth.sms import sms_sender_from_settings
from alliance.auth.tokens import InvalidToken, TokenIssuer
from alliance.config import Settings
from alliance.db import Database
from alliance.db.database import OPERATOR
from alliance.db.migrate import is_current
from alliance.jobs import latest_runs
from alliance.ledger.live import BalanceHub
from alliance.members.models import Member
from alliance.observability import job_metrics
from alliance.ratelimit import RateLimiter

KEY_RELOAD_ON_UNKNOWN_KID_SECONDS = 5.0
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,128}")
access_log = structlog.get_logger("alliance.access")
log = structlog.get_logger("alliance.api")
DB_POOL_IN_USE = Gauge("alliance_db_pool_connections_in_use", "Connections checked out of the pool")
MAX_SUBSCRIPTIONS_PER_CONNECTION = 10


class AllianceGraphQL(GraphQL[Context, None]):
    """GraphQL over HTTP (bearer token checked before) and over WebSocket (graphql-transport-ws,
    subscriptions only; the token comes in the ``connection_init`` payload)."""

    async def get_context(self, request: HTTPConnection, response: object) -> Context:  # type: ignore[override]
        if isinstance(request, WebSocket):
            return Context(request=request, services=request.app.state.services, authenticated=None)
        assert isinstance(response, Response)
        return Context(
            request=request,
            response=response,
            services=request.app.state.services,
            authenticated=request.state.principal,
        )

    def encode_json(self, data: object) -> str:
        """The answer's JSON (HTTP and WebSocket), by orjson: a batch answer has 1000 results,
        and the standard library's encoder was ~3 % of the server's CPU on the batch benchmark."""
        return orjson.dumps(data).decode()

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        """``{"Authorization": "Bearer <token>"}``, verified exactly as over HTTP; else close 4403."""
        params = context.connection_params or {}
        header = params.get("Authorization", params.get("authorization"))
        scheme, _, token = header.partition(" ") if isinstance(header, str) else ("", "", "")
        if scheme.lower() != "bearer" or not token.strip():
            raise ConnectionRejectionError({"message": "a bearer token is required"})
        try:
            context.authenticated = await authenticate(context.request, token.strip())
        except InvalidToken as exc:
            raise ConnectionRejectionError({"message": "the access token is invalid or expired"}) from exc
        expires_at = unverified_claim(token.strip(), "exp")  # verified just now
        context.token_expires_at = expires_at if isinstance(expires_at, int) else None
        return UNSET

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:  # type: ignore[override]
        """Every error leaves with a code, even one raised before the extensions ran (a cached parse);
        a request error (nothing executed) has no ``data`` entry, as the GraphQL spec asks."""
        response = await super().process_result(request, result)
        for error in response.get("errors") or []:
            error.setdefault("extensions", {}).setdefault("code", "GRAPHQL_VALIDATION_FAILED")  # type: ignore[union-attr]
        if is_request_error(response.get("data"), response.get("errors")):  # type: ignore[arg-type]
            response.pop("data", None)
        return response

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        """Not for a GET naming a persisted query (it has ``extensions`` and no ``query``)."""
        return super().should_render_graphql_ide(request) and not request.query_params.get("extensions")

    async def execute_single(  # type: ignore[override]
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Persisted queries resolved to their text, mutations over GET refused, then execution."""
        persisted: PersistedQueries = request.app.state.persisted_queries
        query = request_data.query
        try:
            sha256 = requested_hash(request_data.extensions)
            if sha256 is not None:
                query = await persisted.resolve(sha256, query)
        except PersistedQueryError as error:
            return ExecutionResult(data=None, errors=[error.as_graphql_error()])
        except Exception as error:
            if not database_unavailable(error):
                raise
            log.warning("database unavailable looking up a persisted query: %s", error)
            sub_response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return ExecutionResult(data=None, errors=[unavailable()])
        refused = refuse_mutation_over_get(
            request_adapter.method, query, request_data.operation_name, sub_response
        )
        if refused is not None:
            return refused
        result = await super().execute_single(
            request, request_adapter, sub_response, context, root_value, replace(request_data, query=query)
        )
        if result.errors:
            # An exception raised by an extension's hook (the rate limiter's take, say) is turned
            # into an error outside the operation, where StableErrors does not see it.
            result.errors = [stable_error(e) if e.original_error is not None else e for e in result.errors]
            if any(asks_to_retry(e) for e in result.errors):
                sub_response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        executed = result.data is not None or any(e.path for e in result.errors or [])
        if sha256 is not None and request_data.query is not None and executed:
            try:
                await persisted.register(sha256, request_data.query)
            except Exception as error:
                if not database_unavailable(error):
                    raise
                # The answer is ready; a later request with the full query registers it.
                log.warning("database unavailable registering a persisted query: %s", error)
        return result


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
        wants_page = (
            request.method == "GET"
            and "text/html" in request.headers.get("accept", "")
            and not request.query_params.get("query")
            and not request.query_params.get("extensions")
        )
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


async def authenticate(request: HTTPConnection, token: str) -> Principal:
    state = request.app.state
    issuer: TokenIssuer = state.token_issuer
    external = state.external_issuers.get(unverified_issuer(token) or "")
    if external is not None:
        return await member_from_external(state.db, external, token)
    try:
        principal = issuer.verify(token)
    except InvalidToken:
        # Another replica may have rotated the key moments ago: reload once, at a bounded rate.
        if time.monotonic() - state.keyring.loaded_at < KEY_RELOAD_ON_UNKNOWN_KID_SECONDS:
            raise
        await state.reload_keys()
        principal = issuer.verify(token)
    if principal.client_id is not None:
        await state.refresh_revocations_if_stale()
        if principal.client_id in state.revoked_clients:
            raise InvalidToken("the client was revoked")
    return principal


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
    body = generate_latest()
    try:
        async with request.app.state.db.transaction(OPERATOR) as session:
            body += job_metrics(await latest_runs(session))
    except Exception:  # the process's own metrics are still worth serving without the database
        log.warning("job metrics unavailable: the database did not answer", exc_info=True)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


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
    balances = BalanceHub(db.listen_dsn())
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

    revoked_clients = RevokedClients(settings.access_token_ttl_seconds)

    async def refresh_revocations_if_stale() -> None:
        if not revoked_clients.is_stale():
            return
        async with revoked_clients.reloading:
            if revoked_clients.is_stale():  # another request may have reloaded while we waited
                async with db.transaction(OPERATOR) as session:
                    await revoked_clients.load(session)

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
        await balances.close()
        await db.close()

    graphql = AllianceGraphQL(
        build_schema(settings),
        graphql_ide="graphiql" if settings.graphiql else None,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        connection_init_wait_timeout=timedelta(seconds=10),
        max_subscriptions_per_connection=MAX_SUBSCRIPTIONS_PER_CONNECTION,
    )
    app = Starlette(
        routes=[
            Route(
                "/graphql",
                GraphQLOverHTTP(BearerAuthenticated(graphql, settings.graphiql)),
                methods=["GET", "POST"],
            ),
            WebSocketRoute("/graphql", graphql),
            Route("/oauth/token", token_endpoint, methods=["POST"]),
            Route("/oauth/otp", otp_endpoint, methods=["POST"]),
            Route("/oauth/demo", demo_endpoint, methods=["GET"]),
            Route("/oauth/providers", providers_endpoint, methods=["GET"]),
            Route("/.well-known/jwks.json", jwks_endpoint, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *web_routes(settings),
        ],
        lifespan=lifespan,
        middleware=[Middleware(RequestContext, access_log=settings.access_log)],
    )
    app.state.db = db
    app.state.services = Services(
        settings=settings, db=db, rate_limiter=RateLimiter.from_settings(db, settings), balances=balances
    )
    app.state.keyring = keyring
    app.state.external_issuers = {
        entry["issuer"]: ExternalIssuer(entry["issuer"], entry["jwks_url"], entry["audience"])
        for entry in settings.member_oidc_issuers
    }
    app.state.token_issuer = TokenIssuer(settings, keyring)
    app.state.persisted_queries = PersistedQueries(db, settings.persisted_queries_max)
    app.state.sms_sender = sms_sender_from_settings(settings)
    app.state.reload_keys = reload_keys
    app.state.refresh_keys_if_stale = refresh_keys_if_stale
    app.state.revoked_clients = revoked_clients
    app.state.refresh_revocations_if_stale = refresh_revocations_if_stale
    return app


def create_app_from_environment() -> Starlette:
    """The app for a uvicorn worker process (``alliance serve --workers N``); needs DATABASE_URL."""
    from alliance.config import get_settings

    settings = get_settings()
    assert settings.database_url, "worker processes are started with DATABASE_URL set"
    return create_app(settings.database_url, settings)
