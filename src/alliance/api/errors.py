"""Every GraphQL error leaves with a stable ``extensions.code``; nothing internal leaks.

Validation and parse errors keep their message (the client wrote the query); FORBIDDEN and
domain refusals raised from queries keep theirs; a database that refuses connections (overload:
max_connections reached, a pool with none to give, a failover under way) is SERVICE_UNAVAILABLE
with a Retry-After, so a client backs off and retries — with its idempotency key, safely;
anything else becomes INTERNAL_ERROR with a generic message, and the real exception goes to the
server log only.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import sqlalchemy.exc
from graphql.error import GraphQLError
from strawberry.extensions import MaskErrors

from alliance.errors import DomainError

log = logging.getLogger("alliance.api")

FORBIDDEN = "FORBIDDEN"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
RETRY_AFTER_SECONDS = 1
_UNAVAILABLE = (
    asyncpg.TooManyConnectionsError,  # max_connections, or the role's connection limit
    asyncpg.CannotConnectNowError,  # starting up, shutting down, in recovery
    asyncpg.ConnectionDoesNotExistError,  # dropped mid-statement (a failover)
    ConnectionRefusedError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection free within the pool's timeout
)
MAX_CAUSES = 8  # how far down a chain of wrapped exceptions to look


def forbidden(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": FORBIDDEN})


INTERNAL_MESSAGE = "Internal error."
UNAVAILABLE_MESSAGE = "the service is busy: retry in a moment with the same idempotency key"


class StableErrors(MaskErrors):
    """`stable_error` on every error of an operation (the Retry-After of SERVICE_UNAVAILABLE is
    set where the HTTP answer is shaped: `alliance.api.app.AllianceGraphQL.execute_single`)."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=lambda _: True, error_message=INTERNAL_MESSAGE)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        return stable_error(error)


def stable_error(error: GraphQLError) -> GraphQLError:
    """``error`` as it may leave: with a stable code, and without anything internal."""
    original = error.original_error
    if original is None:
        code = (error.extensions or {}).get("code", "GRAPHQL_VALIDATION_FAILED")
        return _with_code(error, error.message, code, error.extensions)
    if isinstance(original, GraphQLError) and (original.extensions or {}).get("code"):
        return _with_code(error, original.message, original.extensions["code"])
    if isinstance(original, DomainError):
        extensions = {"code": original.code} | ({"field": original.field} if original.field else {})
        return GraphQLError(original.message, nodes=error.nodes, path=error.path, extensions=extensions)
    if isinstance(original, ValueError) and error.path is None:
        return _with_code(error, error.message, "BAD_USER_INPUT")
    if database_unavailable(original):
        log.warning("database unavailable in %s: %s", error.path, original)
        return unavailable(error)
    log.error("unhandled error in %s", error.path, exc_info=original)
    return _with_code(error, INTERNAL_MESSAGE, "INTERNAL_ERROR")


def unavailable(error: GraphQLError | None = None) -> GraphQLError:
    """SERVICE_UNAVAILABLE, at ``error``'s place in the operation if given."""
    extensions = {"code": SERVICE_UNAVAILABLE, "retryAfterSeconds": RETRY_AFTER_SECONDS}
    if error is None:
        return GraphQLError(UNAVAILABLE_MESSAGE, extensions=extensions)
    return _with_code(error, UNAVAILABLE_MESSAGE, SERVICE_UNAVAILABLE, extensions)


def asks_to_retry(error: GraphQLError) -> bool:
    """Whether the client should retry after RETRY_AFTER_SECONDS."""
    return (error.extensions or {}).get("code") == SERVICE_UNAVAILABLE


def _with_code(
    error: GraphQLError, message: str, code: str, extensions: dict[str, Any] | None = None
) -> GraphQLError:
    """The error with ``code``; ``extensions`` (our own errors' details) are kept."""
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={**(extensions or {}), "code": code},
    )


def database_unavailable(error: BaseException) -> bool:
    """Whether ``error``, or what caused it (SQLAlchemy wraps the driver's exceptions), says that
    PostgreSQL could not be reached or the pool had no connection: overload to retry, not a bug."""
    current: BaseException | None = error
    for _ in range(MAX_CAUSES):
        if current is None:
            return False
        if isinstance(current, _UNAVAILABLE):
            return True
        current = current.__cause__ or current.__context__
    return False
