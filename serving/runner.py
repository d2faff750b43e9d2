"""Run the service: in the foreground (``python -m serving``) or in a thread.

The release steps and the tests start the real app on a free loopback port in a
background thread, talk to it over HTTP, and stop it when they are done.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class ServiceStartError(RuntimeError):
    """The service did not come up in time."""


@dataclass(frozen=True)
class RunningService:
    """A service answering on ``url`` until its context ends."""

    url: str
    app: FastAPI


@contextlib.contextmanager
def serve_in_thread(
    app: FastAPI, *, host: str = LOOPBACK, port: int = 0, start_timeout: float = 60.0
) -> Iterator[RunningService]:
    """Serve ``app`` with uvicorn in a daemon thread; port 0 picks a free one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run,
        kwargs={"sockets": [sock]},
        name=f"churnops-serving-{bound_port}",
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise ServiceStartError(
                f"the prediction service did not start on {host}:{bound_port} within "
                f"{start_timeout:.0f} s; see the log above for the cause"
            )
        time.sleep(0.02)
    url = f"http://{host}:{bound_port}"
    log.info("Prediction service listening on %s", url)
    try:
        yield RunningService(url=url, app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
