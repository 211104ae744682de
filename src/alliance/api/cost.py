"""Query cost and rate limiting (Shopify's model).

Cost of a selection, field by field:

* a scalar or enum field: 0;
* an object field: 1 + the cost of its selections;
* a connection (a type named ``...Connection`` with ``edges``): 2 + n × the cost of one edge's
  selections (``node`` is an object field; ``pageInfo`` is part of the 2), where n is ``first``
  (the maximum page size when absent) up front, and the number of edges returned afterwards;
* a list of objects that is not a connection: 1 + its selections per element. Up front such a
  list counts as one element (they are short: balances per asset, breakdown lines, user
  errors); a longer one (``earnPointsBatch`` results) is charged in full afterwards;
* a mutation field: 10 + the cost of its payload's selections;
* fragments count where they are spread; on an abstract type every branch counts (an upper bound);
* introspection (``__schema``, ``__type``): 1, whatever is selected below it.

An operation costs at least 1. The requested cost is computed from the validated document and
the variables before execution; the actual cost from the same document and the returned data.
`QueryCost` charges the requested cost to the caller's bucket (`alliance.ratelimit`) and
settles the difference with the actual one; every response carries ``extensions.cost``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    get_nullable_type,
    is_leaf_type,
    is_list_type,
    value_from_ast_untyped,
)
from graphql.type import SchemaMetaFieldDef, TypeMetaFieldDef
from graphql.utilities import get_operation_ast
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType as StrawberryOperationType

from alliance.ratelimit import BucketSize

OBJECT_COST = 1
CONNECTION_COST = 2
MUTATION_COST = 10
THROTTLED = "THROTTLED"
MAX_COST_EXCEEDED = "MAX_COST_EXCEEDED"


class _Costing:
    """One walk of an operation: up front (``returned`` is None) or over the returned data."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        variables: dict[str, Any],
        max_page_size: int,
        estimate: bool,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.max_page_size = max_page_size
        self.estimate = estimate
        # The walk over returned data visits one selection set once per list element (1000 for a
        # full earnPointsBatch): its fields and their types are looked up once, not per element.
        self._field_lists: dict[tuple[int, str], list[tuple[FieldNode, GraphQLNamedType]]] = {}
        self._costed: dict[tuple[int, str], tuple[GraphQLField, GraphQLNamedType] | None] = {}

    def selections(self, selection_set: SelectionSetNode | None, parent: GraphQLNamedType, data: Any) -> int:
        return sum(self.field(node, owner, data) for node, owner in self._fields(selection_set, parent))

    def _fields(
        self, selection_set: SelectionSetNode | None, parent: GraphQLNamedType
    ) -> list[tuple[FieldNode, GraphQLNamedType]]:
        """The fields of a selection set with fragments spread, each with the type it is selected on."""
        key = (id(selection_set), parent.name)
        found = self._field_lists.get(key)
        if found is None:
            found = self._field_lists[key] = list(self._spread(selection_set, parent))
        return found

    def _spread(
        self, selection_set: SelectionSetNode | None, parent: GraphQLNamedType
    ) -> Iterator[tuple[FieldNode, GraphQLNamedType]]:
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                yield selection, parent
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                owner = self.schema.get_type(condition.name.value) if condition else parent
                yield from self._spread(selection.selection_set, owner or parent)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is not None:
                    owner = self.schema.get_type(fragment.type_condition.name.value)
                    yield from self._spread(fragment.selection_set, owner or parent)

    def _costed_field(
        self, node: FieldNode, parent: GraphQLNamedType
    ) -> tuple[GraphQLField, GraphQLNamedType] | None:
        """The field's definition and named type, or None for a field that costs nothing (a scalar,
        an enum, ``__typename``)."""
        key = (id(node), parent.name)
        if key not in self._costed:
            definition = self._definition(parent, node.name.value)
            named = get_named_type(definition.type) if definition is not None else None
            costed = None
            if definition is not None and named is not None and not is_leaf_type(named):
                costed = (definition, named)
            self._costed[key] = costed
        return self._costed[key]

    def _definition(self, parent: GraphQLNamedType, name: str) -> GraphQLField | None:
        if name == "__schema":
            return SchemaMetaFieldDef
        if name == "__type":
            return TypeMetaFieldDef
        fields = getattr(parent, "fields", None)
        return fields.get(name) if fields else None  # None: __typename (or a union's field)

    def _value(self, node: FieldNode, data: Any) -> Any:
        key = node.alias.value if node.alias else node.name.value
        return data.get(key) if isinstance(data, dict) else None

    def field(self, node: FieldNode, parent: GraphQLNamedType, data: Any) -> int:
        costed = self._costed_field(node, parent)
        if costed is None:
            return 0
        definition, named = costed
        if definition is SchemaMetaFieldDef or definition is TypeMetaFieldDef:
            return OBJECT_COST  # introspection: static answers, whatever their size
        value = None if self.estimate else self._value(node, data)
        missing = not self.estimate and value is None  # not returned: costs nothing
        if parent is self.schema.mutation_type:
            return MUTATION_COST + (0 if missing else self.selections(node.selection_set, named, value))
        if missing:
            return 0
        if _is_connection(named):
            return CONNECTION_COST + self._connection(node, named, value)
        if is_list_type(get_nullable_type(definition.type)) and not self.estimate:
            return sum(self._object(node, named, item) for item in _items(value))
        return self._object(node, named, value)

    def _object(self, node: FieldNode, named: GraphQLNamedType, data: Any) -> int:
        return OBJECT_COST + self.selections(node.selection_set, named, data)

    def _connection(self, node: FieldNode, connection: GraphQLObjectType, data: Any) -> int:
        edge = get_named_type(connection.fields["edges"].type)
        total = 0
        for field, _ in self._fields(node.selection_set, connection):
            if field.name.value != "edges":
                continue  # pageInfo and scalars: covered by the connection's own 2
            if self.estimate:
                total += self._page_size(node) * self.selections(field.selection_set, edge, None)
            else:
                edges = _items(self._value(field, data))
                total += sum(self.selections(field.selection_set, edge, item) for item in edges)
        return total

    def _page_size(self, node: FieldNode) -> int:
        """``first`` (clamped to the maximum page size: the resolver refuses more), else the maximum."""
        for argument in node.arguments or ():
            if argument.name.value == "first":
                first = value_from_ast_untyped(argument.value, self.variables)
                if isinstance(first, int):
                    return min(max(first, 0), self.max_page_size)
        return self.max_page_size


def _is_connection(named: GraphQLNamedType) -> bool:
    """A Relay connection: a ``...Connection`` object type with ``edges``."""
    if not isinstance(named, GraphQLObjectType):
        return False
    return named.name.endswith("Connection") and "edges" in named.fields


def _items(value: Any) -> Iterator[Any]:
    for item in value if isinstance(value, list) else ():
        if isinstance(item, list):
            yield from _items(item)
        elif item is not None:
            yield item


def query_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: dict[str, Any] | None,
    max_page_size: int,
    returned: dict[str, Any] | None = None,
    *,
    executed: bool = False,
) -> int:
    """The requested cost of an operation, or (``executed``) its actual cost given ``returned`` data."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return OBJECT_COST
    root = schema.mutation_type if operation.operation is OperationType.MUTATION else schema.query_type
    assert root is not None, "a validated operation has a root type"
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    costing = _Costing(schema, fragments, variables or {}, max_page_size, estimate=not executed)
    return max(OBJECT_COST, costing.selections(operation.selection_set, root, returned))


def _refusal(code: str, message: str, **extensions: Any) -> ExecutionResult:
    return ExecutionResult(data=None, errors=[GraphQLError(message, extensions={"code": code, **extensions})])


class QueryCost(SchemaExtension):
    """Charges each operation to its caller's bucket; refuses it when the bucket cannot pay."""

    def __init__(self) -> None:
        self.report: dict[str, Any] | None = None

    async def on_execute(self) -> AsyncIterator[None]:
        run = self.execution_context
        limiter = run.context.services.rate_limiter
        if not limiter.enabled or run.operation_type is StrawberryOperationType.SUBSCRIPTION:
            # A subscription is one long-lived operation over a WebSocket, not a request to meter.
            yield
            return
        principal = run.context.principal
        size: BucketSize = limiter.sizes[principal.kind]
        bucket = principal.idempotency_scope  # one API client, or one member
        schema = run.schema._schema
        max_page_size = run.context.settings.max_page_size
        assert run.graphql_document is not None, "costs are computed after validation"
        requested = query_cost(schema, run.graphql_document, run.operation_name, run.variables, max_page_size)
        if requested > size.maximum:
            take = await limiter.take(bucket, 0, size)
            self.report = _report(requested, None, size, take.available)
            run.result = _refusal(
                MAX_COST_EXCEEDED,
                f"the query's cost is {requested}, more than the maximum of {size.maximum}: "
                "ask for fewer nodes",
            )
            yield
            return
        take = await limiter.take(bucket, requested, size)
        if not take.granted:
            retry_after = take.seconds_until(requested, size)
            assert run.context.response is not None, "queries and mutations come over HTTP"
            run.context.response.headers["Retry-After"] = str(retry_after)
            self.report = _report(requested, None, size, take.available)
            run.result = _refusal(
                THROTTLED, f"Throttled: retry in {retry_after} s", retryAfterSeconds=retry_after
            )
            yield
            return
        yield
        data = run.result.data if run.result is not None else None
        document, operation, variables = run.graphql_document, run.operation_name, run.variables
        actual = query_cost(schema, document, operation, variables, max_page_size, data, executed=True)
        limiter.settle_later(bucket, requested - actual)
        self.report = _report(requested, actual, size, min(size.maximum, take.available + requested - actual))

    def get_results(self) -> dict[str, Any]:
        return {"cost": self.report} if self.report is not None else {}


def _report(requested: int, actual: int | None, size: BucketSize, available: Decimal) -> dict[str, Any]:
    return {
        "requestedQueryCost": requested,
        "actualQueryCost": actual,
        "throttleStatus": {
            "maximumAvailable": size.maximum,
            "currentlyAvailable": math.floor(available),  # below 0 while a debt is restored
            "restoreRate": size.restore_rate,
        },
    }
