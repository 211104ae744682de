"""Every GraphQL error leaves with a stable ``extensions.code``; nothing internal leaks.

Validation and parse errors keep their message (the client wrote the query); FORBIDDEN and
domain refusals raised from queries keep theirs; anything else becomes INTERNAL_ERROR with
a generic message, and the real exception goes to the server log only.
"""

from __future__ import annotations

import logging
from typing import Any

from graphql.error import GraphQLError
from strawberry.extensions import MaskErrors

from alliance.errors import DomainError

log = logging.getLogger("alliance.api")

FORBIDDEN = "FORBIDDEN"


def forbidden(message: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": FORBIDDEN})


class StableErrors(MaskErrors):
    def __init__(self) -> None:
        super().__init__(should_mask_error=lambda _: True, error_message="Internal error.")

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        if original is None:
            code = (error.extensions or {}).get("code", "GRAPHQL_VALIDATION_FAILED")
            return self._with_code(error, error.message, code, error.extensions)
        if isinstance(original, GraphQLError) and (original.extensions or {}).get("code"):
            return self._with_code(error, original.message, original.extensions["code"])
        if isinstance(original, DomainError):
            extensions = {"code": original.code} | ({"field": original.field} if original.field else {})
            return GraphQLError(original.message, nodes=error.nodes, path=error.path, extensions=extensions)
        if isinstance(original, ValueError) and error.path is None:
            return self._with_code(error, error.message, "BAD_USER_INPUT")
        log.error("unhandled error in %s", error.path, exc_info=original)
        return self._with_code(error, self.error_message, "INTERNAL_ERROR")

    @staticmethod
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
