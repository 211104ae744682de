"""Per-request context: the principal, the database, and the authorisation helpers resolvers use."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.requests import HTTPConnection
from starlette.responses import Response
from strawberry.dataloader import DataLoader
from strawberry.types import Info as StrawberryInfo

from alliance.api.errors import forbidden
from alliance.auth.principal import Principal
from alliance.config import Settings
from alliance.db import Database
from alliance.ledger.live import BalanceHub
from alliance.ratelimit import RateLimiter


@dataclass
class Services:
    """Process-wide objects, built once by the app's lifespan."""

    settings: Settings
    db: Database
    rate_limiter: RateLimiter
    balances: BalanceHub  # this process's LISTEN connection behind balanceChanged


@dataclass
class Context:
    """An HTTP request's principal comes from its bearer token before the context is built; a
    WebSocket's from the ``connection_init`` payload (`connection_params`), before any operation."""

    request: HTTPConnection
    services: Services
    authenticated: Principal | None
    response: Response | None = None  # HTTP: headers and status set here are merged into the response
    connection_params: dict[str, object] | None = None
    token_expires_at: int | None = None  # WebSocket: when its token expires (Unix seconds)
    loaders: dict[str, DataLoader[Any, Any]] = field(default_factory=dict)

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

    def loader(self, name: str, load: Callable[[list[Any]], Awaitable[list[Any]]]) -> DataLoader[Any, Any]:
        """A request-scoped DataLoader: the fields of one page of results load in one query."""
        if name not in self.loaders:
            self.loaders[name] = DataLoader(load_fn=load)
        return self.loaders[name]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.services.db.transaction(self.principal.access) as session:
            yield session


Info = StrawberryInfo[Context, None]
