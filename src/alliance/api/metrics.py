"""Per-operation request metrics: count by operation and outcome, and latency."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from graphql import OperationDefinitionNode
from strawberry.extensions import SchemaExtension

from alliance.api.cost import THROTTLED
from alliance.observability import GRAPHQL_LATENCY, GRAPHQL_REQUESTS


def _operation_name(document: Any, declared: str | None) -> str:
    """The client's operation name, else the first root field (``mutation:earnPoints``)."""
    if declared:
        return declared[:64]
    for definition in getattr(document, "definitions", ()):
        if isinstance(definition, OperationDefinitionNode) and definition.selection_set.selections:
            field = definition.selection_set.selections[0]
            return f"{definition.operation.value}:{getattr(getattr(field, 'name', None), 'value', '?')}"
    return "unparsed"


def _outcome(result: Any) -> str:
    errors = getattr(result, "errors", None)
    if errors and any((error.extensions or {}).get("code") == THROTTLED for error in errors):
        return "throttled"
    if result is None or errors:
        return "error"
    data = getattr(result, "data", None) or {}
    refused = any(isinstance(value, dict) and value.get("userErrors") for value in data.values())
    return "user_error" if refused else "ok"


# The operation being executed and a digest of its variables, for the audit trail.
current_operation: ContextVar[tuple[str, str]] = ContextVar("current_operation", default=("unknown", ""))


def _digest(query: str | None, variables: dict[str, Any] | None) -> str:
    """The request as sent (document and variables): inline literals count as much as variables."""
    canonical = json.dumps(
        {"query": query, "variables": variables or {}}, sort_keys=True, default=str, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class OperationMetrics(SchemaExtension):
    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        current_operation.set(
            (
                _operation_name(context.graphql_document, context.operation_name),
                _digest(context.query, context.variables),
            )
        )
        yield

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        context = self.execution_context
        name = _operation_name(context.graphql_document, context.operation_name)
        GRAPHQL_REQUESTS.labels(name, _outcome(context.result)).inc()
        GRAPHQL_LATENCY.labels(name).observe(time.perf_counter() - started)
