"""Per-request context: the principal, the database, and the authorisation helpers resolvers use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import HTTPConnection
from strawberry.types import Info as StrawberryInfo

from alliance.api.errors import forbidden
from alliance.auth.principal import Principal
from alliance.config import Settings
from alliance.db import Database
from alliance.ledger.live import BalanceHub


@dataclass
class Services:
    """Process-wide objects, built once by the app's lifespan."""

    settings: Settings
    db: Database
    balances: BalanceHub  # this process's LISTEN connection behind balanceChanged


@dataclass
class Context:
    """An HTTP request's principal comes from its bearer token before the context is built; a
    WebSocket's from the ``connection_init`` payload (`connection_params`), before any operation."""

    request: HTTPConnection
    services: Services
    authenticated: Principal | None
    connection_params: dict[str, object] | None = None
    token_expires_at: int | None = None  # WebSocket: when its token expires (Unix seconds)

    @property
    def principal(self) -> Principal:
        assert self.authenticated is not None, "no operation runs before authentication"
        return self.authenticated

    @property
    def settings(self) -> Settings:
        return self.services.settings

    def require(self, scope: str, *kinds: str) -> Principal:
        """The principal, if it holds ``scope`` (and is one of ``kinds`` when given); else FORBIDDEN."""
        principal = self.principal
        if scope not in principal.scopes or (kinds and principal.kind not in kinds):
            needs = f"scope {scope}" + (f" as {' or '.join(kinds)}" if kinds else "")
            raise forbidden(f"this operation needs {needs}")
        return principal

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.services.db.transaction(self.principal.access) as session:
            yield session


Info = StrawberryInfo[Context, None]
