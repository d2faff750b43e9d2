"""ML infrastructure gates I1, I2, I4, I5, each with the fault that must fail it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gates.infrastructure import (
    KnownAnswer,
    check_candidate_quality,
    check_model_spec_tests,
    check_prediction_trace,
    check_reproducibility,
)
from gates.result import GateFailed, Verdict
from tasks.model_spec import build_churn_model
from tasks.storage import FileStore
from tasks.train import (
    CheckpointPlace,
    predict_probabilities,
    rehearse_model_spec,
    train_churn_model,
)
from tests.tasks.conftest_model import ModelData

pytest_plugins = ("tests.tasks.conftest_model",)

SPEC_SETTINGS = {
    "spec_test_rows": 128,
    "spec_test_steps": 5,
    "overfit_rows": 24,
    "overfit_steps": 150,
    "overfit_min_accuracy": 0.95,
    "overfit_min_learning_rate": 0.01,
}


def _rehearse(data: ModelData, hp: dict[str, Any], tmp_path: Path, **kw: Any) -> Any:
    checks = rehearse_model_spec(
        data.x("train"),
        data.y("train"),
        hp,
        seed=3,
        settings=SPEC_SETTINGS,
        checkpoints=CheckpointPlace(FileStore(tmp_path), "spec"),
        **kw,
    )
    return check_model_spec_tests(checks)


# I2


def test_check_model_spec_tests_sound_spec(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The committed spec passes all five unit tests."""
    result = _rehearse(model_data, small_hyperparameters, tmp_path)
    assert result.verdict is Verdict.PASS, result.reason
    assert "an interrupted training resumes" in result.reason


def test_check_model_spec_tests_zero_learning_rate(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
    tmp_path: Path,
) -> None:
    """A learning rate of 0 moves no weight and lowers no loss."""
    hp = {**small_hyperparameters, "learning_rate": 0.0}
    result = _rehearse(model_data, hp, tmp_path)
    assert result.verdict is Verdict.FAIL
    assert "one step changes every weight: unchanged" in result.reason
    assert "loss falls" in result.reason
    with pytest.raises(GateFailed, match="I2"):
        result.raise_if_failed()


def test_check_model_spec_tests_frozen_layer(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
    tmp_path: Path,
) -> None:
    """A spec with a frozen hidden layer is caught and the layer named."""

    def frozen(n: int, hp: dict[str, Any], seed: int) -> Any:
        model = build_churn_model(n, hp, seed)
        model.get_layer("hidden_1").trainable = False
        model.compile(optimizer="adam", loss="binary_crossentropy")
        return model

    result = _rehearse(model_data, small_hyperparameters, tmp_path, build_model=frozen)
    assert result.verdict is Verdict.FAIL
    assert "hidden_1[0]" in result.reason


# I1


def _train_twice(data: ModelData, hp: dict[str, Any], seed: int | None) -> Any:
    runs = [
        train_churn_model(
            data.x("train"),
            data.y("train"),
            data.x("validation"),
            data.y("validation"),
            hp,
            seed=seed,
            max_epochs=2,
            patience=2,
        )
        for _ in range(2)
    ]
    return [predict_probabilities(r.model, data.x("holdout")) for r in runs]


def test_check_reproducibility_seeded(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
) -> None:
    """Two seeded trainings predict identically."""
    first, second = _train_twice(model_data, small_hyperparameters, seed=9)
    result = check_reproducibility(first, second, max_diff=1e-6, seed=9)
    assert result.verdict is Verdict.PASS
    assert result.value == 0.0


def test_check_reproducibility_unseeded(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
) -> None:
    """An unseeded source of randomness (seed from the OS) fails."""
    first, second = _train_twice(model_data, small_hyperparameters, seed=None)
    result = check_reproducibility(first, second, max_diff=1e-6, seed=None)
    assert result.verdict is Verdict.FAIL
    assert "not seeded" in result.reason


# I4

_I4 = {"min_auc": 0.7, "max_auc_drop": 0.02, "max_log_loss_rise": 0.02}
_GOOD = {"auc": 0.84, "log_loss": 0.42}
_PROD = {"auc": 0.85, "log_loss": 0.41}
_ANSWERS = [KnownAnswer("new fiber vs loyal", 0.7, 0.05)]


def test_check_candidate_quality_passes_with_reasons() -> None:
    """Within the drop and known answers right: a reason per metric."""
    result = check_candidate_quality(_GOOD, _PROD, _ANSWERS, **_I4)
    assert result.verdict is Verdict.PASS
    assert set(result.details["reasons"]) == {
        "auc_floor",
        "auc_drop",
        "log_loss_rise",
        "known_answer:new fiber vs loyal",
    }


def test_check_candidate_quality_degraded_candidate() -> None:
    """A candidate well below production fails, both AUCs in the reason."""
    result = check_candidate_quality(
        {"auc": 0.78, "log_loss": 0.47}, _PROD, _ANSWERS, **_I4
    )
    assert result.verdict is Verdict.FAIL
    assert "AUC 0.780 vs production 0.850" in result.reason


def test_check_candidate_quality_known_answer_reversed() -> None:
    """A model that ranks the loyal customer above the new one fails."""
    result = check_candidate_quality(
        _GOOD, None, [KnownAnswer("new fiber vs loyal", 0.1, 0.3)], **_I4
    )
    assert result.verdict is Verdict.FAIL
    assert "known_answer" in str(result.details["failed"])


def test_check_candidate_quality_audited_override() -> None:
    """An override ships a failing candidate as a warning naming who and why."""
    result = check_candidate_quality(
        {"auc": 0.78, "log_loss": 0.47},
        _PROD,
        _ANSWERS,
        **_I4,
        override={"by": "ana@example.com", "reason": "holiday traffic, see INC-42"},
    )
    assert result.verdict is Verdict.WARN
    assert result.recorded_by == "ana@example.com"
    assert "INC-42" in result.reason and "drop" in result.reason


def test_check_candidate_quality_override_needs_reason() -> None:
    """An override without a reason is ignored."""
    result = check_candidate_quality(
        {"auc": 0.6, "log_loss": 0.6}, None, [], **_I4, override={"by": "ana"}
    )
    assert result.verdict is Verdict.FAIL


# I5


def test_check_prediction_trace_adds_up(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
) -> None:
    """Integrated gradients on a trained model add up to the logit."""
    from tasks.explain import trace_prediction

    outcome = train_churn_model(
        model_data.x("train"),
        model_data.y("train"),
        model_data.x("validation"),
        model_data.y("validation"),
        small_hyperparameters,
        seed=1,
        max_epochs=2,
        patience=2,
    )
    trace = trace_prediction(
        outcome.model,
        model_data.transform,
        model_data.frames["holdout"].iloc[[3]],
        model_data.x("train").mean(axis=0),
        max_error=1e-3,
        steps=[64, 4096],
    )
    result = check_prediction_trace(trace, max_error=1e-3)
    assert result.verdict is Verdict.PASS, result.reason


def test_check_prediction_trace_untraceable(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
) -> None:
    """A model whose gradients are cut (stop_gradient block) cannot be traced."""
    import keras

    from tasks.explain import trace_prediction

    class Opaque(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return keras.ops.stop_gradient(x)

    inputs = keras.Input(shape=(model_data.x("train").shape[1],))
    hidden = Opaque()(keras.layers.Dense(8, activation="relu")(inputs))
    logit = keras.layers.Dense(1, name="logit")(hidden)
    model = keras.Model(inputs, keras.layers.Activation("sigmoid")(logit))
    trace = trace_prediction(
        model,
        model_data.transform,
        model_data.frames["holdout"].iloc[[3]],
        np.zeros(model_data.x("train").shape[1]),
        max_error=1e-3,
        steps=[64, 256],
    )
    result = check_prediction_trace(trace, max_error=1e-3)
    assert result.verdict is Verdict.FAIL
    assert "untraceable prediction" in result.reason


def test_check_prediction_trace_missing() -> None:
    """No trace at all fails."""
    assert check_prediction_trace(None, max_error=1e-3).verdict is Verdict.FAIL
