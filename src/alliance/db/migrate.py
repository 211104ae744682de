"""Database creation and Alembic migrations, driven from Python (``alliance db upgrade``)."""

from __future__ import annotations

import asyncio
import re
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from alliance.config import Settings
from alliance.db.database import to_async_url
from alliance.db.embedded import start_embedded_postgres

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def migrations_dir() -> Path:
    """The packaged copy of ``migrations/`` in a wheel, the source tree's in a checkout."""
    packaged = resources.files("alliance") / "_migrations"
    if packaged.is_dir():
        return Path(str(packaged))
    source = Path(__file__).resolve().parents[3] / "migrations"
    assert source.is_dir(), f"migrations directory not found at {source}"
    return source


def resolve_owner_url(settings: Settings) -> tuple[str, bool]:
    """The owner's URL and whether it is the embedded server (which we may migrate on serve)."""
    if settings.database_url:
        return to_async_url(settings.database_url).render_as_string(hide_password=False), False
    server_url = start_embedded_postgres(settings.data_dir)
    url = to_async_url(server_url).set(database=settings.database_name)
    asyncio.run(create_database_if_missing(url))
    return url.render_as_string(hide_password=False), True


async def create_database_if_missing(url: URL) -> None:
    assert url.database and re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", url.database), url.database
    engine = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database}
            )
            if not found:
                await conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    finally:
        await engine.dispose()


def alembic_config(owner_url: str, settings: Settings) -> Config:
    assert _ROLE_NAME.match(settings.app_role), f"invalid app role name {settings.app_role!r}"
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["owner_url"] = owner_url
    config.attributes["app_role"] = settings.app_role
    config.attributes["app_role_password"] = settings.app_role_password
    return config


def upgrade(owner_url: str, settings: Settings, revision: str = "head") -> None:
    """Apply migrations as the owner. Synchronous: Alembic runs its own event loop."""
    command.upgrade(alembic_config(owner_url, settings), revision)


async def is_current(conn: AsyncConnection) -> bool:
    """True when the database is at this code's newest migration or ahead of it (used by ``/readyz``).

    Ahead is fine: during a rolling release the migration Job runs first, and the old pods must keep
    serving until they are replaced (migrations are written to be backward compatible).
    """
    current = await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
    if current is None:
        return False
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    scripts = ScriptDirectory.from_config(config)
    known = {script.revision for script in scripts.walk_revisions()}
    return current == scripts.get_current_head() or current not in known


def execute_script(sql: str) -> None:
    """Run a multi-statement SQL script inside an Alembic migration.

    asyncpg prepares every statement it is given and so refuses several at once; its simple
    query protocol (``Connection.execute`` without arguments) accepts a whole script.
    """
    from alembic import op
    from sqlalchemy.util import await_

    driver = op.get_bind().connection.dbapi_connection.driver_connection  # type: ignore[union-attr]
    await_(driver.execute(sql))


def function_from_script(script: str, name: str) -> str:
    """Function ``name`` as ``migrations/sql/<script>`` defines it, as a CREATE OR REPLACE.

    A revision that changes a function derives the new body from the script that defined it, and
    its downgrade restores that definition: the two cannot drift apart.
    """
    source = (migrations_dir() / "sql" / script).read_text()
    found = re.search(rf"CREATE (?:OR REPLACE )?FUNCTION {re.escape(name)}\(.*?\$\$;", source, re.DOTALL)
    assert found, f"{script} defines {name}"
    return re.sub(r"^CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", found.group(0))
