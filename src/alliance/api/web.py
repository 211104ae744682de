"""The browser apps: /app/ (members), /console/ (operator and merchants) and /shared/ (their common
modules), served as plain files from the package — ES modules, no build step, nothing from a CDN.

Every file leaves with a strict Content-Security-Policy: scripts and styles only from this origin
(no inline code), fetches only to this origin and the token endpoints of the configured member
OpenID providers (and WebSockets only to this host: CSP3's 'self' matches its ws:/wss:), no
framing, no referrer (a sign-in redirect carries a one-time code in its URL).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alliance.config import Settings

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
APPS = ("app", "console", "shared")


def content_security_policy(settings: Settings) -> str:
    token_origins = sorted(
        {_origin(provider["token_endpoint"]) for provider in settings.member_oidc_providers}
    )
    connect = " ".join(["'self'", *token_origins])
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src {connect}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    assert parts.scheme in ("http", "https") and parts.netloc, f"not an absolute URL: {url}"
    return f"{parts.scheme}://{parts.netloc}"


class SecurityHeaders:
    """Adds the CSP and friends to every response of the wrapped static app."""

    def __init__(self, app: ASGIApp, csp: str) -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", csp.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            # Revalidate every time: an upgrade must never leave a browser with half-old modules.
            (b"cache-control", b"no-cache"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in self.headers}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message["headers"] = [*kept, *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _to_member_app(request: Request) -> RedirectResponse:
    return RedirectResponse("/app/", status_code=307)


async def _icon(request: Request) -> FileResponse:
    return FileResponse(WEB_ROOT / "shared" / "icon.svg", media_type="image/svg+xml")


def web_routes(settings: Settings) -> list[BaseRoute]:
    """Mounts for the three folders (those that exist), `/` → the member app, and the icon."""
    csp = content_security_policy(settings)
    routes: list[BaseRoute] = [
        Route("/", _to_member_app, methods=["GET"]),
        Route("/favicon.ico", _icon, methods=["GET"]),
    ]
    for name in APPS:
        folder = WEB_ROOT / name
        if folder.is_dir():
            static = StaticFiles(directory=folder, html=True)
            routes.append(Mount(f"/{name}", app=SecurityHeaders(static, csp), name=name))
    return routes
