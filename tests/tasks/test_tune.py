"""Random search: seeded draws, worker processes, results best first."""

from __future__ import annotations

import dataclasses
from typing import Any

from tasks.config import ModelConfig
from tasks.tune import draw_trials, search_hyperparameters
from tests.tasks.conftest_model import ModelData

pytest_plugins = ("tests.tasks.conftest_model",)


def test_draw_trials_seeded(model_config: ModelConfig) -> None:
    """The same seed draws the same trials; every hyperparameter is drawn."""
    first, again = draw_trials(model_config), draw_trials(model_config)
    assert first == again
    assert len(first) == model_config.search["trials"]
    assert all(set(t) == set(model_config.hyperparameters) for t in first)


def test_search_hyperparameters_two_workers(
    model_config: ModelConfig, model_data: ModelData
) -> None:
    """Trials run in two spawned workers and come back sorted by validation AUC."""
    config = dataclasses.replace(
        model_config,
        search={
            **model_config.search,
            "trials": 2,
            "epochs_per_trial": 1,
            "parallel_trials": 2,
            "max_rows": 300,
        },
    )
    results: list[dict[str, Any]] = search_hyperparameters(
        model_data.x("train"),
        model_data.y("train"),
        model_data.x("validation"),
        model_data.y("validation"),
        config,
    )
    assert [r["trial"] for r in results] != [] and len(results) == 2
    assert results[0]["val_auc"] >= results[1]["val_auc"]
    assert {r["epochs"] for r in results} == {1}


def test_draw_trials_varies_every_hyperparameter_in_a_short_search(
    model_config: ModelConfig,
) -> None:
    """Two trials already explore two values of every range, for any seed."""
    import dataclasses

    for seed in range(40):
        config = dataclasses.replace(
            model_config, seed=seed, search={**model_config.search, "trials": 2}
        )
        trials = draw_trials(config)
        for name in config.hyperparameters:
            assert trials[0][name] != trials[1][name], (seed, name)
