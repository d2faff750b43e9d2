"""Helpers for tests that run whole DAGs through real Airflow processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    """Run the airflow CLI; on failure, the assertion shows the tail of its output."""
    completed = subprocess.run(
        [str(BIN / "airflow"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=PROJECT_ROOT,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, (
        f"airflow {' '.join(args)} failed:\n{output[-6000:]}"
    )
    return output


@contextmanager
def background(
    env: dict[str, str], log: Path, *args: str
) -> Iterator[subprocess.Popen[bytes]]:
    """An airflow component in its own process group, stopped with all it spawned."""
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [str(BIN / "airflow"), *args],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            os.killpg(process.pid, 15)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()


def wait_for_http(url: str, seconds: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the process serving {url} exited"
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} did not answer within {seconds:.0f} s")
