"""The Airflow plugin: loads cleanly, mounts the app, adds the view, checks the JWT.

Airflow reads its configuration and plugins once per process, so the checks run in a
fresh interpreter with its own AIRFLOW_HOME and report back as JSON. There the real
API server app is built (``create_app("core")``: plugins, simple auth manager,
middlewares) and called in-process, with a token minted by the auth manager the way
the login endpoint mints one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gates.result import GateResult, Verdict
from gates.store import ScoreStore

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HEAVY_MODULES = ("pandas", "tensorflow", "keras", "great_expectations", "sklearn")

_PROBE = r"""
import json, sys
heavy = sys.argv[1].split(",")
out = {}

from airflow import plugins_manager
plugins_manager.ensure_plugins_loaded()
out["import_errors"] = plugins_manager.get_import_errors()
out["plugins"] = [p.name for p in plugins_manager._get_plugins()[0]]
out["heavy_after_plugins"] = [m for m in heavy if m in sys.modules]
apps, _ = plugins_manager.get_fastapi_plugins()
out["fastapi_apps"] = [
    {"url_prefix": a["url_prefix"], "name": a["name"]} for a in apps
]
views, _ = plugins_manager._get_ui_plugins()
out["external_views"] = views

from airflow import settings
from airflow.models.revoked_token import RevokedToken
RevokedToken.__table__.create(settings.engine, checkfirst=True)

from airflow.api_fastapi.app import create_app, get_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from fastapi.testclient import TestClient

client = TestClient(create_app("core"))
token = get_auth_manager().generate_jwt(
    SimpleAuthManagerUser(username="ada", role="viewer")
)
bearer = {"Authorization": f"Bearer {token}"}

def answer(response):
    try:
        body = response.json()
    except ValueError:
        body = response.text[:20000]
    return {
        "status": response.status_code,
        "location": response.headers.get("location"),
        "body": body,
    }

out["api_anonymous"] = answer(client.get("/churnops/api/report"))
out["api_forged"] = answer(
    client.get("/churnops/api/report", headers={"Authorization": "Bearer forged"})
)
out["api_bearer"] = answer(client.get("/churnops/api/report", headers=bearer))
out["page_anonymous"] = answer(
    client.get("/churnops/?run=r1", follow_redirects=False)
)
client.cookies.set("_token", token)
out["page_cookie"] = answer(client.get("/churnops/?run=r1"))
client.cookies.clear()
out["plugins_api"] = answer(client.get("/api/v2/plugins", headers=bearer))
print("PROBE " + json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the probe once against a score store with one scored run."""
    home = tmp_path_factory.mktemp("airflow_home")
    (home / "dags").mkdir()
    scores_url = f"sqlite:///{home / 'scores.db'}"
    store = ScoreStore.open(scores_url)
    store.start_run("churn_training", "r1", model_version="v1")
    store.record("churn_training", "r1", GateResult("D1", Verdict.PASS, "schema ok"))

    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager."
            "SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "ada:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": "churnops-plugin-test-secret-0123456789",
        "CHURNOPS_SCORE_DB_URL": scores_url,
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(HEAVY_MODULES)],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("PROBE ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("PROBE "))
    return result


def test_plugin_loads_without_errors_or_heavy_imports(probe: dict[str, Any]) -> None:
    """Airflow's plugins manager loads churnops with no import error, nothing heavy."""
    assert "churnops" in probe["plugins"]
    assert probe["import_errors"] == {}
    assert probe["heavy_after_plugins"] == []


def test_plugin_registers_app_and_view(probe: dict[str, Any]) -> None:
    """The app is mounted at /churnops and "ML Test Score" is a nav entry."""
    assert {"url_prefix": "/churnops", "name": "churnops ML Test Score"} in probe[
        "fastapi_apps"
    ]
    view = next(v for v in probe["external_views"] if v["name"] == "ML Test Score")
    assert (view["href"], view["destination"]) == ("churnops/", "nav")
    listed = probe["plugins_api"]
    assert listed["status"] == 200
    ours = next(p for p in listed["body"]["plugins"] if p["name"] == "churnops")
    assert [v["name"] for v in ours["external_views"]] == ["ML Test Score"]


def test_plugin_api_rejects_a_request_without_a_token(probe: dict[str, Any]) -> None:
    """No token, or a forged one, gets 401 from the mounted API."""
    for case in ("api_anonymous", "api_forged"):
        assert probe[case]["status"] == 401, probe[case]
        assert "sign in to Airflow" in probe[case]["body"]["detail"]


def test_plugin_api_accepts_a_token_minted_by_airflow(probe: dict[str, Any]) -> None:
    """A JWT from the auth manager (as the login issues) reads the report."""
    answer = probe["api_bearer"]
    assert answer["status"] == 200, answer
    assert answer["body"]["scope"] == "model v1"
    assert len(answer["body"]["tests"]) == 28


def test_plugin_page_redirects_anonymous_users_to_login(
    probe: dict[str, Any],
) -> None:
    """The dashboard sends a visitor without a session to Airflow's login page."""
    answer = probe["page_anonymous"]
    assert answer["status"] == 303
    assert answer["location"].startswith("/auth/login?next=")
    assert "churnops" in answer["location"]


def test_plugin_page_accepts_the_ui_session_cookie(probe: dict[str, Any]) -> None:
    """The `_token` cookie the Airflow UI sets opens the dashboard."""
    answer = probe["page_cookie"]
    assert answer["status"] == 200
    assert "signed in as ada" in answer["body"]
    assert 'id="test-Mo7"' in answer["body"]
