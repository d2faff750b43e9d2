"""A monitored world: a tiny production model with its training run, a few days of
simulated live traffic through the real service, and labels that arrived.

Import explicitly (``pytest_plugins = ("tests.tasks.conftest_monitoring",)``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gates.store import ScoreStore
from serving.settings import ServingSettings
from tasks.config import Settings, load_settings
from tasks.context import RunContext
from tasks.labels import simulate_live_traffic
from tasks.registry import move_alias, register_model_version
from tasks.storage import FileStore
from tasks.validation import build_expectation_suite
from tests.serving.conftest_serving import TEST_KEY
from tests.tasks.conftest_model import SMALL_HYPERPARAMETERS, ModelData

pytest_plugins = ("tests.tasks.conftest_model",)

TRAINING_RUN = "runs/churn_training/test-run"
TODAY = dt.date(2026, 12, 3)
SERVING = ServingSettings(reload_interval_seconds=3600, log_flush_seconds=3600)
MONITORING = {
    "min_labelled_rows": 40,
    "min_slice_rows": 1000,
    "max_auc_drop": 0.25,
    "max_calibration_rise": 0.3,
    "probe_rows": 20,
    "probe_repeats": 1,
    # 150 serving rows against 540 training rows: PSI noise alone nears 0.1.
    "psi_warn": 0.3,
    "psi_fail": 0.6,
}


def clock_at(day: dt.date) -> Any:
    return lambda: dt.datetime.combine(day, dt.time(6), tzinfo=dt.UTC)


def test_settings(root: Path, **monitoring: Any) -> Settings:
    settings = load_settings(environ={"CHURNOPS_STORAGE_ROOT": str(root)})
    gates = dict(settings.gates)
    gates["monitoring"] = {**gates["monitoring"], **MONITORING, **monitoring}
    return dataclasses.replace(settings, gates=gates)


def register_production(
    store: FileStore, data: ModelData, *, budget_days: float | None = 1000.0
) -> str:
    """A tiny untrained model as production, with the training run monitoring reads."""
    from tasks.data_steps import frame_to_parquet
    from tasks.model_spec import build_churn_model
    from tasks.train import predict_probabilities

    model = build_churn_model(
        len(data.transform.output_names), SMALL_HYPERPARAMETERS, 3
    )
    moment = dt.datetime.combine(TODAY, dt.time(1), tzinfo=dt.UTC)
    version = register_model_version(
        store,
        model,
        data.transform,
        spec={"hyperparameters": SMALL_HYPERPARAMETERS},
        metrics={"holdout_auc": 0.7, "staleness_budget_days": budget_days},
        lineage={"run": TRAINING_RUN, "commit": None, "dataset": data.dataset.name},
        clock=lambda: moment,
    )
    suite = build_expectation_suite(
        data.frames["train"], data.dataset, range_tolerance=0.5
    )
    store.write_text(f"{TRAINING_RUN}/validation/suite.json", json.dumps(suite))
    for part in ("train", "holdout"):
        store.write_bytes(
            f"{TRAINING_RUN}/features/{part}.parquet",
            frame_to_parquet(data.frames[part]),
        )
    buffer = io.BytesIO()
    np.save(buffer, predict_probabilities(model, data.x("holdout")))
    store.write_bytes(f"{TRAINING_RUN}/model/candidate_holdout.npy", buffer.getvalue())
    training = {
        "seconds": 6.0,
        "epochs_run": 3,
        "history": [{"loss": 0.6, "val_loss": 0.61}],
    }
    store.write_text(f"{TRAINING_RUN}/model/training.json", json.dumps(training))
    move_alias(
        store, "production", version, actor="test", reason="test", clock=clock_at(TODAY)
    )
    return version


@dataclass
class World:
    """A store with a monitored production model and traffic up to yesterday."""

    root: Path
    version: str
    settings: Settings
    traffic: dict[str, Any]

    def copy(self, target: Path) -> World:
        shutil.copytree(self.root, target)
        return dataclasses.replace(self, root=target, settings=test_settings(target))

    @property
    def store(self) -> FileStore:
        return FileStore(self.root)

    def context(
        self, run_id: str, *, day: dt.date = TODAY, **monitoring: Any
    ) -> RunContext:
        settings = test_settings(self.root, **monitoring)
        return RunContext(
            settings=settings,
            dag_id="churn_monitoring",
            run_id=run_id,
            clock=clock_at(day),
            store_override=self.store,
            scores_override=ScoreStore.open(
                f"sqlite:///{self.root.parent / 'scores.db'}"
            ),
        )


@pytest.fixture(scope="session")
def monitored_world(
    keras_single_thread: Any,
    model_data: ModelData,
    tmp_path_factory: pytest.TempPathFactory,
) -> World:
    root = tmp_path_factory.mktemp("monitored") / "artifacts"
    store = FileStore(root)
    version = register_production(store, model_data)
    settings = test_settings(root)
    traffic = simulate_live_traffic(
        settings,
        days=5,
        customers_per_day=30,
        key=TEST_KEY,
        seed=5,
        clock=clock_at(TODAY),
        store=store,
        serving=SERVING,
    )
    return World(root, version, settings, traffic)


@pytest.fixture
def world(monitored_world: World, tmp_path: Path) -> World:
    """A private copy of the monitored world, free to break."""
    return monitored_world.copy(tmp_path / "artifacts")
