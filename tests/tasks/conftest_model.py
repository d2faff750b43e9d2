"""Fixtures for the model path: small synthetic frames, a fitted transform, Keras.

Import them explicitly (``from tests.tasks.conftest_model import ...``): they are not
registered in ``tests/conftest.py``, so each test module says what it uses.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tasks.config import DatasetConfig, ModelConfig, load_dataset, load_model_config
from tasks.features import FeatureTransform, encode_label, fit_features

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SMALL_HYPERPARAMETERS: dict[str, Any] = {
    "hidden_units": 16,
    "hidden_layers": 1,
    "dropout": 0.1,
    "learning_rate": 0.01,
    "l2": 1e-5,
    "batch_size": 64,
}


@dataclass
class ModelData:
    """Train, validation and holdout rows with their matrices and labels."""

    dataset: DatasetConfig
    transform: FeatureTransform
    frames: dict[str, pd.DataFrame]

    def x(self, part: str) -> np.ndarray:
        return self.transform.transform(self.frames[part])

    def y(self, part: str) -> np.ndarray:
        return encode_label(self.frames[part], self.dataset.contract.label)


def fixed_clock(moment: dt.datetime | None = None) -> Any:
    """A clock that ticks one second per call from ``moment``."""
    state = {"now": moment or dt.datetime(2026, 12, 3, 15, 45, tzinfo=dt.UTC)}

    def clock() -> dt.datetime:
        state["now"] += dt.timedelta(seconds=1)
        return state["now"]

    return clock


def split_customers(frame: pd.DataFrame, seed: int = 0) -> dict[str, pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(frame))
    n = len(frame)
    cut1, cut2 = int(n * 0.6), int(n * 0.8)
    return {
        "train": frame.iloc[order[:cut1]].reset_index(drop=True),
        "validation": frame.iloc[order[cut1:cut2]].reset_index(drop=True),
        "holdout": frame.iloc[order[cut2:]].reset_index(drop=True),
    }


def make_model_data(n_rows: int = 900, seed: int = 11) -> ModelData:
    from tasks.synthetic import generate_customers

    dataset = load_dataset(PROJECT_ROOT / "config/datasets/synthetic.yaml")
    frames = split_customers(generate_customers(n_rows, seed))
    transform = fit_features(frames["train"], dataset)
    return ModelData(dataset=dataset, transform=transform, frames=frames)


@pytest.fixture(scope="session")
def keras_single_thread() -> Any:
    """Keras with one TensorFlow thread each way, deterministic."""
    from tasks.model_spec import prepare_keras

    return prepare_keras(1)


@pytest.fixture(scope="session")
def model_data() -> ModelData:
    """900 synthetic customers split 60/20/20 with a transform fitted on training."""
    return make_model_data()


@pytest.fixture
def model_config() -> ModelConfig:
    return load_model_config(PROJECT_ROOT / "config/model.yaml")


@pytest.fixture
def small_hyperparameters() -> dict[str, Any]:
    return dict(SMALL_HYPERPARAMETERS)
