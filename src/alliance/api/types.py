"""Shared GraphQL shapes: the Node interface, Relay connections, user errors, scalars."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar

import strawberry
from strawberry.types.arguments import InputContext
from strawberry.types.base import StrawberryList, StrawberryMaybe, StrawberryOptional

from alliance.api.ids import to_cursor

T = TypeVar("T")
InputType = TypeVar("InputType", bound=type)

_LEAF_TYPES = (str, int, bool, Decimal, datetime, date)


def _parse_decimal(value: object) -> Decimal:
    if not isinstance(value, str):
        raise ValueError('Decimal values travel as JSON strings, e.g. "377.50"')
    try:
        parsed = Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal number: {value!r}") from exc
    if not parsed.is_finite():
        raise ValueError("Decimal must be finite")
    return parsed


DECIMAL_SCALAR = strawberry.scalar(
    name="Decimal",
    description='An exact decimal number, sent and received as a JSON string ("377.50").',
    serialize=str,
    parse_value=_parse_decimal,
)


def built_from_coerced_leaves(cls: InputType) -> InputType:
    """For an input type whose fields are all scalars (or lists or nulls of them): Strawberry
    builds it straight from the values graphql-core has already coerced (our Decimal included).

    Why: Strawberry's generic conversion resolves every field's type again for every value it
    converts: ~64 µs for one ``EarnPointsInput`` against ~6 µs here, and ~40 % of a 1000-item
    ``earnPointsBatch``'s server CPU (py-spy on ``alliance serve`` under ``bench/ledger.py``).
    This uses Strawberry's own hook for such builders, ``StrawberryObjectDefinition.from_input``.
    """
    definition = cls.__strawberry_definition__
    for field in definition.fields:
        annotation = field.resolve_type(type_definition=definition)
        while isinstance(annotation, StrawberryOptional | StrawberryList):
            assert not isinstance(annotation, StrawberryMaybe), "Maybe fields need Strawberry's Some()"
            annotation = annotation.of_type
        assert annotation in _LEAF_TYPES, f"{cls.__name__}.{field.python_name} is not a scalar"
    names: list[tuple[str, str]] = []  # (python name, GraphQL name), by the schema's own converter

    def from_input(type_: type, value: Mapping[str, Any], context: InputContext) -> Any:
        if not names:
            converter = context.config.name_converter
            names.extend((field.python_name, converter.from_field(field)) for field in definition.fields)
        # A list is copied: graphql-core hands every request that omits it the same default.
        return type_(
            **{
                python: list(value[graphql]) if isinstance(value[graphql], list) else value[graphql]
                for python, graphql in names
                if graphql in value
            }
        )

    definition.from_input = from_input
    return cls


def retry_key() -> str | None:
    """The optional ``idempotencyKey`` of a configuration mutation (money-moving ones require theirs)."""
    return strawberry.field(  # type: ignore[no-any-return]
        default=None, description="Optional: a retry with the same key returns what the first attempt made."
    )


@strawberry.interface(description="An object with a globally unique, opaque ID.")
class Node:
    id: strawberry.ID


@strawberry.type(description="A refusal the client can act on; nothing was written.")
class UserError:
    field: str | None = strawberry.field(description="The input field at fault, if one is.")
    code: str = strawberry.field(description="Stable machine-readable code, e.g. TENANT_CODE_TAKEN.")
    message: str


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo


def page_size(first: int | None, maximum: int) -> int:
    """The validated page size; callers fetch one more row to learn whether a next page exists."""
    from alliance.errors import DomainError

    size = maximum if first is None else first
    if not 1 <= size <= maximum:
        raise DomainError("INVALID_PAGE_SIZE", f"first must be between 1 and {maximum}", "first")
    return size


def build_connection(
    rows: Sequence[object],
    size: int,
    key: Callable[[object], int],
    to_node: Callable[[object], T],
    has_previous: bool,
) -> Connection[T]:
    """A connection from ``size + 1`` keyset-ordered rows (the extra row only signals a next page)."""
    visible = rows[:size]
    edges = [Edge(cursor=to_cursor(key(row)), node=to_node(row)) for row in visible]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > size,
            has_previous_page=has_previous,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )
