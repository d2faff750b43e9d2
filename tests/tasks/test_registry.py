"""The registry: versions, aliases moved atomically with history, the loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.model_spec import build_churn_model
from tasks.registry import (
    AliasConflict,
    RegistryError,
    alias_history,
    clear_alias,
    get_version,
    list_versions,
    load_predictor,
    move_alias,
    register_model_version,
    resolve_alias,
    version_key,
    write_online_metrics,
)
from tasks.storage import FileStore
from tasks.train import predict_probabilities
from tests.tasks.conftest_model import ModelData, fixed_clock

pytest_plugins = ("tests.tasks.conftest_model",)


def _register(
    store: FileStore, data: ModelData, hp: dict[str, Any], seed: int, clock: Any
) -> tuple[str, Any]:
    model = build_churn_model(
        data.transform.transform(data.frames["train"]).shape[1], hp, seed
    )
    version = register_model_version(
        store,
        model,
        data.transform,
        spec={"hyperparameters": hp},
        metrics={"holdout_auc": 0.8},
        lineage={"seed": seed},
        clock=clock,
        expectations='{"name": "suite"}',
    )
    return version, model


def test_register_model_version_round_trip(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
    tmp_path: Path,
) -> None:
    """A registered version lists, reads back and predicts like the trained model."""
    store = FileStore(tmp_path)
    clock = fixed_clock()
    version, model = _register(store, model_data, small_hyperparameters, 1, clock)
    assert version.startswith("v20261203T154501-")
    assert list_versions(store) == [version]
    stored = get_version(store, version)
    assert stored.metrics["holdout_auc"] == 0.8 and stored.online_metrics is None
    predict = load_predictor(store, version)
    expected = predict_probabilities(model, model_data.x("holdout"))
    np.testing.assert_array_equal(predict(model_data.frames["holdout"]), expected)
    write_online_metrics(store, version, {"online_auc": 0.7})
    assert get_version(store, version).online_metrics == {"online_auc": 0.7}
    # The expectation suite travels with the version, listed in its manifest.
    manifest = json.loads(store.read_text(version_key(version, "manifest.json")))
    assert "expectations.json" in manifest["files"]
    assert store.read_text(version_key(version, "expectations.json")) == (
        '{"name": "suite"}'
    )


def test_versions_sort_by_time(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Ids registered later sort later, whatever their hash."""
    store = FileStore(tmp_path)
    clock = fixed_clock()
    first, _ = _register(store, model_data, small_hyperparameters, 1, clock)
    second, _ = _register(store, model_data, small_hyperparameters, 2, clock)
    assert list_versions(store) == [first, second]


def test_move_alias_history_and_conflict(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Moves append to history; a stale expectation is refused without writing."""
    store = FileStore(tmp_path)
    clock = fixed_clock()
    first, _ = _register(store, model_data, small_hyperparameters, 1, clock)
    second, _ = _register(store, model_data, small_hyperparameters, 2, clock)
    move_alias(
        store,
        "production",
        first,
        actor="ci",
        reason="first",
        clock=clock,
        expected=None,
    )
    move_alias(store, "production", second, actor="ci", reason="better", clock=clock)
    assert resolve_alias(store, "production") == second
    history = alias_history(store, "production")
    assert [h["version"] for h in history] == [first, second]
    assert history[1]["previous"] == first
    with pytest.raises(AliasConflict, match=f"points at {second}, not {first}"):
        move_alias(
            store,
            "production",
            first,
            actor="ci",
            reason="x",
            clock=clock,
            expected=first,
        )
    assert resolve_alias(store, "production") == second


def test_move_alias_lost_race(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When another writer moves the alias between read and write, we lose cleanly."""
    store = FileStore(tmp_path)
    clock = fixed_clock()
    first, _ = _register(store, model_data, small_hyperparameters, 1, clock)
    second, _ = _register(store, model_data, small_hyperparameters, 2, clock)
    move_alias(store, "staging", first, actor="a", reason="r", clock=clock)
    real = store.write_if_unchanged

    def racing(key: str, data: bytes, token: str | None) -> bool:
        store.write_bytes(key, b'{"version": "other", "history": []}')
        return real(key, data, token)

    monkeypatch.setattr(store, "write_if_unchanged", racing)
    with pytest.raises(AliasConflict, match="moved by another writer"):
        move_alias(store, "staging", second, actor="b", reason="r", clock=clock)


def test_registry_unknown_version(tmp_path: Path) -> None:
    """Asking for a version that does not exist names it."""
    with pytest.raises(RegistryError, match="v20260101T000000-00000000"):
        load_predictor(FileStore(tmp_path), "v20260101T000000-00000000")
    with pytest.raises(RegistryError, match="not a model version id"):
        get_version(FileStore(tmp_path), "latest")


def test_clear_alias_keeps_history(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Clearing unsets the pointer, records who and why, and is idempotent."""
    store = FileStore(tmp_path)
    clock = fixed_clock()
    version, _ = _register(store, model_data, small_hyperparameters, 1, clock)
    move_alias(store, "canary", version, actor="ci", reason="canary", clock=clock)
    assert (
        clear_alias(store, "canary", actor="ci", reason="done", clock=clock) == version
    )
    assert resolve_alias(store, "canary") is None
    assert [h["version"] for h in alias_history(store, "canary")] == [version, None]
    assert clear_alias(store, "canary", actor="ci", reason="again", clock=clock) is None
