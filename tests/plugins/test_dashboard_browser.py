"""The dashboard as a real browser renders it: headless Chromium against uvicorn."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gates.api import create_app
from gates.result import GateResult, Verdict
from gates.rubric import RUBRIC
from gates.store import ScoreStore

pytestmark = pytest.mark.browser

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
BROWSER_TIMEOUT_S = 120


def _chromium() -> str:
    for name in CHROMIUM_NAMES:
        if found := shutil.which(name):
            return found
    pytest.skip(
        "headless Chromium is not installed "
        "(apt-get install -y chromium chromium-driver)"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _seed_scores(url: str) -> None:
    """Model v3: every verdict kind, a manual half point and a hostile reason."""
    store = ScoreStore.open(url)
    store.start_run("churn_training", "scheduled__2025-01-06", model_version="v3")
    verdicts = [Verdict.PASS, Verdict.PASS, Verdict.WARN, Verdict.INSUFFICIENT]
    for index, test in enumerate(RUBRIC):
        if test.id in ("D5", "Mo6"):
            continue
        verdict = Verdict.FAIL if test.id == "M6" else verdicts[index % 4]
        store.record(
            "churn_training",
            "scheduled__2025-01-06",
            GateResult(
                test.id,
                verdict,
                f"{test.check[:60]} <b>checked</b>",
                value=0.8 + index / 100,
                threshold=0.75,
                evidence=f"gs://churn-bucket/reports/{test.id}.json",
            ),
        )
    store.record_manual(
        "D5",
        verdict=Verdict.PASS,
        reason="privacy review signed off by the data protection officer",
        recorded_by="ada",
        model_version="v3",
    )


@pytest.fixture
def dashboard_url(tmp_path: Path) -> Iterator[str]:
    """The dashboard app served by uvicorn on a free loopback port."""
    import uvicorn

    url = f"sqlite:///{tmp_path / 'scores.db'}"
    _seed_scores(url)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(url), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT_S,
        check=False,
    )


def test_dashboard_renders_in_chromium(dashboard_url: str, tmp_path: Path) -> None:
    """Chromium's DOM shows the final score, all 28 tests, and escaped text."""
    _chromium()
    dumped = _run_chromium(tmp_path, "--dump-dom", dashboard_url)
    dom = dumped.stdout
    assert dumped.returncode == 0 and "</html>" in dom, dumped.stderr[-2000:]

    # Monitoring has no Mo6 result (6 points); data has a manual D5 (6.5).
    assert 'data-score="6"' in dom
    assert "model v3" in dom
    for test in RUBRIC:
        assert f'id="test-{test.id}"' in dom, test.id
    assert "&lt;b&gt;checked&lt;/b&gt;" in dom
    assert "<b>checked</b>" not in dom
    assert 'class="verdict v-fail"' in dom

    screenshot = tmp_path / "ml-test-score.png"
    shot = _run_chromium(
        tmp_path,
        f"--screenshot={screenshot}",
        "--window-size=1280,1700",
        dashboard_url,
    )
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000
