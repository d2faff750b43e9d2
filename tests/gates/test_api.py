"""The dashboard and JSON API over a real SQLite score store, without Airflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from gates.api import AuthenticationRequired, create_app
from gates.cli import main
from gates.result import GateResult, Verdict
from gates.rubric import RUBRIC
from gates.store import ScoreStore

HOSTILE_REASON = "drift <script>alert('x')</script> & more"


@pytest.fixture
def seeded_url(sqlite_url: str) -> str:
    """Two runs: r1 tests model v1 (monitoring unscored), r2 fails D1 on model v2."""
    store = ScoreStore.open(sqlite_url)
    store.start_run("churn_training", "r1", model_version="v1")
    for test in RUBRIC:
        if test.section != "monitoring":
            store.record(
                "churn_training",
                "r1",
                GateResult(test.id, Verdict.PASS, "ok", value=0.9, threshold=0.8),
            )
    store.start_run("churn_training", "r2", model_version="v2")
    store.record(
        "churn_training",
        "r2",
        GateResult(
            "D1",
            Verdict.FAIL,
            HOSTILE_REASON,
            evidence="gs://churn-bucket/reports/d1.json",
        ),
    )
    store.record_deployment(
        alias="production", model_version="v1", action="promote", reason="ok", actor="a"
    )
    store.notify("skew", "serving skew above bound", severity="warning")
    return sqlite_url


@pytest.fixture
def client(seeded_url: str) -> TestClient:
    return TestClient(create_app(seeded_url))


def _cli_json(url: str, capsys: pytest.CaptureFixture[str], *scope: str) -> object:
    assert main(["--db", url, "report", "--format", "json", *scope]) == 0
    return json.loads(capsys.readouterr().out)


def test_api_report_equals_cli_json(
    client: TestClient, seeded_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """GET api/report returns exactly what `churnops report --format json` prints."""
    for query, scope in (
        ("", ()),
        ("?run=r1", ("--run", "r1")),
        ("?model=v1", ("--model", "v1")),
    ):
        response = client.get(f"/api/report{query}")
        assert response.status_code == 200, response.text
        assert response.json() == _cli_json(seeded_url, capsys, *scope)


def test_api_report_selects_run_and_model(client: TestClient) -> None:
    """The latest model is the default; run and model narrow the scope."""
    latest = client.get("/api/report").json()
    assert latest["scope"] == "model v2"
    assert latest["sections"]["data"] == 1

    by_run = client.get("/api/report", params={"run": "r1"}).json()
    assert by_run["scope"] == "run r1 of churn_training"
    assert by_run["sections"] == {
        "data": 7,
        "model": 7,
        "infrastructure": 7,
        "monitoring": 0,
    }
    by_model = client.get("/api/report", params={"model": "v1"}).json()
    assert by_model["model_version"] == "v1"
    assert by_model["final_score"] == 0


def test_api_report_unknown_run_is_404_with_message(client: TestClient) -> None:
    """An unknown run is not a zero score: 404 saying which run and where to look."""
    response = client.get("/api/report", params={"run": "no-such-run"})
    assert response.status_code == 404
    assert "no results recorded for run 'no-such-run'" in response.json()["detail"]
    assert "api/runs" in response.json()["detail"]

    page = client.get("/", params={"model": "v9"})
    assert page.status_code == 404
    assert "no results recorded for model version &#x27;v9&#x27;" in page.text


def test_api_report_rejects_run_and_model_together(client: TestClient) -> None:
    """Run and model at once have no single answer: 400."""
    response = client.get("/api/report", params={"run": "r1", "model": "v1"})
    assert response.status_code == 400
    assert "not both" in response.json()["detail"]


def test_api_lists_runs_deployments_and_notifications(client: TestClient) -> None:
    """The three list endpoints return the store's rows with zoned timestamps."""
    runs = client.get("/api/runs").json()
    assert [(r["run_id"], r["model_version"]) for r in runs] == [
        ("r1", "v1"),
        ("r2", "v2"),
    ]
    assert runs[0]["started_at"].endswith("+00:00")
    deployments = client.get("/api/deployments").json()
    assert [(d["alias"], d["action"]) for d in deployments] == [
        ("production", "promote")
    ]
    assert client.get("/api/deployments", params={"alias": "canary"}).json() == []
    notifications = client.get("/api/notifications").json()
    assert notifications[0]["message"] == "serving skew above bound"


def test_dashboard_shows_score_sections_and_all_tests(client: TestClient) -> None:
    """The page carries the final score, four bars and one row per rubric test."""
    page = client.get("/", params={"run": "r1"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'data-score="0"' in page.text
    assert page.text.count('class="bar-row') == 4
    for test in RUBRIC:
        assert f'id="test-{test.id}"' in page.text
    assert '<option value="churn_training/r1" selected>' in page.text


def test_dashboard_escapes_stored_text(client: TestClient) -> None:
    """A reason holding markup is shown as text, never run as script."""
    page = client.get("/", params={"run": "r2"})
    assert "<script>" not in page.text
    assert "drift &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in (
        page.text
    )
    assert 'class="verdict v-fail"' in page.text
    assert "https://storage.cloud.google.com/churn-bucket/reports/d1.json" in page.text
    assert 'title="gs://churn-bucket/reports/d1.json"' in page.text


def test_dashboard_on_an_empty_store_scores_zero(sqlite_url: str) -> None:
    """A fresh install shows a zero score and 28 unscored tests, not an error."""
    page = TestClient(create_app(sqlite_url)).get("/")
    assert page.status_code == 200
    assert page.text.count("no result recorded") == 28


def test_api_unreadable_store_is_503_naming_the_setting() -> None:
    """A store that cannot be opened answers 503 and says which setting to check."""
    client = TestClient(create_app("sqlite:////nonexistent-dir/x/scores.db"))
    response = client.get("/api/runs")
    assert response.status_code == 503
    assert "CHURNOPS_SCORE_DB_URL" in response.json()["detail"]
    assert client.get("/").status_code == 503


def test_api_store_url_defaults_to_settings(
    seeded_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a URL the app reads CHURNOPS_SCORE_DB_URL at the first request."""
    monkeypatch.setenv("CHURNOPS_SCORE_DB_URL", seeded_url)
    runs = TestClient(create_app()).get("/api/runs").json()
    assert [r["run_id"] for r in runs] == ["r1", "r2"]


def test_api_auth_dependency_guards_every_route(seeded_url: str) -> None:
    """Without identity: API routes answer 401, the page redirects to the login."""

    async def authenticate(request: Request) -> str:
        if request.headers.get("authorization") != "Bearer good":
            raise AuthenticationRequired("no token", login_url="/auth/login?next=x")
        return "ada"

    client = TestClient(create_app(seeded_url, auth_dependency=authenticate))
    for path in ("/api/report", "/api/runs", "/api/deployments", "/api/notifications"):
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert refused.json()["detail"] == "no token"
        assert client.get(path, headers={"Authorization": "Bearer good"}).is_success

    redirect = client.get("/", follow_redirects=False)
    assert redirect.status_code == 303
    assert redirect.headers["location"] == "/auth/login?next=x"
    page = client.get("/", headers={"Authorization": "Bearer good"})
    assert "signed in as ada" in page.text


def test_api_report_run_with_its_dag_when_ids_repeat(tmp_path: Path) -> None:
    """run=DAG/RUN picks one DAG's run; a bare id shared by two DAGs is a 400."""
    url = f"sqlite:///{tmp_path / 'scores.db'}"
    store = ScoreStore.open(url)
    shared = "scheduled__2026-12-06T00:00:00+00:00"
    store.record("churn_training", shared, GateResult("M5", Verdict.PASS, "ok"))
    store.record("churn_monitoring", shared, GateResult("Mo4", Verdict.PASS, "ok"))
    client = TestClient(create_app(url))

    ambiguous = client.get("/api/report", params={"run": shared})
    picked = client.get("/api/report", params={"run": f"churn_monitoring/{shared}"})

    assert ambiguous.status_code == 400
    assert "name the DAG too" in ambiguous.text
    assert picked.status_code == 200
    ran = {t["id"] for t in picked.json()["tests"] if t["run_id"]}
    assert ran == {"Mo4"}
