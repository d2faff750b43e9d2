"""Fixtures shared by the whole suite: settings, stores and service probes."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Fixture modules imported by test modules: let pytest rewrite their asserts too.
pytest.register_assert_rewrite(
    "tests.tasks.conftest_data",
    "tests.tasks.conftest_model",
    "tests.tasks.conftest_monitoring",
    "tests.serving.conftest_serving",
)

# Keep TensorFlow quiet and small on a shared 2-core machine.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Airflow reads its home when first imported: keep tests out of ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", str(PROJECT_ROOT / "var" / "airflow-test"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))

TELCO_CSV = PROJECT_ROOT.parent / "shared" / "data" / "telco_customer_churn.csv"
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432

pytest_plugins = ["tests.gcs_emulator"]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def telco_csv() -> Path:
    """The real IBM Telco table from ../shared/data; the test skips without it."""
    if not TELCO_CSV.is_file():
        pytest.skip(f"the Telco churn table is not at {TELCO_CSV}")
    return TELCO_CSV


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'scores.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1:5432, dropped afterwards."""
    if not _reachable(POSTGRES_HOST, POSTGRES_PORT):
        pytest.skip(f"PostgreSQL is not reachable on {POSTGRES_HOST}:{POSTGRES_PORT}")
    import sqlalchemy as sa

    name = f"churnops_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        f"postgresql+psycopg2://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres",
        isolation_level="AUTOCOMMIT",
    )
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL refused to create a test database: {exc}")
    try:
        yield f"postgresql+psycopg2://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def settings_env(tmp_path: Path) -> dict[str, str]:
    """Environment that points churnops' storage and score store into ``tmp_path``."""
    return {
        "CHURNOPS_STORAGE_ROOT": str(tmp_path / "artifacts"),
        "CHURNOPS_SCORE_DB_URL": f"sqlite:///{tmp_path / 'scores.db'}",
    }
