"""The release path: staging, canary (I6), promotion, rollback drill and manual
rollback (I7), against the real service on loopback."""

from __future__ import annotations

import dataclasses
import io
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gates.result import GateFailed
from gates.store import ScoreStore
from serving.router import ServedModel, load_served_model
from tasks.config import load_settings
from tasks.context import RunContext
from tasks.deploy import (
    PromotionConflict,
    RollbackRefused,
    canary_model_step,
    check_canary,
    previous_production_version,
    promote_model_step,
    record_rollback_step,
    rollback_drill_step,
    rollback_production,
    rollback_production_step,
    stage_model_step,
    validate_rollback_step,
    verify_serving_step,
)
from tasks.registry import alias_history, resolve_alias, version_key
from tasks.storage import ArtifactStore
from tasks.traffic import Exchange, TrafficReport
from tests.serving.conftest_serving import (
    TEST_KEY,
    Registry,
    register_tiny_model,
    slow_loader,
)

pytest_plugins = ("tests.serving.conftest_serving",)


def _context(registry: Registry, tmp_path: Path, **deployment: Any) -> RunContext:
    settings = load_settings(environ={})
    gates = dict(settings.gates)
    gates["deployment"] = {
        **gates["deployment"],
        "canary_requests": 80,
        "min_canary_requests": 5,
        "max_prediction_ks": 0.6,
        **deployment,
    }
    return RunContext(
        settings=dataclasses.replace(settings, gates=gates),
        dag_id="churn_training",
        run_id=f"test-{time.monotonic_ns()}",
        clock=registry.clock,
        store_override=registry.store,
        scores_override=ScoreStore.open(f"sqlite:///{tmp_path / 'scores.db'}"),
    )


def _features(registry: Registry) -> dict[str, str]:
    keys = {}
    for part in ("train", "holdout"):
        frame = registry.data.frames[part]
        if part == "holdout":
            from tests.serving.conftest_serving import pseudonymized

            frame = pseudonymized(frame.head(40), registry.data.dataset)
            frame["Churn"] = "No"
        buffer = io.BytesIO()
        frame.to_parquet(buffer)
        keys[part] = registry.store.uri(f"features/{part}.parquet")
        registry.store.write_bytes(f"features/{part}.parquet", buffer.getvalue())
        keys[part] = f"features/{part}.parquet"
    return keys


def _rows(ctx: RunContext, test_id: str) -> list[Any]:
    return [r for r in ctx.scores.results() if r.test_id == test_id]


@pytest.fixture(autouse=True)
def _no_external_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHURNOPS_SERVING_URL", raising=False)


# Staging ------------------------------------------------------------------------


def test_stage_model_step_points_staging_at_a_matching_version(
    registry: Registry, tmp_path: Path
) -> None:
    """Served answers equal offline ones, then staging points at the version."""
    ctx = _context(registry, tmp_path)
    staged = stage_model_step(
        ctx, {"model_version": registry.second}, features=_features(registry)
    )
    assert staged["verdict"] == "pass" and staged["max_diff"] <= 1e-5
    assert staged["requests"] == 40 + 4 + 2  # holdout, two known-answer pairs, probes
    assert resolve_alias(registry.store, "staging") == registry.second
    assert _rows(ctx, "I6") == []


def test_stage_model_step_fails_a_version_that_cannot_predict(
    registry: Registry, tmp_path: Path
) -> None:
    """A model whose input width does not match its transform errors and fails I6."""
    broken = register_tiny_model(
        registry.store, registry.data, 3, registry.clock, extra_inputs=3
    )
    ctx = _context(registry, tmp_path)
    with pytest.raises(GateFailed, match=r"staging rejected .* requests failed"):
        stage_model_step(ctx, {"model_version": broken}, features=_features(registry))
    assert resolve_alias(registry.store, "staging") is None
    assert [r.verdict for r in _rows(ctx, "I6")] == ["fail"]


# Canary -------------------------------------------------------------------------


def _twin(registry: Registry) -> str:
    """A new version with production's weights: a canary that should pass."""
    return register_tiny_model(registry.store, registry.data, 1, registry.clock)


def test_canary_model_step_passes_a_healthy_canary(
    registry: Registry, tmp_path: Path
) -> None:
    """A canary as good as production passes I6 and stays set for promotion."""
    candidate = _twin(registry)
    ctx = _context(registry, tmp_path)
    result = canary_model_step(
        ctx,
        {"model_version": candidate},
        {"model_version": candidate, "verdict": "pass"},
        key=TEST_KEY,
    )
    assert result["verdict"] == "pass"
    assert result["production_version"] == registry.first
    assert resolve_alias(registry.store, "canary") == candidate
    (row,) = _rows(ctx, "I6")
    assert row.verdict == "pass" and "KS" in row.reason
    logged = "".join(
        registry.store.read_text(k) for k in registry.store.list("predictions/")
    )
    assert "canary-release" in logged and candidate in logged


def test_canary_model_step_rolls_back_an_erroring_canary(
    registry: Registry, tmp_path: Path
) -> None:
    """A canary that errors fails I6, loses its alias, and production is untouched."""
    broken = register_tiny_model(
        registry.store, registry.data, 3, registry.clock, extra_inputs=3
    )
    ctx = _context(registry, tmp_path)
    with pytest.raises(GateFailed, match=r"canary error rate 1\.000 over 0\.01"):
        canary_model_step(
            ctx,
            {"model_version": broken},
            {"model_version": broken, "verdict": "pass"},
            key=TEST_KEY,
        )
    assert resolve_alias(registry.store, "canary") is None
    assert resolve_alias(registry.store, "production") == registry.first
    assert [r.verdict for r in _rows(ctx, "I6")] == ["fail"]
    (rollback,) = ctx.scores.deployments("canary")
    assert rollback["action"] == "canary_rollback"


def test_canary_model_step_rolls_back_a_slow_canary(
    registry: Registry, tmp_path: Path
) -> None:
    """A canary answering 150 ms late fails I6 on latency."""
    candidate = _twin(registry)
    ctx = _context(registry, tmp_path)
    with pytest.raises(GateFailed, match=r"canary p95 .* ms over"):
        canary_model_step(
            ctx,
            {"model_version": candidate},
            {"model_version": candidate, "verdict": "pass"},
            key=TEST_KEY,
            load_model=slow_loader(candidate, 0.15),
        )
    assert resolve_alias(registry.store, "canary") is None
    assert resolve_alias(registry.store, "production") == registry.first


def test_canary_first_release_compares_with_thresholds_only(
    registry: Registry, tmp_path: Path
) -> None:
    """With no production model the reason says so and all traffic meets the canary."""
    from tasks.registry import clear_alias

    clear_alias(
        registry.store, "production", actor="t", reason="t", clock=registry.clock
    )
    ctx = _context(registry, tmp_path)
    result = canary_model_step(
        ctx,
        {"model_version": registry.second},
        {"model_version": registry.second, "verdict": "pass"},
        key=TEST_KEY,
    )
    assert result["production_version"] is None
    (row,) = _rows(ctx, "I6")
    assert "first release" in row.reason and "took 80 of 80" in row.reason


def _report(alias_probabilities: dict[str, list[float]]) -> TrafficReport:
    report = TrafficReport()
    for alias, values in alias_probabilities.items():
        report.exchanges += [
            Exchange(f"{alias}{i}", alias, f"v-{alias}", 200, 5.0, p)
            for i, p in enumerate(values)
        ]
    return report


def test_check_canary_fails_a_shifted_prediction_distribution() -> None:
    """Canary predictions far from production's fail on the KS distance."""
    thresholds = {
        "min_canary_requests": 10,
        "max_error_rate": 0.01,
        "max_p95_latency_ms": 250.0,
        "max_p95_latency_ratio": 2.0,
        "latency_slack_ms": 25.0,
        "max_prediction_ks": 0.3,
    }
    same = _report(
        {
            "canary": [i / 50 for i in range(50)],
            "production": [i / 200 for i in range(200)],
        }
    )
    shifted = _report(
        {"canary": [0.9] * 50, "production": [i / 200 for i in range(200)]}
    )
    assert check_canary(same, "v-canary", "v-prod", **thresholds).verdict == "pass"
    result = check_canary(shifted, "v-canary", "v-prod", **thresholds)
    assert result.verdict == "fail" and "KS" in result.reason


# Promotion ----------------------------------------------------------------------


def test_promote_model_step_moves_production_and_clears_canary(
    registry: Registry, tmp_path: Path
) -> None:
    """Promotion records the deployment and leaves no canary behind."""
    registry.move("canary", registry.second)
    ctx = _context(registry, tmp_path)
    promoted = promote_model_step(
        ctx,
        {"model_version": registry.second},
        {
            "model_version": registry.second,
            "verdict": "pass",
            "production_version": registry.first,
        },
    )
    assert promoted == {
        "model_version": registry.second,
        "previous_version": registry.first,
    }
    assert resolve_alias(registry.store, "production") == registry.second
    assert resolve_alias(registry.store, "canary") is None
    (row,) = ctx.scores.deployments("production")
    assert row["action"] == "promote" and row["previous_version"] == registry.first


def test_two_concurrent_promotions_exactly_one_wins(
    registry: Registry, tmp_path: Path
) -> None:
    """Two runs canaried against the same production: one promotes, one conflicts."""
    third = register_tiny_model(registry.store, registry.data, 3, registry.clock)
    ctx = _context(registry, tmp_path)
    barrier = threading.Barrier(2)
    outcomes: dict[str, Any] = {}

    def promote(version: str) -> None:
        canaried = {
            "model_version": version,
            "verdict": "pass",
            "production_version": registry.first,
        }
        barrier.wait()
        try:
            outcomes[version] = promote_model_step(
                ctx, {"model_version": version}, canaried
            )
        except PromotionConflict as exc:
            outcomes[version] = exc

    threads = [
        threading.Thread(target=promote, args=(v,)) for v in (registry.second, third)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [v for v, o in outcomes.items() if isinstance(o, dict)]
    losers = [o for o in outcomes.values() if isinstance(o, PromotionConflict)]
    assert len(winners) == 1 and len(losers) == 1
    assert resolve_alias(registry.store, "production") == winners[0]
    assert "not promoting" in str(losers[0])
    assert len(ctx.scores.deployments("production")) == 1


# Rollback drill -----------------------------------------------------------------


def _promote_second(registry: Registry) -> dict[str, str]:
    registry.move("production", registry.second)
    return {"model_version": registry.second, "previous_version": registry.first}


def test_rollback_drill_step_times_a_rollback_and_rolls_forward(
    registry: Registry, tmp_path: Path
) -> None:
    """The drill serves the previous version, records I7 pass, then rolls forward."""
    ctx = _context(registry, tmp_path)
    result = rollback_drill_step(ctx, _promote_second(registry))
    assert result["verdict"] == "pass" and result["seconds"] < 30
    assert resolve_alias(registry.store, "production") == registry.second
    (row,) = _rows(ctx, "I7")
    assert row.verdict == "pass" and row.value == pytest.approx(result["seconds"])
    actions = [d["action"] for d in ctx.scores.deployments("production")]
    assert actions == ["drill_rollback", "drill_roll_forward"]
    assert previous_production_version(registry.store) == registry.first


def test_rollback_drill_fails_when_the_previous_version_cannot_load(
    registry: Registry, tmp_path: Path
) -> None:
    """A previous version whose model is gone: the service never serves it, I7 fails."""
    registry.store.write_bytes(version_key(registry.first, "model.keras"), b"junk")
    ctx = _context(registry, tmp_path, max_rollback_seconds=2.0)
    with pytest.raises(GateFailed, match=r"rollback failed: .* not v"):
        rollback_drill_step(ctx, _promote_second(registry))
    assert resolve_alias(registry.store, "production") == registry.second
    assert [r.verdict for r in _rows(ctx, "I7")] == ["fail"]


def test_rollback_drill_fails_when_too_slow(registry: Registry, tmp_path: Path) -> None:
    """Loading the previous version takes 1.5 s against a 1 s budget: I7 fails."""

    def slow_load(store: ArtifactStore, version: str) -> ServedModel:
        if version == registry.first:
            time.sleep(1.5)
        return load_served_model(store, version)

    ctx = _context(registry, tmp_path, max_rollback_seconds=1.0)
    with pytest.raises(GateFailed, match=r"rollback took .* over the 1.0 s budget"):
        rollback_drill_step(ctx, _promote_second(registry), load_model=slow_load)
    assert resolve_alias(registry.store, "production") == registry.second


def test_rollback_drill_rolls_forward_after_an_unexpected_error(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash mid-drill still puts production back on the release before failing."""
    from tasks import deploy

    real_verify = deploy.verify_serving
    calls = []

    def crash_once(*args: Any, **kwargs: Any) -> float:
        calls.append(args[1])
        if len(calls) == 1:
            raise RuntimeError("the worker lost its network")
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(deploy, "verify_serving", crash_once)
    ctx = _context(registry, tmp_path)

    with pytest.raises(RuntimeError, match="lost its network"):
        rollback_drill_step(ctx, _promote_second(registry))

    assert calls == [registry.first, registry.second]
    assert resolve_alias(registry.store, "production") == registry.second


def test_rollback_drill_on_a_first_release_is_insufficient_evidence(
    registry: Registry, tmp_path: Path
) -> None:
    """No earlier version: I7 says so instead of rolling back to nothing."""
    ctx = _context(registry, tmp_path)
    result = rollback_drill_step(
        ctx, {"model_version": registry.first, "previous_version": None}
    )
    assert result["verdict"] == "insufficient evidence"
    (row,) = _rows(ctx, "I7")
    assert "first production version" in row.reason
    assert resolve_alias(registry.store, "production") == registry.first


# Manual rollback ----------------------------------------------------------------


def test_rollback_production_refuses_an_unknown_version(
    registry: Registry, tmp_path: Path
) -> None:
    """An unregistered target is refused by name and production stays where it was."""
    ctx = _context(registry, tmp_path)
    registry.move("production", registry.second)
    with pytest.raises(RollbackRefused, match="no such registered model version"):
        rollback_production(
            ctx.store,
            ctx.scores,
            target_version="v20990101T000000-deadbeef",
            reason="bad predictions since noon",
            actor="alice",
            clock=registry.clock,
        )
    assert resolve_alias(registry.store, "production") == registry.second
    assert ctx.scores.deployments() == []


def test_rollback_production_defaults_to_the_previous_version_once(
    registry: Registry, tmp_path: Path
) -> None:
    """Rolling back twice never returns to the version the first rollback left."""
    ctx = _context(registry, tmp_path)
    registry.move("production", registry.second)
    moved = rollback_production(
        ctx.store,
        ctx.scores,
        target_version=None,
        reason="bad predictions since noon",
        actor="alice",
        clock=registry.clock,
    )
    assert moved["model_version"] == registry.first and moved["changed"]
    with pytest.raises(RollbackRefused, match="no earlier version"):
        rollback_production(
            ctx.store,
            ctx.scores,
            target_version=None,
            reason="still bad predictions",
            actor="alice",
            clock=registry.clock,
        )
    with pytest.raises(RollbackRefused, match="reason of at least"):
        rollback_production(
            ctx.store,
            ctx.scores,
            target_version=registry.second,
            reason="oops",
            actor="alice",
            clock=registry.clock,
        )
    assert alias_history(registry.store, "production")[-1]["actor"] == "alice"
    (row,) = ctx.scores.deployments("production")
    assert row["actor"] == "alice" and row["previous_version"] == registry.second


def test_manual_rollback_steps_validate_move_verify_and_record(
    registry: Registry, tmp_path: Path
) -> None:
    """The churn_rollback DAG's four steps, in order, on an empty target."""
    ctx = _context(registry, tmp_path)
    ctx.params = {"reason": "conversion dropped after release"}
    registry.move("production", registry.second)
    request = validate_rollback_step(ctx, actor="alice")
    assert request["target_version"] == registry.first
    moved = rollback_production_step(ctx, request)
    assert rollback_production_step(ctx, request)["changed"] is False
    verified = verify_serving_step(ctx, moved)
    recorded = record_rollback_step(ctx, request, verified)
    assert recorded["verdict"] == "pass"
    assert resolve_alias(registry.store, "production") == registry.first
    (row,) = _rows(ctx, "I7")
    assert "manual rollback by alice" in row.reason
    assert ctx.scores.notifications()[-1]["topic"] == "rollback"


def test_validate_rollback_step_refuses_an_unknown_target(
    registry: Registry, tmp_path: Path
) -> None:
    """A typo in the form's version is refused before anything moves."""
    ctx = _context(registry, tmp_path)
    ctx.params = {"reason": "conversion dropped", "target_version": "v1"}
    with pytest.raises(RollbackRefused, match="'v1': no such registered"):
        validate_rollback_step(ctx, actor="alice")
    assert resolve_alias(registry.store, "production") == registry.first
