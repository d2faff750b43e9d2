"""The model spec: search space checks, sampling and a seeded build."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from tasks.config import HyperparameterSpec, ModelConfig
from tasks.model_spec import (
    LOGIT_LAYER,
    ModelSpecError,
    build_churn_model,
    central_hyperparameters,
    check_search_space,
    sample_hyperparameters,
)

pytest_plugins = ("tests.tasks.conftest_model",)


def test_check_search_space_accepts_committed_config(model_config: ModelConfig) -> None:
    """The committed config/model.yaml gives every spec hyperparameter a range."""
    check_search_space(model_config)


def test_check_search_space_missing_range(model_config: ModelConfig) -> None:
    """A hyperparameter the spec reads but config leaves out is named in the error."""
    space = dict(model_config.hyperparameters)
    del space["dropout"]
    broken = dataclasses.replace(model_config, hyperparameters=space)
    with pytest.raises(ModelSpecError, match="dropout"):
        check_search_space(broken)


def test_check_search_space_inverted_range(model_config: ModelConfig) -> None:
    """low above high is refused."""
    space = dict(model_config.hyperparameters)
    space["l2"] = HyperparameterSpec("l2", "float", low=1.0, high=0.1)
    with pytest.raises(ModelSpecError, match=r"low 1\.0 is above high 0\.1"):
        check_search_space(dataclasses.replace(model_config, hyperparameters=space))


def test_sample_hyperparameters_stays_in_range(model_config: ModelConfig) -> None:
    """Draws respect bounds, integer types and choice lists."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        sample = sample_hyperparameters(model_config.hyperparameters, rng)
        for name, spec in model_config.hyperparameters.items():
            if spec.type == "choice":
                assert sample[name] in spec.values  # type: ignore[operator]
            else:
                assert spec.low <= sample[name] <= spec.high  # type: ignore[operator]
        assert isinstance(sample["hidden_layers"], int)


def test_central_hyperparameters_in_range(model_config: ModelConfig) -> None:
    """The default point lies inside every range."""
    centre = central_hyperparameters(model_config.hyperparameters)
    assert set(centre) == set(model_config.hyperparameters)


def test_build_churn_model_seeded(
    keras_single_thread: Any, small_hyperparameters: dict[str, Any]
) -> None:
    """Two builds with one seed start identical; another seed starts elsewhere."""
    a = build_churn_model(5, small_hyperparameters, seed=1)
    b = build_churn_model(5, small_hyperparameters, seed=1)
    c = build_churn_model(5, small_hyperparameters, seed=2)
    assert all(
        np.array_equal(p, q)
        for p, q in zip(a.get_weights(), b.get_weights(), strict=True)
    )
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])
    assert a.get_layer(LOGIT_LAYER).units == 1


def test_build_churn_model_rejects_bad_dropout(
    keras_single_thread: Any, small_hyperparameters: dict[str, Any]
) -> None:
    """A dropout of 1 would zero every unit."""
    with pytest.raises(ModelSpecError, match=r"dropout=1\.0"):
        build_churn_model(5, {**small_hyperparameters, "dropout": 1.0}, seed=1)
