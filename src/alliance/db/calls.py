"""Connections for one-statement calls: the ledger's postings and the rate limiter's bucket.

Every posting is one call of a SECURITY DEFINER function in autocommit mode, so the connection
it borrows never holds a transaction, a session setting or a lock between two calls. That makes
a pool trivial: a stack of idle connections and a semaphore. Going through SQLAlchemy's pool
instead (``AsyncEngine.connect()`` and the raw driver connection) cost about 150 µs of CPU per
call here — a greenlet switch, a connection fairy and a reset on return — as much as asyncpg's
own work for the call, twice per ``earnPoints`` request (the posting and the rate-limit take).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson


class CallConnections:
    """At most ``size`` autocommit asyncpg connections, opened on demand, reused newest first."""

    def __init__(self, dsn: str, size: int) -> None:
        assert size >= 1, "a pool has at least one connection"
        self.dsn = dsn
        self.size = size
        self._slots = asyncio.Semaphore(size)
        self._idle: list[asyncpg.Connection] = []
        self._closed = False

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        """Run one statement on an idle connection (or a new one, below ``size``).

        A database error (a refused constraint, a raised exception) leaves the connection
        usable: autocommit has already rolled the statement back. Anything else — a dropped
        connection, a cancelled task mid-statement — may leave it in an unknown state, so it is
        closed, never returned to the stack.
        """
        assert not self._closed, "the pool is closed"
        async with self._slots:
            connection = self._idle.pop() if self._idle else await self._connect()
            try:
                row = await connection.fetchrow(sql, *args)
            except asyncpg.PostgresError:
                self._idle.append(connection)
                raise
            except BaseException:
                connection.terminate()
                raise
            self._idle.append(connection)
            assert len(self._idle) <= self.size, "no more idle connections than slots"
            return row

    async def _connect(self) -> asyncpg.Connection:
        connection = await asyncpg.connect(self.dsn)
        # JSON in and out as the SQLAlchemy engine has it: parameters are JSON text, results dicts.
        for kind in ("json", "jsonb"):
            await connection.set_type_codec(
                kind, encoder=_as_text, decoder=orjson.loads, schema="pg_catalog", format="text"
            )
        return connection

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(connection.close() for connection in idle), return_exceptions=True)


def json_text(value: Any) -> str:
    """A JSON parameter's text; a Decimal goes as its string, a datetime in ISO 8601.

    orjson, not the standard library: a 1000-item batch's items and its 1000 answers are
    encoded and decoded on every call, and the standard library's encoder and decoder took ~15 %
    of the server's CPU for them (py-spy, ledger benchmark, phase (e)).
    """
    return orjson.dumps(value, default=str).decode()


def _as_text(value: str) -> str:
    assert isinstance(value, str), "JSON parameters are passed as text (json_text)"
    return value
