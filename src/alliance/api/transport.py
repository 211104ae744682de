"""GraphQL-over-HTTP details strawberry leaves to us (the GraphQL over HTTP specification):

* a mutation sent with GET is refused with 405 and ``Allow: POST`` (GET must be safe) — in
  `refuse_mutation_over_get`, called by the view once a persisted query's text is known;
* a request error (nothing executed: a parse or validation error, a persisted query not found,
  a refusal by the rate limiter) answers without a ``data`` entry (the view drops it);
* a client that accepts ``application/graphql-response+json`` gets that media type, and a
  request error gets 400 — or 429 when the rate limiter refused it (THROTTLED; the
  ``Retry-After`` header says when to retry). ``application/json`` keeps 200 for both, as
  GraphQL clients and Shopify's API do;
* a WebSocket (graphql-transport-ws) carries subscriptions, and only it does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType as StrawberryOperationType

from alliance.api.cost import THROTTLED
from alliance.api.errors import SERVICE_UNAVAILABLE

GRAPHQL_RESPONSE = "application/graphql-response+json"
MAX_BUFFERED_BYTES = 8 * 1024 * 1024


def _is_mutation(query: str, operation_name: str | None) -> bool:
    try:
        document = parse(query, max_tokens=5000)
    except GraphQLError:
        return False  # not parseable: the server answers with its parse error
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    chosen = [d for d in operations if operation_name is None or (d.name and d.name.value == operation_name)]
    return any(d.operation is not OperationType.QUERY for d in chosen[:1])


def refuse_mutation_over_get(
    method: str, query: str | None, operation_name: str | None, response: Response
) -> ExecutionResult | None:
    """A 405 answer for a mutation sent with GET (setting ``response``'s status and Allow), else None."""
    if method != "GET" or not query or not _is_mutation(query, operation_name):
        return None
    response.status_code = 405
    response.headers["Allow"] = "POST"
    error = GraphQLError("mutations must be sent with POST", extensions={"code": "METHOD_NOT_ALLOWED"})
    return ExecutionResult(data=None, errors=[error])


def is_request_error(data: object, errors: list[dict[str, Any]] | None) -> bool:
    """Nothing executed: errors, no data, and no error belongs to a field (no "path")."""
    return bool(errors) and data is None and not any("path" in e for e in errors or [])


class GraphQLOverHTTP:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        accept = dict(scope.get("headers") or []).get(b"accept", b"").decode("latin-1")
        if GRAPHQL_RESPONSE not in accept:
            await self.app(scope, receive, send)
            return
        await self._as_graphql_response(scope, receive, send)

    async def _as_graphql_response(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer the JSON answer to set the media type and, when nothing executed, the status."""
        start: Message | None = None
        body = bytearray()

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            body.extend(message.get("body", b""))
            assert len(body) <= MAX_BUFFERED_BYTES, "GraphQL responses are bounded by the query limits"
            if message.get("more_body"):
                return
            assert start is not None
            headers = [
                (k, v)
                for k, v in start.get("headers", [])
                if k.lower() not in (b"content-type", b"content-length")
            ]
            status = start["status"]
            if status == 200:
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {}
                if isinstance(payload, dict) and is_request_error(payload.get("data"), payload.get("errors")):
                    codes = {(e.get("extensions") or {}).get("code") for e in payload["errors"]}
                    status = 429 if THROTTLED in codes else 503 if SERVICE_UNAVAILABLE in codes else 400
            headers += [
                (b"content-type", GRAPHQL_RESPONSE.encode() + b"; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": bytes(body)})

        await self.app(scope, receive, capture)


class WebSocketForSubscriptionsOnly(SchemaExtension):
    """Subscriptions run over a WebSocket (graphql-transport-ws) and nothing else does: queries and
    mutations go over HTTP, where the request id, the access log and the rules above apply."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        over_websocket = isinstance(getattr(context.context, "request", None), WebSocket)
        subscription = context.operation_type is StrawberryOperationType.SUBSCRIPTION
        if over_websocket and not subscription:
            raise GraphQLError("queries and mutations are sent over HTTP", extensions={"code": "BAD_REQUEST"})
        if subscription and not over_websocket:
            raise GraphQLError(
                "subscriptions are served over WebSocket (graphql-transport-ws) at /graphql",
                extensions={"code": "BAD_REQUEST"},
            )
        yield
