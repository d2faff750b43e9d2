"""Fixtures for the prediction service: a registry with tiny Keras versions, customers
with pseudonymized ids, and the real app on a loopback port.

Import them explicitly (``pytest_plugins = ("tests.serving.conftest_serving",)``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from serving.app import build_service, create_app
from serving.router import ModelRouter, ServedModel, load_served_model
from serving.runner import serve_in_thread
from serving.settings import ServingSettings
from tasks.config import DatasetConfig
from tasks.pseudonymize import pseudonymize_customers
from tasks.registry import move_alias, register_model_version
from tasks.storage import ArtifactStore, FileStore
from tasks.traffic import customer_records
from tests.tasks.conftest_model import SMALL_HYPERPARAMETERS, ModelData, fixed_clock

pytest_plugins = ("tests.tasks.conftest_model",)

TEST_KEY = b"churnops-test-key-0123456789abcdef"
TEST_SETTINGS = ServingSettings(
    canary_share=0.3,
    reload_interval_seconds=3600,
    log_batch_size=8,
    log_flush_seconds=3600,
)


def register_tiny_model(
    store: ArtifactStore,
    data: ModelData,
    seed: int,
    clock: Any,
    *,
    extra_inputs: int = 0,
) -> str:
    """An untrained small model; ``extra_inputs`` > 0 makes one that cannot predict."""
    from tasks.model_spec import build_churn_model

    width = len(data.transform.output_names) + extra_inputs
    model = build_churn_model(width, SMALL_HYPERPARAMETERS, seed)
    return register_model_version(
        store,
        model,
        data.transform,
        spec={"hyperparameters": SMALL_HYPERPARAMETERS},
        metrics={"holdout_auc": 0.8},
        lineage={"seed": seed},
        clock=clock,
    )


def pseudonymized(frame: pd.DataFrame, dataset: DatasetConfig) -> pd.DataFrame:
    rows = pseudonymize_customers(frame, dataset.contract, TEST_KEY)
    return rows.drop(columns=[dataset.contract.label.column])


@dataclass
class Registry:
    """A store with two good versions, production on the first."""

    store: FileStore
    data: ModelData
    clock: Any
    first: str
    second: str

    def move(self, alias: str, version: str) -> None:
        move_alias(
            self.store, alias, version, actor="test", reason="test", clock=self.clock
        )

    def customers(self, n: int = 40) -> list[dict[str, Any]]:
        frame = pseudonymized(self.data.frames["holdout"].head(n), self.data.dataset)
        return customer_records(frame)


@pytest.fixture
def registry(
    keras_single_thread: Any, model_data: ModelData, tmp_path: Path
) -> Registry:
    store = FileStore(tmp_path / "artifacts")
    clock = fixed_clock()
    first = register_tiny_model(store, model_data, 1, clock)
    second = register_tiny_model(store, model_data, 2, clock)
    move_alias(store, "production", first, actor="test", reason="first", clock=clock)
    return Registry(store, model_data, clock, first, second)


@dataclass
class SlowModel:
    """A real version that answers late: the fault a canary must catch."""

    inner: ServedModel
    delay_seconds: float

    @property
    def version(self) -> str:
        return self.inner.version

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        time.sleep(self.delay_seconds)
        return self.inner.predict(frame)


def slow_loader(slow_version: str, delay_seconds: float) -> Any:
    def load(store: ArtifactStore, version: str) -> ServedModel:
        model = load_served_model(store, version)
        return SlowModel(model, delay_seconds) if version == slow_version else model

    return load


@contextlib.contextmanager
def running_service(
    store: ArtifactStore,
    dataset: DatasetConfig,
    settings: ServingSettings = TEST_SETTINGS,
    *,
    loader: Any = load_served_model,
) -> Iterator[tuple[str, Any]]:
    """The real app over HTTP on loopback; yields its URL and the service object."""
    router = ModelRouter(store, settings.canary_share, load=loader)
    service = build_service(store, settings, dataset, router=router)
    with serve_in_thread(create_app(service)) as running:
        yield running.url, service
