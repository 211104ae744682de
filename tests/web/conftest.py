"""Browser tests: a real server and Debian's headless Chromium, driven by Playwright (sync API).

How to use (fixtures are picked up by any test under tests/web/):

    from tests.web.conftest import allow_console_errors, screenshot

    def test_something(page, server):           # `page` is a fresh browser context per test
        page.goto("/console/")                  # relative to server.url
        page.get_by_role("button", name="Sign in").click()
        screenshot(page, "console-home")        # test-artifacts/screenshots/console-home.png

* ``server`` (session): one uvicorn server in a thread on a free port, in demo mode, serving the
  session's test database with the demo alliance seeded. ``server.url``; ``server.sms_outbox``
  holds the SMS the (in-memory) sender sent, ``server.last_sms_to(phone)`` the newest to a phone.
* ``browser`` (tests/web): headless /usr/bin/chromium (never a downloaded browser).
* ``page`` (1280x800) and ``mobile_page`` (375x812): a new context each, English locale, base URL
  set. The test FAILS on any console error or uncaught page error seen during it; a test that
  provokes an expected failed request says so with ``allow_console_errors(page, regex)`` (the
  regex is searched in "console: <text> @ <url>").
* ``new_page(**context_options)``: the same for other viewports or locales (``locale="zh-CN"``).
* ``run_async(coroutine)``: run async code (a database change) from a sync web test.

Without /usr/bin/chromium (or the playwright package) the web tests are skipped with the reason,
unless ALLIANCE_REQUIRE_BROWSER=1 (as .ci/run sets), when they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn

from alliance.api.app import create_app
from alliance.auth.sms import MemorySmsSender
from alliance.config import Settings
from alliance.db import Database
from alliance.demo import seed_demo

CHROMIUM = Path(os.environ.get("ALLIANCE_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
SERVER_START_TIMEOUT_SECONDS = 60.0
DESKTOP = {"width": 1280, "height": 800}
MOBILE = {"width": 375, "height": 812}

T = TypeVar("T")
_allowed_errors: dict[int, list[re.Pattern[str]]] = {}


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@pytest.fixture(scope="session")
def browser_available() -> None:
    reason = _browser_missing()
    if reason is None:
        return
    if os.environ.get("ALLIANCE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ALLIANCE_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(f"browser tests skipped: {reason}")


@dataclass
class WebServer:
    url: str
    app: Any

    @property
    def sms_outbox(self) -> list[tuple[str, str]]:
        sender: MemorySmsSender = self.app.state.sms_sender
        return list(sender.outbox)

    def last_sms_to(self, phone: str) -> str | None:
        sender: MemorySmsSender = self.app.state.sms_sender
        return sender.last_to(phone)


async def _seed(settings: Settings) -> None:
    assert settings.database_url is not None
    db = Database(settings.database_url, settings)
    try:
        await seed_demo(db)
    finally:
        await db.close()


@contextmanager
def serving(app: Any, before: Callable[[], Coroutine[Any, Any, None]] | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread of its own on a free loopback port; yields its URL.

    The server's event loop lives in its thread (``before`` runs there first, e.g. seeding): the
    test thread's loop is Playwright's while the browser is open."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    uv = uvicorn.Server(config)

    async def prepare_and_serve() -> None:
        if before is not None:
            await before()
        await uv.serve(sockets=[sock])

    thread = threading.Thread(target=asyncio.run, args=(prepare_and_serve(),), name="web-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test web server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()


def web_settings(settings: Settings, **overrides: Any) -> Settings:
    """The session's settings as the browser tests serve them: demo mode, SMS kept in memory."""
    return settings.model_copy(update={"demo": True, "sms_sender": "memory", "access_log": False} | overrides)


@pytest.fixture(scope="session")
def server(settings: Settings, browser_available: None) -> Iterator[WebServer]:
    assert settings.database_url is not None
    app = create_app(settings.database_url, web_settings(settings))
    with serving(app, before=lambda: _seed(settings)) as url:
        yield WebServer(url=url, app=app)


@pytest.fixture(scope="package")
def browser(server: WebServer) -> Iterator[Any]:
    """Chromium, started after the server and closed after the last web test: while Playwright's
    sync API is open it keeps an event loop running in this thread, so asyncio.run (and
    pytest-asyncio's fixtures) cannot start then. Web tests therefore use no async fixtures;
    talk to the server over HTTP (``server.url``) or use `run_async`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser: Any, server: WebServer) -> Iterator[Callable[..., Any]]:
    """Factory: a page in a fresh context; every console error or page error fails the test."""
    opened: list[tuple[Any, Any, list[str]]] = []

    def make(**context_options: Any) -> Any:
        options = {
            "viewport": DESKTOP,
            "locale": "en-US",
            "timezone_id": "Asia/Shanghai",
            "base_url": server.url,
        } | context_options
        context = browser.new_context(**options)
        context.set_default_timeout(10_000)
        page = context.new_page()
        problems: list[str] = []
        page.on(
            "console",
            lambda message: (
                problems.append(f"console: {message.text} @ {message.location.get('url', '')}")
                if message.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        opened.append((context, page, problems))
        return page

    yield make
    failures: list[str] = []
    for context, page, problems in opened:
        allowed = _allowed_errors.pop(id(page), [])
        failures += [p for p in problems if not any(pattern.search(p) for pattern in allowed)]
        context.close()
    if failures:
        pytest.fail("browser errors during the test:\n" + "\n".join(failures))


@pytest.fixture
def page(new_page: Callable[..., Any]) -> Any:
    return new_page()


@pytest.fixture
def mobile_page(new_page: Callable[..., Any]) -> Any:
    return new_page(viewport=MOBILE, is_mobile=True, has_touch=True, device_scale_factor=2)


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from a web test (in a thread of its own: this thread's event
    loop belongs to Playwright), e.g. a database change through ``Database(...)``."""
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(asyncio.run(coroutine))
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def allow_console_errors(page: Any, pattern: str) -> None:
    """Expect console errors matching ``pattern`` on this page (e.g. a deliberate 400 answer)."""
    _allowed_errors.setdefault(id(page), []).append(re.compile(pattern))


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page PNG under test-artifacts/screenshots/ (git-ignored) and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
