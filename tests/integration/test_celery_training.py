"""churn_training on the production shape: PostgreSQL, Redis and Celery workers.

The Airflow metadata database and the score store are fresh PostgreSQL databases,
Redis is the Celery broker, a Celery worker runs every task through Airflow's
execution API, and storage is a folder. The run trains on a small synthetic sample
with a small search, so it proves the wiring, not the model.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from gates.rubric import RUBRIC
from gates.store import ScoreStore
from tests.integration.conftest import (
    PROJECT_ROOT,
    airflow,
    background,
    free_port,
    wait_for_http,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SMALL_MODEL = """
seed: 42
validation_share: 0.2
holdout_share: 0.2
search: {trials: 2, epochs_per_trial: 2, patience: 2, parallel_trials: 1}
training: {max_epochs: 4, patience: 2}
hyperparameters:
  hidden_units: {type: int, low: 8, high: 16}
  hidden_layers: {type: int, low: 1, high: 2}
  dropout: {type: float, low: 0.0, high: 0.2}
  learning_rate: {type: float, low: 0.003, high: 0.01, log: true}
  l2: {type: float, low: 0.000001, high: 0.0001, log: true}
  batch_size: {type: choice, values: [64, 128]}
"""


def _redis_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def test_churn_training_runs_on_celery_with_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    """Every task runs on a Celery worker; gate rows land in the PostgreSQL store."""
    if not _redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    scores_url = postgres_url + "?options=-csearch_path%3Dscores"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA scores"))
    engine.dispose()
    model_yaml = tmp_path / "model.yaml"
    model_yaml.write_text(SMALL_MODEL)
    # Verdicts on a 3,000-row sample with a tiny search are noise; this test is about
    # the executor, so no data, model or I3 gate blocks here (each gate's own tests
    # show it blocking). The canary and the drill still would.
    settings = yaml.safe_load((PROJECT_ROOT / "config" / "churnops.yaml").read_text())
    for section in settings["gates"].values():
        section["blocking_tests"] = []
    settings["dataset"] = str(PROJECT_ROOT / "config" / "datasets" / "synthetic.yaml")
    settings["model"] = str(model_yaml)
    settings_yaml = tmp_path / "churnops.yaml"
    settings_yaml.write_text(yaml.safe_dump(settings))
    api_port = free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres_url,
        "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:6379/11",
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + postgres_url,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": (
            f"http://127.0.0.1:{api_port}/execution/"
        ),
        "AIRFLOW__API_AUTH__JWT_SECRET": "test-only-secret-" + "x" * 32,
        "CHURNOPS_STORAGE_ROOT": str(tmp_path / "artifacts"),
        "CHURNOPS_SCORE_DB_URL": scores_url,
        "CHURNOPS_SETTINGS": str(settings_yaml),
        "CHURNOPS_PSEUDONYMIZATION_KEY": "celery-test-key-" + "k" * 24,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop("CHURNOPS_EMBEDDED", None)
    conf = json.dumps({"source": "synthetic://3000?seed=5", "allow_dirty_spec": True})

    airflow(env, "db", "migrate")
    with (
        background(env, tmp_path / "api.log", "api-server") as api,
        background(env, tmp_path / "worker.log", "celery", "worker"),
    ):
        wait_for_http(f"http://127.0.0.1:{api_port}/api/v2/version", 120, api)
        output = airflow(
            env,
            "dags",
            "test",
            "churn_training",
            "--use-executor",
            "-c",
            conf,
            timeout=900,
        )

    worker_log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "succeeded" in worker_log, output[-3000:]
    assert "state=success" in output
    store = ScoreStore.open(scores_url)
    [run] = [r for r in store.runs() if r.dag_id == "churn_training"]
    assert run.model_version is not None
    recorded = {r.test_id for r in store.results(run_id=run.run_id)}
    expected = {t.id for t in RUBRIC if t.section != "monitoring"}
    assert expected <= recorded
    assert store.deployments("production")[-1]["model_version"] == run.model_version
