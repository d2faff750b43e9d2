"""The model steps end to end on a few hundred synthetic customers."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from gates.result import GateFailed
from gates.store import ScoreStore
from tasks import model_steps
from tasks.config import load_settings
from tasks.context import RunContext
from tasks.registry import get_version, load_predictor
from tasks.storage import FileStore
from tests.tasks.conftest_model import PROJECT_ROOT, ModelData, fixed_clock

pytest_plugins = ("tests.tasks.conftest_model",)


def _context(tmp_path: Path, run_id: str = "r1", **params: Any) -> RunContext:
    model = yaml.safe_load((PROJECT_ROOT / "config/model.yaml").read_text())
    model["search"].update(trials=2, epochs_per_trial=2, parallel_trials=1)
    model["training"].update(max_epochs=3, patience=2)
    model_path = tmp_path / "model.yaml"
    model_path.write_text(yaml.safe_dump(model))
    settings = dataclasses.replace(
        load_settings(environ={}),
        storage_root=str(tmp_path / "artifacts"),
        model_path=model_path,
    )
    return RunContext(
        settings=settings,
        dag_id="churn_training",
        run_id=run_id,
        params={"allow_dirty_spec": True, **params},
        clock=fixed_clock(),
        store_override=FileStore(tmp_path / "artifacts"),
        scores_override=ScoreStore.open(f"sqlite:///{tmp_path / 'scores.db'}"),
    )


def _store_features(ctx: RunContext, data: ModelData) -> dict[str, str]:
    keys = {}
    for part, frame in data.frames.items():
        buffer = io.BytesIO()
        frame.to_parquet(buffer)
        keys[part] = ctx.store.write_bytes(
            ctx.key("features", f"{part}.parquet"), buffer.getvalue()
        ) and ctx.key("features", f"{part}.parquet")
    keys["transform"] = ctx.key("features", "transform.json")
    ctx.store.write_text(keys["transform"], data.transform.to_json())
    return keys


def test_model_steps_full_stage(
    keras_single_thread: Any, model_data: ModelData, tmp_path: Path
) -> None:
    """Every step runs, records its test and the registered version predicts."""
    ctx = _context(tmp_path)
    features = _store_features(ctx, model_data)
    steps = [
        model_steps.check_model_spec_step,
        model_steps.unit_test_model_spec_step,
        model_steps.tune_model_step,
        model_steps.train_model_step,
        model_steps.check_reproducibility_step,
        model_steps.check_simpler_model_step,
        model_steps.check_slices_step,
        model_steps.check_inclusion_step,
        model_steps.check_staleness_step,
        model_steps.trace_prediction_step,
        model_steps.check_metric_correlation_step,
    ]
    outputs = {}
    for step in steps:
        try:
            outputs[step.__name__] = step(ctx, features)
        except GateFailed as exc:
            outputs[step.__name__] = {"failed": str(exc)}
    with contextlib.suppress(GateFailed):
        model_steps.validate_candidate_step(ctx, features)
    registered = model_steps.register_model_step(ctx, features)
    recorded = {r.test_id: r for r in ctx.scores.results(run_id="r1")}
    assert set(recorded) >= {
        "M1",
        "M2",
        "M3",
        "M4",
        "M5",
        "M6",
        "M7",
        "I1",
        "I2",
        "I4",
        "I5",
    }, outputs
    assert recorded["I1"].verdict == "pass", recorded["I1"].reason
    assert recorded["I2"].verdict == "pass", recorded["I2"].reason
    assert recorded["M2"].verdict == "insufficient evidence"
    assert recorded["M4"].verdict == "pass", recorded["M4"].reason
    assert ctx.store.exists(ctx.key("model", "staleness.png"))
    assert ctx.store.exists(ctx.key("model", "trace.md"))
    assert ctx.store.list(ctx.key("model", "checkpoints", "tensorboard") + "/")
    version = registered["model_version"]
    stored = get_version(ctx.store, version)
    assert stored.lineage["data_hash"] and "numpy" in stored.lineage["packages"]
    predictions = load_predictor(ctx.store, version)(model_data.frames["holdout"])
    expected = np.load(
        io.BytesIO(ctx.store.read_bytes(ctx.key("model", "candidate_holdout.npy")))
    )
    np.testing.assert_allclose(predictions, expected, atol=1e-6)


def test_train_model_step_resumes_after_kill(
    keras_single_thread: Any, model_data: ModelData, tmp_path: Path
) -> None:
    """A train task killed after epoch 1 and retried continues from epoch 1."""
    from tasks.train import TrainingInterrupted

    ctx = _context(tmp_path, stop_training_after_epoch=1)
    features = _store_features(ctx, model_data)
    ctx.store.write_text(
        ctx.key("model", "tuning.json"),
        '{"trials": [{'
        '"hyperparameters": {"hidden_units": 8, "hidden_layers": 1, '
        '"dropout": 0.1, "learning_rate": 0.01, "l2": 0.00001, '
        '"batch_size": 64}, "val_auc": 0.8}]}',
    )
    with pytest.raises(TrainingInterrupted):
        model_steps.train_model_step(ctx, features)
    retry = _context(tmp_path)
    out = model_steps.train_model_step(retry, features)
    assert out["resumed_from_epoch"] == 1
    assert out["epochs"] == 3


def test_check_metric_correlation_step_fabricated_versions(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Versions whose online AUC ignores the offline one fail M2 (recorded only)."""
    from tasks.model_spec import build_churn_model
    from tasks.registry import register_model_version, write_online_metrics

    ctx = _context(tmp_path)
    model = build_churn_model(model_data.x("train").shape[1], small_hyperparameters, 1)
    for offline, online in [(0.85, 0.70), (0.80, 0.80), (0.62, 0.81), (0.84, 0.69)]:
        version = register_model_version(
            ctx.store,
            model,
            model_data.transform,
            spec={},
            metrics={"holdout_auc": offline},
            lineage={},
            clock=ctx.clock,
        )
        write_online_metrics(ctx.store, version, {"online_auc": online})
    out = model_steps.check_metric_correlation_step(ctx)
    assert out["verdict"] == "fail"
    (row,) = ctx.scores.results(run_id="r1")
    assert row.test_id == "M2" and "4 versions" in row.reason


def test_validate_candidate_step_degraded_candidate(
    keras_single_thread: Any, model_data: ModelData, tmp_path: Path
) -> None:
    """A candidate far below production is rejected and the run stops."""
    from tasks.model_spec import build_churn_model
    from tasks.registry import move_alias, register_model_version
    from tasks.train import predict_probabilities, train_churn_model

    ctx = _context(tmp_path)
    features = _store_features(ctx, model_data)
    hp = {
        "hidden_units": 16,
        "hidden_layers": 1,
        "dropout": 0.0,
        "learning_rate": 0.01,
        "l2": 0.0,
        "batch_size": 64,
    }
    good = train_churn_model(
        model_data.x("train"),
        model_data.y("train"),
        model_data.x("validation"),
        model_data.y("validation"),
        hp,
        seed=1,
        max_epochs=5,
        patience=5,
    ).model
    production = register_model_version(
        ctx.store,
        good,
        model_data.transform,
        spec={},
        metrics={},
        lineage={},
        clock=ctx.clock,
    )
    move_alias(
        ctx.store,
        "production",
        production,
        actor="test",
        reason="seed",
        clock=ctx.clock,
    )
    untrained = build_churn_model(model_data.x("train").shape[1], hp, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidate.keras"
        untrained.save(path)
        ctx.store.upload(ctx.key("model", "candidate.keras"), path)
    buffer = io.BytesIO()
    np.save(buffer, predict_probabilities(untrained, model_data.x("holdout")))
    ctx.store.write_bytes(ctx.key("model", "candidate_holdout.npy"), buffer.getvalue())
    with pytest.raises(GateFailed, match="vs production"):
        model_steps.validate_candidate_step(ctx, features)
    (row,) = ctx.scores.results(run_id="r1")
    assert row.test_id == "I4" and row.verdict == "fail"


def test_train_model_step_refuses_dirty_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside the demo, training from uncommitted spec changes is refused."""
    from tasks.lineage import SpecState

    dirty = SpecState("a" * 40, True, ("tasks/model_spec.py",), str(tmp_path))
    monkeypatch.setattr(model_steps, "_spec_state", lambda ctx: dirty)
    ctx = _context(tmp_path, allow_dirty_spec=False)
    with pytest.raises(model_steps.ModelStepError, match=r"tasks/model_spec\.py"):
        model_steps.train_model_step(ctx, {})
    out = model_steps.check_model_spec_step(_context(tmp_path, run_id="r2"))
    assert out["verdict"] == "warn" and out["dirty"]
