"""Training: early stopping, checkpoints in storage, resuming after a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.storage import FileStore
from tasks.train import (
    CheckpointPlace,
    TrainingError,
    TrainingInterrupted,
    latest_checkpoint,
    predict_probabilities,
    train_churn_model,
)
from tests.tasks.conftest_model import ModelData

pytest_plugins = ("tests.tasks.conftest_model",)


def _train(data: ModelData, hp: dict[str, Any], **kwargs: Any) -> Any:
    return train_churn_model(
        data.x("train"),
        data.y("train"),
        data.x("validation"),
        data.y("validation"),
        hp,
        **{"seed": 5, "max_epochs": 4, "patience": 10, **kwargs},
    )


def test_train_churn_model_resumes_identically(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
    tmp_path: Path,
) -> None:
    """A run killed after epoch 2 and resumed ends with the same weights as one run."""
    whole = _train(model_data, small_hyperparameters)
    place = CheckpointPlace(FileStore(tmp_path), "runs/r1/checkpoints")
    with pytest.raises(TrainingInterrupted):
        _train(model_data, small_hyperparameters, checkpoints=place, stop_after_epoch=2)
    assert latest_checkpoint(place)["epoch"] == 2  # type: ignore[index]
    resumed = _train(model_data, small_hyperparameters, checkpoints=place)
    assert resumed.resumed_from_epoch == 2
    for a, b in zip(
        whole.model.get_weights(), resumed.model.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert resumed.history == whole.history
    assert place.store.list("runs/r1/checkpoints/tensorboard/")


def test_train_churn_model_stops_early(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
) -> None:
    """With patience 1 and a huge learning rate, training stops and keeps the best."""
    hp = {**small_hyperparameters, "learning_rate": 0.3}
    outcome = _train(model_data, hp, max_epochs=30, patience=1)
    assert outcome.stopped_early
    assert outcome.epochs_run < 30
    assert outcome.best_epoch == outcome.epochs_run - 1
    val = predict_probabilities(outcome.model, model_data.x("validation"))
    assert np.all((val >= 0) & (val <= 1))


def test_train_churn_model_refuses_foreign_checkpoint(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
    tmp_path: Path,
) -> None:
    """A checkpoint from other hyperparameters is not silently continued."""
    place = CheckpointPlace(FileStore(tmp_path), "ck")
    with pytest.raises(TrainingInterrupted):
        _train(model_data, small_hyperparameters, checkpoints=place, stop_after_epoch=1)
    other = {**small_hyperparameters, "hidden_units": 8}
    with pytest.raises(TrainingError, match="was written with seed 5"):
        _train(model_data, other, checkpoints=place)
