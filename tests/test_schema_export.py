"""The committed ``schema.graphql`` is the contract clients build against: it must match the code."""

from __future__ import annotations

from pathlib import Path

from alliance.api.schema import export_sdl

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schema.graphql"


def test_committed_schema_matches_the_code() -> None:
    assert SCHEMA_FILE.is_file(), f"{SCHEMA_FILE} is missing: run `alliance schema export`"
    committed = SCHEMA_FILE.read_text()
    assert committed == export_sdl(), (
        f"{SCHEMA_FILE.name} is out of date with the GraphQL schema in the code: "
        "run `alliance schema export` and commit the result"
    )
