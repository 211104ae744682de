"""The one-statement call connections: bounded, reused, and never reused once broken."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from alliance.db import Database
from alliance.db.calls import CallConnections
from tests.conftest import terminate_backend


async def test_a_failed_statement_leaves_the_connection_usable(db: Database) -> None:
    calls = CallConnections(db.listen_dsn(), size=1)
    try:
        first = await calls.fetchrow("SELECT pg_backend_pid() AS pid")
        with pytest.raises(asyncpg.DivisionByZeroError):
            await calls.fetchrow("SELECT 1 / 0")
        again = await calls.fetchrow("SELECT pg_backend_pid() AS pid")
        assert first is not None and again is not None
        assert again["pid"] == first["pid"], "a refused statement does not cost the connection"
    finally:
        await calls.close()


async def test_a_dropped_connection_is_replaced_not_reused(db: Database) -> None:
    calls = CallConnections(db.listen_dsn(), size=1)
    try:
        first = await calls.fetchrow("SELECT pg_backend_pid() AS pid")
        assert first is not None
        await terminate_backend(db, first["pid"])
        with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
            await calls.fetchrow("SELECT 1")
        replaced = await calls.fetchrow("SELECT pg_backend_pid() AS pid")
        assert replaced is not None and replaced["pid"] != first["pid"]
    finally:
        await calls.close()


async def test_concurrent_calls_share_at_most_size_connections(db: Database) -> None:
    calls = CallConnections(db.listen_dsn(), size=3)
    try:
        rows = await asyncio.gather(
            *(calls.fetchrow("SELECT pg_backend_pid() AS pid, pg_sleep(0.05)") for _ in range(12))
        )
        assert len({row["pid"] for row in rows if row is not None}) == 3
    finally:
        await calls.close()


async def test_json_travels_as_text_in_and_objects_out(db: Database) -> None:
    assert await db.call("SELECT $1::jsonb || '{\"b\": 2}'::jsonb", '{"a": 1}') == {"a": 1, "b": 2}
