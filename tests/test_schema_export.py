"""The committed ``schema.graphql`` is the contract clients build against: it must match the code,
its changes are listed in ``SCHEMA_CHANGELOG.md``, and a deprecation says when the field goes."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from graphql import GraphQLSchema, build_schema

from alliance.api.schema import export_sdl

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schema.graphql"
CHANGELOG_FILE = SCHEMA_FILE.with_name("SCHEMA_CHANGELOG.md")
CHANGELOG_DIGEST = re.compile(r"^sha256 `([0-9a-f]{64})`$", re.MULTILINE)
REMOVAL = re.compile(r"Removal: (\d{4}-\d{2}-\d{2})\b")


def test_committed_schema_matches_the_code() -> None:
    assert SCHEMA_FILE.is_file(), f"{SCHEMA_FILE} is missing: run `alliance schema export`"
    committed = SCHEMA_FILE.read_text()
    assert committed == export_sdl(), (
        f"{SCHEMA_FILE.name} is out of date with the GraphQL schema in the code: "
        "run `alliance schema export` and commit the result"
    )


def deprecations(schema: GraphQLSchema) -> Iterator[tuple[str, str | None]]:
    """Every deprecated field, argument, input field and enum value, with its reason."""
    for type_name, named in schema.type_map.items():
        if type_name.startswith("__"):
            continue
        for field_name, field in getattr(named, "fields", {}).items():
            if field.deprecation_reason is not None:
                yield f"{type_name}.{field_name}", field.deprecation_reason
            for argument_name, argument in getattr(field, "args", {}).items():
                if argument.deprecation_reason is not None:
                    yield f"{type_name}.{field_name}({argument_name})", argument.deprecation_reason
        for value_name, value in getattr(named, "values", {}).items():
            if value.deprecation_reason is not None:
                yield f"{type_name}.{value_name}", value.deprecation_reason


def test_every_deprecation_names_a_removal_date() -> None:
    schema = build_schema(SCHEMA_FILE.read_text())
    for where, reason in deprecations(schema):
        found = REMOVAL.search(reason or "")
        assert found, f'{where}: a deprecation needs a reason ending "Removal: YYYY-MM-DD", got {reason!r}'
        date.fromisoformat(found.group(1))  # a real date


def test_deprecation_check_sees_every_kind_of_deprecation() -> None:
    schema = build_schema(
        """
        type Query { a(x: Int @deprecated(reason: "Removal: 2027-06-01")): Int @deprecated, e: E }
        input I { y: Int @deprecated(reason: "Use z. Removal: 2027-06-01") }
        enum E { ONE TWO @deprecated(reason: "gone soon") }
        """
    )
    found = dict(deprecations(schema))
    assert set(found) == {"Query.a", "Query.a(x)", "I.y", "E.TWO"}
    assert not REMOVAL.search(found["Query.a"] or ""), "a bare @deprecated has no removal date"
    assert not REMOVAL.search(found["E.TWO"] or "")


def test_the_changelog_describes_the_committed_schema() -> None:
    digest = hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()
    recorded = CHANGELOG_DIGEST.findall(CHANGELOG_FILE.read_text())
    assert recorded, f"{CHANGELOG_FILE.name} has no entries"
    assert recorded[0] == digest, (
        f"schema.graphql changed (sha256 {digest}) but the newest entry of {CHANGELOG_FILE.name} "
        f"describes {recorded[0]}: add an entry on top saying what changed, with this digest"
    )
