"""``alliance serve --workers N``: a listening socket per worker, restarted when it dies, stopped on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from alliance.api.workers import can_share_port, listening_socket
from tests.ledger.test_crash_safety import _free_port, _wait_ready

pytestmark = pytest.mark.skipif(not can_share_port(), reason="SO_REUSEPORT is missing on this platform")


def test_workers_sockets_share_one_port() -> None:
    port = _free_port()
    first, second = listening_socket("127.0.0.1", port), listening_socket("127.0.0.1", port)
    try:
        first.listen()
        second.listen()
        assert first.getsockname() == second.getsockname() == ("127.0.0.1", port)
    finally:
        first.close()
        second.close()


def listening_pids(port: int) -> set[int]:
    """The processes with a socket listening on 127.0.0.1:``port`` (from /proc, Linux)."""
    inodes: set[str] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port:  # 0A: LISTEN
            inodes.add(inode)
    pids = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            links = {os.readlink(fd) for fd in fd_dir.iterdir()}
        except OSError:  # a process that ended, or one we may not inspect
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            pids.add(int(fd_dir.parent.name))
    return pids


async def until(condition, what: str, seconds: float = 30.0) -> None:
    for _ in range(int(seconds / 0.1)):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting until {what}")


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from /proc")
async def test_each_worker_listens_is_restarted_and_stops_on_sigterm(settings) -> None:
    port = _free_port()
    env = os.environ | {"DATABASE_URL": settings.database_url, "ALLIANCE_APP_ROLE": settings.app_role}
    command = [sys.executable, "-m", "alliance.cli", "serve", "--port", str(port), "--workers", "2"]
    server = subprocess.Popen([*command, "--no-access-log"], env=env, stdout=subprocess.DEVNULL)
    try:
        await _wait_ready(f"http://127.0.0.1:{port}")
        await until(lambda: len(listening_pids(port)) == 2, "two workers listen")
        workers = listening_pids(port)
        assert server.pid not in workers, "the parent supervises; it does not accept connections"

        os.kill(min(workers), signal.SIGKILL)
        await until(lambda: len(listening_pids(port) - workers) == 1, "a new worker replaced the killed one")
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200

        server.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 60) == 0
        assert listening_pids(port) == set(), "no worker outlives the parent"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
