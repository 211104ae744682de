"""Engines for the two database roles and the tenant-scoped transaction every request runs in.

The owner role runs migrations and owns every table. The application role (NOSUPERUSER,
NOBYPASSRLS) is the only one the server uses for requests, so row-level security applies to
every query it makes. Which rows it may touch is decided by three transaction-local settings
(``alliance.role``, ``alliance.tenant_id``, ``alliance.member_id``) that `Database.transaction`
sets with ``set_config(..., true)`` before anything else runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from sqlalchemy import Executable, Result, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.config import Settings
from alliance.db.calls import CallConnections

AccessRole = Literal["operator", "merchant", "member", "auth"]

_SET_ACCESS_CONTEXT = text(
    "SELECT set_config('alliance.role', :role, true),"
    " set_config('alliance.tenant_id', :tenant_id, true),"
    " set_config('alliance.member_id', :member_id, true)"
)


@dataclass(frozen=True, slots=True)
class AccessContext:
    """What the database lets the current transaction see.

    ``auth`` is the narrow context of the token endpoint: it may read API clients, nothing else.
    """

    role: AccessRole
    tenant_id: int | None = None
    member_id: int | None = None

    def __post_init__(self) -> None:
        assert (self.role == "merchant") == (self.tenant_id is not None), "merchant context needs a tenant"
        assert (self.role == "member") == (self.member_id is not None), "member context needs a member"


OPERATOR = AccessContext("operator")
AUTH = AccessContext("auth")


def to_async_url(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed


def app_url_for(owner_url: str, settings: Settings) -> URL:
    """The application role's URL: explicit, or the owner's URL with the user swapped."""
    if settings.app_database_url:
        return to_async_url(settings.app_database_url)
    return to_async_url(owner_url).set(username=settings.app_role, password=settings.app_role_password)


class Database:
    """Owns the application-role engine; hands out tenant-scoped transactions."""

    def __init__(self, owner_url: str, settings: Settings) -> None:
        self.owner_url = to_async_url(owner_url)
        self.app_url = app_url_for(owner_url, settings)
        self.settings = settings
        self.engine: AsyncEngine = create_async_engine(
            self.app_url,
            pool_size=settings.pool_size,
            max_overflow=0,  # the other pool_size connections are the calls' (see Settings.pool_size)
            pool_pre_ping=False,
        )
        self.calls = CallConnections(self.listen_dsn(), settings.pool_size)

    def listen_dsn(self) -> str:
        """The application role's URL for asyncpg itself: LISTEN needs a connection of its own,
        outside the pool (and not through a transaction-pooling proxy)."""
        return self.app_url.set(drivername="postgresql").render_as_string(hide_password=False)

    def owner_engine(self) -> AsyncEngine:
        """A short-lived engine as the owner, for migrations and operator CLI maintenance."""
        return create_async_engine(self.owner_url, pool_size=2)

    @asynccontextmanager
    async def transaction(self, access: AccessContext) -> AsyncIterator[AsyncSession]:
        """One database transaction under ``access``; committed on success, rolled back on error."""
        async with AsyncSession(self.engine, expire_on_commit=False) as session, session.begin():
            await run_sql(
                session,
                _SET_ACCESS_CONTEXT,
                {
                    "role": access.role,
                    "tenant_id": "" if access.tenant_id is None else str(access.tenant_id),
                    "member_id": "" if access.member_id is None else str(access.member_id),
                },
            )
            yield session

    async def call(self, sql: str, *args: Any) -> Any:
        """One statement in autocommit mode: a single round trip for a self-contained SQL function.

        The ledger's write functions carry their own caller identity and run as the owner, so
        they need no access context and no surrounding transaction. This is every posting's hot
        path, so it speaks asyncpg directly on connections of its own (`alliance.db.calls`:
        positional ``$n`` parameters, prepared once per connection) instead of compiling a
        SQLAlchemy statement and building a result object for one value.
        """
        row = await self.call_row(sql, *args)
        assert len(row) == 1, "call answers one value; use call_row for several"
        return row[0]

    async def call_row(self, sql: str, *args: Any) -> asyncpg.Record:
        """`call` for a statement that answers one row of several columns."""
        row = await self.calls.fetchrow(sql, *args)
        assert row is not None, "a call answers one row"
        return row

    async def close(self) -> None:
        await self.calls.close()
        await self.engine.dispose()


async def run_sql(
    session: AsyncSession, statement: Executable, params: Mapping[str, Any] | None = None
) -> Result[Any]:
    """Execute Core SQL (a server-side function call, a set-based statement) in the session's transaction."""
    connection = await session.connection()
    return await connection.execute(statement, params or {})
