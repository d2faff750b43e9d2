"""Helpers for the data-path tests: a tiny contract, small sources, run contexts.

Import them explicitly (``from tests.tasks.conftest_data import ...``): they are not
registered in ``tests/conftest.py``, so each test module says what it uses.
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from gates.store import ScoreStore
from tasks.config import DatasetConfig, Settings, load_settings, parse_dataset
from tasks.context import RunContext
from tasks.storage import FileStore

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SYNTHETIC_YAML = PROJECT_ROOT / "config" / "datasets" / "synthetic.yaml"
KEY = b"test-key-0123456789abcdef"

TINY_DATASET: dict[str, Any] = {
    "name": "tiny",
    "source": "file://customers.csv",
    "contract": {
        "id_column": "customer_id",
        "label": {"column": "churned", "positive": "yes", "classes": ["yes", "no"]},
        "direct_identifiers": ["email"],
        "columns": {
            "customer_id": {"type": "string"},
            "email": {"type": "string"},
            "plan": {"type": "category", "values": ["basic", "pro"]},
            "tenure": {"type": "integer", "min": 0, "max": 100},
            "charges": {"type": "float", "min": 0, "nullable": True},
            "churned": {"type": "category"},
        },
    },
    "features": {
        "plan": {
            "kind": "categorical",
            "owner": "sales",
            "source": "crm",
            "declared": "2026-01-01",
        },
        "tenure": {
            "kind": "numeric",
            "owner": "billing",
            "source": "crm",
            "declared": "2026-01-01",
        },
        "charges": {
            "kind": "numeric",
            "owner": "billing",
            "source": "invoices",
            "declared": "2026-01-01",
        },
    },
    "model_inputs": ["plan", "tenure", "charges"],
}

TINY_CSV = (
    "customer_id,email,plan,tenure,charges,churned\n"
    "C-1001,ann@example.com,basic,1,10.5,yes\n"
    "C-1002,bob@example.com,pro,24,99.0,no\n"
    "C-1003,cy@example.com,basic,3, ,yes\n"
    "C-1004,dee@example.com,pro,60,120.25,no\n"
)


def tiny_dataset(**changes: Any) -> DatasetConfig:
    """The tiny contract, with top-level keys replaced by ``changes``."""
    data = copy.deepcopy(TINY_DATASET)
    data.update(changes)
    return parse_dataset(data, where="tiny test dataset")


def write_dataset_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def synthetic_dataset_dict() -> dict[str, Any]:
    """The committed synthetic dataset config as a mapping, to copy and change."""
    data = yaml.safe_load(SYNTHETIC_YAML.read_text(encoding="utf-8"))
    return copy.deepcopy(data)


def make_settings(tmp_path: Path) -> Settings:
    return load_settings(
        environ={
            "CHURNOPS_STORAGE_ROOT": str(tmp_path / "artifacts"),
            "CHURNOPS_SCORE_DB_URL": f"sqlite:///{tmp_path / 'scores.db'}",
        }
    )


def make_context(
    tmp_path: Path,
    *,
    run_id: str = "run_1",
    params: dict[str, Any] | None = None,
    today: dt.date | None = None,
) -> RunContext:
    """A run context with storage and the score store inside ``tmp_path``."""
    settings = make_settings(tmp_path)
    moment = dt.datetime.combine(today or dt.date(2026, 12, 1), dt.time(12), dt.UTC)
    return RunContext(
        settings=settings,
        dag_id="churn_training",
        run_id=run_id,
        params=dict(params or {}),
        clock=lambda: moment,
        store_override=FileStore(tmp_path / "artifacts"),
        scores_override=ScoreStore.open(f"sqlite:///{tmp_path / 'scores.db'}"),
    )


def results_of(ctx: RunContext, test_id: str) -> list[Any]:
    return [r for r in ctx.scores.results() if r.test_id == test_id]


def snapshot_files(ctx: RunContext) -> dict[str, bytes]:
    """Every stored artifact and its bytes, to prove nothing changed."""
    return {key: ctx.store.read_bytes(key) for key in ctx.store.list("")}


def small_customers(rows: int = 600, seed: int = 1) -> pd.DataFrame:
    from tasks.synthetic import generate_customers

    return generate_customers(rows, seed)
