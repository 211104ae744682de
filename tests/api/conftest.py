"""Fixtures of the API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from alliance.api.app import create_app


@pytest.fixture
def replica(settings) -> Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]:  # type: ignore[no-untyped-def]
    """Factory: another gateway process on the test database, with settings of its own."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(settings.database_url, settings.model_copy(update=overrides))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica.test") as http,
        ):
            yield http

    return start
