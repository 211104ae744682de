"""Test fixtures: a throwaway database on a real PostgreSQL, the app, and API helpers.

The suite runs against the embedded PostgreSQL by default, or the server named by
``ALLIANCE_TEST_DATABASE_URL``. Either way it creates its own database and application role
and drops both at the end; nothing outside them is touched.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from alliance.api.app import create_app
from alliance.auth.clients import create_client
from alliance.config import Settings
from alliance.db import Database
from alliance.db.database import OPERATOR, to_async_url
from alliance.db.embedded import start_embedded_postgres
from alliance.db.migrate import upgrade
from alliance.tenants.models import TenantCategory
from alliance.tenants.service import create_tenant


def _server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    external = os.environ.get("ALLIANCE_TEST_DATABASE_URL")
    if external:
        return to_async_url(external).render_as_string(hide_password=False)
    return start_embedded_postgres(tmp_path_factory.mktemp("embedded"), keep_running=False)


async def _admin(url: str, statements: list[str]) -> None:
    engine = create_async_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    server = _server_url(tmp_path_factory)
    name = f"alliance_test_{secrets.token_hex(4)}"
    owner_url = make_url(server).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin(server, [f'CREATE DATABASE "{name}"']))
    # Webhook tests deliver to receivers on http://127.0.0.1, which production refuses.
    test_settings = Settings(
        database_url=owner_url, app_role=f"{name}_app", graphiql=False, webhook_allow_insecure_urls=True
    )
    try:
        upgrade(owner_url, test_settings)
        yield test_settings
    finally:
        asyncio.run(
            _admin(
                server,
                [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'DROP ROLE IF EXISTS "{name}_app"'],
            )
        )


@pytest.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[Database]:
    assert settings.database_url is not None
    database = Database(settings.database_url, settings)
    yield database
    await database.close()


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[Any]:
    assert settings.database_url is not None
    application = create_app(settings.database_url, settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def http(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://alliance.test") as client:
        yield client


def unique(prefix: str) -> str:
    # 48 random bits: a run creates ~1,000 merchant codes, keys and refs of each kind, and with
    # 24 bits two of them collided now and then (a birthday chance of ~3 % per run).
    return f"{prefix}-{secrets.token_hex(6)}"


@dataclass
class Api:
    """A GraphQL caller holding one bearer token."""

    http: httpx.AsyncClient
    token: str

    async def post(self, query: str, variables: dict[str, Any] | None = None) -> httpx.Response:
        return await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {self.token}"},
        )

    async def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        """Run ``query``; return ``data``. Fails the test on any top-level GraphQL error."""
        response = await self.post(query, variables)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    async def errors(self, query: str, **variables: Any) -> list[dict[str, Any]]:
        response = await self.post(query, variables)
        assert response.status_code == 200, response.text
        return response.json()["errors"]


async def terminate_backend(db: Database, pid: int) -> None:
    """End one server process as the owner: a connection dropped under its user's feet."""
    engine = db.owner_engine()
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await engine.dispose()
    await asyncio.sleep(0.1)  # the client notices on its next use


async def client_token(http: httpx.AsyncClient, client_id: str, secret: str) -> str:
    response = await http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@dataclass
class Merchant:
    code: str
    tenant_id: int
    api: Api
    client_id: str
    client_secret: str


async def new_client(
    db: Database, role: str, tenant_id: int | None, scopes: list[str] | None = None
) -> tuple[str, str]:
    async with db.transaction(OPERATOR) as session:
        issued = await create_client(session, role, f"test {role}", tenant_id, scopes)
    return issued.client.client_id, issued.client_secret


@pytest.fixture
async def operator(http: httpx.AsyncClient, db: Database) -> Api:
    client_id, secret = await new_client(db, "operator", None)
    return Api(http, await client_token(http, client_id, secret))


@pytest.fixture
def make_merchant(http: httpx.AsyncClient, db: Database):  # type: ignore[no-untyped-def]
    """Factory: a new tenant with one merchant client and a token for it."""

    async def make(
        category: TenantCategory = TenantCategory.SUPERMARKET, code: str | None = None
    ) -> Merchant:
        code = code or unique("m")
        async with db.transaction(OPERATOR) as session:
            tenant = await create_tenant(session, code, f"Merchant {code}", category)
        assert tenant.id is not None
        client_id, secret = await new_client(db, "merchant", tenant.id)
        api = Api(http, await client_token(http, client_id, secret))
        return Merchant(code=code, tenant_id=tenant.id, api=api, client_id=client_id, client_secret=secret)

    return make


def random_phone() -> str:
    return "+86139" + "".join(secrets.choice("0123456789") for _ in range(8))
