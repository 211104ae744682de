"""The graphql-http audit suite (the GraphQL over HTTP specification's server audits) passes every
MUST and SHOULD against the gateway, served over a real socket.

Needs Node and ``npm ci`` in tools/graphql-http-audit; skipped without them (CI installs both,
and also audits a real ``alliance serve``: tools/graphql-http-audit/audit_serve.py).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from pathlib import Path

import pytest
import uvicorn

from tests.conftest import Api

AUDIT_DIR = Path(__file__).resolve().parents[2] / "tools" / "graphql-http-audit"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (AUDIT_DIR / "node_modules" / "graphql-http").is_dir(),
    reason="needs node and `npm ci` in tools/graphql-http-audit",
)


async def test_graphql_http_audit_passes_every_must_and_should(app, operator: Api) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    # The app's lifespan already runs (session fixture): uvicorn only serves it.
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        audit = await asyncio.create_subprocess_exec(
            "node",
            "audit.mjs",
            f"http://127.0.0.1:{port}/graphql",
            cwd=AUDIT_DIR,
            env=os.environ | {"ALLIANCE_AUDIT_TOKEN": operator.token},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(audit.communicate(), timeout=120)
    finally:
        server.should_exit = True
        await serving
        listener.close()
    report = output.decode()
    assert audit.returncode == 0, report
    assert "0 MUST/SHOULD failing" in report, report
