"""Killing the gateway mid-burst loses nothing acknowledged and leaves nothing half-written."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

import httpx
from sqlalchemy import text

from alliance.api.ids import from_global_id
from alliance.db.database import OPERATOR, run_sql
from alliance.ledger.service import verify_ledger
from tests.conftest import client_token, random_phone, unique
from tests.ledger.test_worked_example import EARN, enroll


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _wait_ready(base: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                if (await client.get(f"{base}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("server did not become ready")


async def test_sigkill_mid_burst_keeps_every_acknowledged_posting(settings, db, make_merchant):
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = os.environ | {"DATABASE_URL": settings.database_url, "ALLIANCE_APP_ROLE": settings.app_role}
    server = subprocess.Popen(
        [sys.executable, "-m", "alliance.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await _wait_ready(base)
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            token = await client_token(client, merchant.client_id, merchant.client_secret)
            acknowledged: list[str] = []

            async def earn(n: int) -> None:
                body = {
                    "query": EARN,
                    "variables": {
                        "i": {
                            "memberNumber": number,
                            "amount": "10",
                            "orderRef": f"crash-{n}",
                            "idempotencyKey": unique("k"),
                        }
                    },
                }
                try:
                    response = await client.post(
                        "/graphql", json=body, headers={"Authorization": f"Bearer {token}"}
                    )
                except httpx.TransportError:
                    return
                payload = response.json()["data"]["earnPoints"]
                assert payload["userErrors"] == []
                acknowledged.append(payload["transaction"]["id"])

            async def kill_soon() -> None:
                while len(acknowledged) < 20:
                    await asyncio.sleep(0.005)
                server.send_signal(signal.SIGKILL)

            await asyncio.gather(kill_soon(), *(earn(n) for n in range(400)))
    finally:
        server.kill()
        server.wait()

    assert 20 <= len(acknowledged) < 400, "the kill must land mid-burst"
    async with db.transaction(OPERATOR) as session:
        posted_ids = set(
            (
                await run_sql(
                    session,
                    text(
                        "SELECT t.id FROM ledger_transactions t JOIN members m ON m.id = t.member_id"
                        " WHERE m.member_number = :n AND t.kind = 'earn'"
                    ),
                    {"n": number},
                )
            ).scalars()
        )
        assert await verify_ledger(session) == []
    # Every acknowledged posting is there; unacknowledged ones either committed whole or not at all.
    assert {from_global_id(gid)[1] for gid in acknowledged} <= posted_ids
    posted = len(posted_ids)
    balance = await merchant.api(
        "query($n: String!) { member(memberNumber: $n) { balance { available } } }", n=number
    )
    assert balance["member"]["balance"]["available"] == posted * 10
