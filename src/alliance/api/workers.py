"""``alliance serve --workers N``: N worker processes, each listening on a socket of its own.

uvicorn's own ``--workers`` shares one listening socket among its processes, and the process
that wakes first accepts every connection waiting. Keep-alive clients that connect at once (a
load balancer's pool, POS back ends after a deploy, the benchmark's 16 clients) then all land
on one process: measured with ``bench/ledger.py``, one worker used ~80 % of a core and the other
~15 % while the machine had a core to spare. With SO_REUSEPORT every worker listens on a socket
of its own, bound to the same port, and the kernel spreads new connections across them.

The parent only supervises: it restarts a worker that exits, and on SIGINT or SIGTERM it asks
every worker to stop (uvicorn finishes the requests in progress) and exits when they have.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn

APP_FACTORY = "alliance.api.app:create_app_from_environment"
MAX_WORKERS = 64
RESTART_PAUSE = 1.0  # seconds before a worker that exited is started again
STOP_TIMEOUT = 30.0  # seconds a stopping worker gets to finish its requests before it is killed

logger = logging.getLogger("alliance.serve")


def can_share_port() -> bool:
    """Whether this platform lets several sockets listen on one port (Linux, the BSDs, macOS)."""
    return hasattr(socket, "SO_REUSEPORT")


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) that the other workers' sockets may share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _run_worker(host: str, port: int) -> None:
    """One worker process: its own socket, the app built from the environment (DATABASE_URL)."""
    config = uvicorn.Config(APP_FACTORY, factory=True, access_log=False, log_config=None)
    uvicorn.Server(config).run(sockets=[listening_socket(host, port)])


def serve_workers(host: str, port: int, workers: int) -> int:
    """Run ``workers`` worker processes until SIGINT or SIGTERM; returns the exit status."""
    assert can_share_port(), "callers fall back to uvicorn's workers where SO_REUSEPORT is missing"
    assert 2 <= workers <= MAX_WORKERS, workers
    listening_socket(host, port).close()  # fail here, once, if another program holds the port
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    def start() -> BaseProcess:
        process = context.Process(target=_run_worker, args=(host, port), name="alliance-worker")
        process.start()
        return process

    processes = [start() for _ in range(workers)]
    logger.info("started %d workers on %s:%d: %s", workers, host, port, [p.pid for p in processes])
    while not stopping:
        wait([p.sentinel for p in processes], timeout=0.5)
        for index, process in enumerate(processes):
            if stopping or process.is_alive():
                continue
            logger.warning("worker %s exited with %s; starting another", process.pid, process.exitcode)
            time.sleep(RESTART_PAUSE)
            processes[index] = start()
    for process in processes:
        process.terminate()  # SIGTERM: uvicorn stops accepting and finishes what it has
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            logger.warning("worker %s did not stop in %.0f s; killed", process.pid, STOP_TIMEOUT)
            process.kill()
            process.join()
    return 0
