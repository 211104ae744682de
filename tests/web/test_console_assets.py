"""The console's files as shipped: only the public API, no CDN, the pinned charting library."""

import json
import re
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "src" / "alliance" / "web" / "console"
VENDOR = CONSOLE / "vendor"


def console_sources() -> list[Path]:
    return [p for p in CONSOLE.rglob("*") if p.suffix in (".js", ".html", ".css") and VENDOR not in p.parents]


def test_the_console_talks_only_to_the_public_api_from_its_own_origin():
    sources = console_sources()
    assert len(sources) >= 8
    for path in sources:
        text = path.read_text()
        assert not re.search(r"https?://", text), f"{path.name} names another origin"
        assert "fetch(" not in text and "XMLHttpRequest" not in text, f"{path.name} fetches by itself"
        assert "innerHTML" not in text, f"{path.name} writes markup from strings"
    # The only network access is through the shared modules: /graphql and /oauth/*.
    api = (CONSOLE / "api.js").read_text()
    assert 'from "/shared/graphql.js"' in api and 'from "/shared/auth.js"' in api


def test_the_vendored_echarts_is_the_version_the_lock_file_pins():
    package = json.loads((ROOT / "web" / "package.json").read_text())
    lock = json.loads((ROOT / "web" / "package-lock.json").read_text())
    pinned = package["dependencies"]["echarts"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), "an exact version, not a range"
    assert lock["packages"]["node_modules/echarts"]["version"] == pinned
    assert f'version:"{pinned}"' in (VENDOR / "echarts.esm.min.js").read_text()
    for licence in ("LICENSE-echarts.txt", "NOTICE-echarts.txt", "LICENSE-zrender.txt", "LICENSE-tslib.txt", "LICENSE-d3.txt"):
        assert (VENDOR / licence).read_text().strip(), f"{licence} is missing or empty"


def test_the_console_is_served_with_the_strict_policy(server):
    page = httpx.get(f"{server.url}/console/")
    assert page.status_code == 200 and '<script type="module" src="main.js">' in page.text
    assert "'unsafe-inline'" not in page.headers["content-security-policy"]
    library = httpx.get(f"{server.url}/console/vendor/echarts.esm.min.js")
    assert library.status_code == 200 and "javascript" in library.headers["content-type"]
    assert library.content == (VENDOR / "echarts.esm.min.js").read_bytes()
