"""The monitoring steps end to end on a tiny production model and simulated traffic."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pandas as pd
import pytest

import tasks.monitoring_steps as steps
from serving.predlog import PredictionLog
from serving.router import KerasServedModel, load_served_model
from tasks.features import NumericStats
from tasks.labels import LABELS_PREFIX, simulate_live_traffic
from tasks.registry import get_version
from tests.serving.conftest_serving import TEST_KEY
from tests.tasks.conftest_monitoring import (
    SERVING,
    TODAY,
    World,
    clock_at,
)

pytest_plugins = ("tests.tasks.conftest_monitoring",)

CHECKS = [
    "check_dependency_changes_step",
    "check_serving_invariants_step",
    "check_training_serving_skew_step",
    "check_model_staleness_step",
    "check_numerical_stability_step",
    "check_computing_performance_step",
    "check_prediction_quality_step",
]


def _run(
    world: World, run_id: str, only: list[str] | None = None, **kw: Any
) -> dict[str, Any]:
    ctx = world.context(run_id, **kw)
    collected = steps.collect_monitoring_inputs_step(ctx)
    return {name: getattr(steps, name)(ctx, collected) for name in (only or CHECKS)} | {
        "collected": collected,
        "ctx": ctx,
    }


def test_monitoring_steps_pass_on_healthy_traffic_and_register_the_version(
    world: World,
) -> None:
    """Healthy traffic passes Mo2-Mo7, the run carries the production version, and
    the online AUC is written for M2."""
    out = _run(world, "healthy")
    verdicts = {out[n]["test"]: out[n]["verdict"] for n in CHECKS}
    assert verdicts["Mo1"] == "insufficient evidence"  # first run: baseline only
    healthy = {t: verdicts[t] for t in ("Mo2", "Mo3", "Mo4", "Mo5", "Mo6", "Mo7")}
    assert set(healthy.values()) == {"pass"}, healthy
    ctx = out["ctx"]
    assert [r.model_version for r in ctx.scores.runs()] == [world.version]
    assert get_version(world.store, world.version).online_metrics["labelled_rows"] == 90
    second = _run(world, "again", only=["check_dependency_changes_step"])
    assert second["check_dependency_changes_step"]["verdict"] == "pass"
    assert steps.notify_step(ctx, **{n: out[n] for n in CHECKS})["notified"] == 0


def test_monitoring_without_production_is_insufficient_everywhere(
    world: World,
) -> None:
    """No production alias: every Mo test records insufficient evidence, not a pass."""
    (world.root / "registry" / "aliases" / "production.json").unlink()
    out = _run(world, "nothing")
    assert {out[n]["verdict"] for n in CHECKS} == {"insufficient evidence"}
    rows = out["ctx"].scores.results(run_id="nothing")
    assert all("no production model" in r.reason for r in rows) and len(rows) == 7


def _skewed_loader(store: Any, version: str) -> Any:
    model = load_served_model(store, version)
    transform = dataclasses.replace(model.transform)
    transform.numeric = {
        k: NumericStats(v.mean + 1.0, v.std, v.fill)
        for k, v in transform.numeric.items()
    }
    return KerasServedModel(version, model.model, transform)


def test_skew_step_fails_when_serving_transforms_differ(world: World) -> None:
    """A serving-side transform change makes every new example differ: Mo3 fails."""
    simulate_live_traffic(
        world.settings,
        days=1,
        customers_per_day=20,
        key=TEST_KEY,
        seed=9,
        clock=clock_at(TODAY + dt.timedelta(days=1)),
        store=world.store,
        serving=SERVING,
        load_model=_skewed_loader,
    )
    out = _run(
        world,
        "skewed",
        only=["check_training_serving_skew_step"],
        day=TODAY + dt.timedelta(days=1),
    )
    result = out["check_training_serving_skew_step"]
    assert result["verdict"] == "fail" and result["differing"] == 20


def _append_log(world: World, rows: list[dict[str, Any]], day: dt.date) -> None:
    log = PredictionLog(world.store, clock=clock_at(day))
    log.append(rows)
    log.flush()


def _logged_row(world: World, **changes: Any) -> dict[str, Any]:
    from serving.predlog import read_prediction_log

    row = read_prediction_log(world.store).iloc[-1].to_dict()
    service = {k: row[k] for k in steps.SERVICE_FIELDS if k in row}
    inputs = {k: v for k, v in row.items() if k not in steps.SERVICE_FIELDS}
    service["at"] = service["at"].isoformat()
    inputs.update({k: v for k, v in changes.items() if k not in service})
    service.update({k: v for k, v in changes.items() if k in service})
    return {**service, "inputs": inputs}


def test_invariants_step_fails_on_inputs_that_violate_the_schema(world: World) -> None:
    """A logged tenure of text and an unknown contract type fail Mo2."""
    bad = _logged_row(world, tenure="twelve", Contract="Lifetime")
    _append_log(world, [bad], TODAY - dt.timedelta(days=1))
    out = _run(world, "schema", only=["check_serving_invariants_step"])
    result = out["check_serving_invariants_step"]
    assert result["verdict"] == "fail"
    assert "tenure" in result["reason"] and "Contract" in result["reason"]


def test_stability_step_fails_on_a_nan_prediction(world: World) -> None:
    """A served prediction logged as NaN (null) fails Mo5."""
    _append_log(
        world,
        [_logged_row(world, churn_probability=float("nan"))],
        TODAY - dt.timedelta(days=1),
    )
    out = _run(world, "nan", only=["check_numerical_stability_step"])
    assert out["check_numerical_stability_step"]["verdict"] == "fail"
    assert (
        "1 of 151 served predictions" in out["check_numerical_stability_step"]["reason"]
    )


def test_quality_step_fails_when_labels_contradict_predictions(world: World) -> None:
    """Labels flipped after the fact (quality collapses) fail Mo7."""
    for key in world.store.list(LABELS_PREFIX + "/"):
        import io

        frame = pd.read_parquet(io.BytesIO(world.store.read_bytes(key)))
        frame["label"] = frame["label"].map({"Yes": "No", "No": "Yes"})
        buffer = io.BytesIO()
        frame.to_parquet(buffer)
        world.store.write_bytes(key, buffer.getvalue())
    out = _run(
        world, "flipped", only=["check_prediction_quality_step"], max_auc_drop=0.05
    )
    assert out["check_prediction_quality_step"]["verdict"] == "fail"


def test_dependency_step_fails_when_half_the_rows_arrive_and_notifies_packages(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day with half the usual rows fails Mo1; a package change is notified."""
    import tasks.lineage

    _run(world, "baseline", only=["check_dependency_changes_step"])
    simulate_live_traffic(
        world.settings,
        days=1,
        customers_per_day=15,
        key=TEST_KEY,
        seed=8,
        clock=clock_at(TODAY + dt.timedelta(days=1)),
        store=world.store,
        serving=SERVING,
    )
    packages = tasks.lineage.installed_packages()
    monkeypatch.setattr(
        tasks.lineage, "installed_packages", lambda: {**packages, "numpy": "0.0.1"}
    )
    out = _run(
        world,
        "half",
        only=["check_dependency_changes_step"],
        day=TODAY + dt.timedelta(days=1),
    )
    result = out["check_dependency_changes_step"]
    assert result["verdict"] == "fail" and "50%" in result["reason"]
    notes = out["ctx"].scores.notifications()
    assert any("numpy" in n["message"] for n in notes)


def test_notify_step_notifies_and_fails_the_run_on_a_failed_check(world: World) -> None:
    """A failed check is notified and raises MonitoringAlert, after recording."""
    ctx = world.context("notify")
    checks = {"mo5": {"test": "Mo5", "verdict": "fail", "reason": "NaN predictions"}}
    with pytest.raises(steps.MonitoringAlert, match=r"\['Mo5'\] failed"):
        steps.notify_step(ctx, **checks)
    assert ctx.scores.notifications()[-1]["message"] == "NaN predictions"
