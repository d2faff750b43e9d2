"""Monitoring gates Mo1-Mo7: each with the fault that fails it and a passing case."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gates.monitoring import (
    QualityFigures,
    StabilityFigures,
    UpstreamState,
    check_computing_performance,
    check_dependency_changes,
    check_model_staleness,
    check_numerical_stability,
    check_prediction_quality,
    check_serving_invariants,
    check_training_serving_skew,
    expected_calibration_error,
    population_stability_index,
)
from gates.result import Verdict

SCHEMA = {"customerID": "string", "tenure": "integer", "MonthlyCharges": "floating"}
PACKAGES = {"numpy": "2.4.6", "pandas": "3.1.1"}


def _state(rows: float = 100.0, **changes: object) -> UpstreamState:
    values = {
        "rows_per_day": rows,
        "schema": SCHEMA,
        "newest_event": "2026-12-02",
        "packages": PACKAGES,
        **changes,
    }
    return UpstreamState(**values)  # type: ignore[arg-type]


def _mo1(current: UpstreamState, previous: UpstreamState | None, **kw: object):  # type: ignore[no-untyped-def]
    args = {
        "expected_rows_per_day": 100.0,
        "expected_columns": list(SCHEMA),
        "days_since_newest_event": 1.0,
        "min_volume_ratio": 0.7,
        "max_event_age_days": 2.0,
        **kw,
    }
    return check_dependency_changes(current, previous, **args)  # type: ignore[arg-type]


def test_dependency_changes_pass_when_nothing_changed() -> None:
    """Same volume, schema and packages as the last run: pass."""
    assert _mo1(_state(), _state()).verdict is Verdict.PASS


def test_dependency_changes_fail_when_half_the_rows_arrive() -> None:
    """Half the expected rows on the newest day fails with the ratio in the reason."""
    result = _mo1(_state(rows=50.0), _state())
    assert result.verdict is Verdict.FAIL
    assert "50%" in result.reason and result.value == 0.5


def test_dependency_changes_warn_on_a_package_version_change() -> None:
    """A changed package version warns and lists the change for notification."""
    result = _mo1(_state(packages={**PACKAGES, "numpy": "2.5.0"}), _state())
    assert result.verdict is Verdict.WARN
    assert "numpy 2.4.6 -> 2.5.0" in result.reason
    assert result.details["changes"][0]["package"] == "numpy"


def test_dependency_changes_fail_on_stale_or_missing_columns() -> None:
    """An old newest event or a missing contract column fails."""
    stale = _mo1(_state(), _state(), days_since_newest_event=9.0)
    assert stale.verdict is Verdict.FAIL and "9 days old" in stale.reason
    missing = _mo1(_state(schema={"tenure": "integer"}), _state())
    assert missing.verdict is Verdict.FAIL and "customerID" in missing.reason


def test_dependency_changes_first_run_is_insufficient() -> None:
    """Without a previous run the baseline is stored, not a pass."""
    assert _mo1(_state(), None).verdict is Verdict.INSUFFICIENT


def test_serving_invariants_fail_on_a_violated_expectation() -> None:
    """A failed expectation on serving inputs fails Mo2 naming the column."""
    failure = {
        "expectation": "expect_column_values_to_be_in_type_list",
        "column": "tenure",
        "observed": "observed 'str'",
    }
    result = check_serving_invariants(
        rows=10, evaluated=40, failures=[failure], missing_columns=[], suite="s"
    )
    assert result.verdict is Verdict.FAIL and "tenure" in result.reason
    ok = check_serving_invariants(
        rows=10, evaluated=40, failures=[], missing_columns=[], suite="s"
    )
    assert ok.verdict is Verdict.PASS


def test_training_serving_skew_fails_on_differing_features() -> None:
    """Serving features that differ from the training code's fail Mo3."""
    args = {"psi_warn": 0.1, "psi_fail": 0.25, "max_skew_share": 0.0}
    result = check_training_serving_skew(
        compared=100, differing=3, unhashed=0, psi={"tenure": 0.01}, **args
    )
    assert result.verdict is Verdict.FAIL and "3 of 100" in result.reason
    drift = check_training_serving_skew(
        compared=100, differing=0, unhashed=0, psi={"MonthlyCharges": 0.4}, **args
    )
    assert drift.verdict is Verdict.FAIL and "MonthlyCharges" in drift.reason
    ok = check_training_serving_skew(
        compared=100, differing=0, unhashed=0, psi={"tenure": 0.01}, **args
    )
    assert ok.verdict is Verdict.PASS


def test_population_stability_index_sees_a_shift() -> None:
    """Identical samples give ~0; a shifted one gives far more than 0.25."""
    rng = np.random.default_rng(0)
    base = pd.Series(rng.normal(0, 1, 5000))
    same = population_stability_index(
        base, base.sample(frac=1.0), numeric=True, bins=10
    )
    moved = population_stability_index(base, base + 1.5, numeric=True, bins=10)
    assert same < 0.01 and moved > 0.25
    cats = pd.Series(["a"] * 50 + ["b"] * 50)
    assert population_stability_index(cats, cats, numeric=False, bins=10) < 1e-9


def test_model_staleness_fails_an_old_model() -> None:
    """A model older than its M4 budget fails; a young one passes."""
    old = check_model_staleness(
        version="v1",
        model_age_days=500,
        data_age_days=None,
        budget_days=300,
        warn_share=0.8,
    )
    assert old.verdict is Verdict.FAIL and "500 days" in old.reason
    young = check_model_staleness(
        version="v1",
        model_age_days=3,
        data_age_days=20,
        budget_days=300,
        warn_share=0.8,
    )
    assert young.verdict is Verdict.PASS and young.value == 20


def test_model_staleness_without_budget_is_insufficient() -> None:
    """No staleness budget stored with the version: insufficient, with the reason."""
    result = check_model_staleness(
        version="v1",
        model_age_days=3,
        data_age_days=None,
        budget_days=None,
        warn_share=0.8,
    )
    assert result.verdict is Verdict.INSUFFICIENT and "no staleness budget" in (
        result.reason
    )


def _stability(**kw: object) -> StabilityFigures:
    values = {
        "predictions": 100,
        "bad_predictions": 0,
        "weights": 500,
        "bad_weights": 0,
        "losses": 10,
        "bad_losses": 0,
        "units": 32,
        "dead_units": 2,
        **kw,
    }
    return StabilityFigures(**values)  # type: ignore[arg-type]


def test_numerical_stability_fails_on_a_nan_prediction() -> None:
    """One NaN prediction fails Mo5; dead units over the share fail too."""
    nan = check_numerical_stability(
        _stability(bad_predictions=1), max_dead_unit_share=0.5
    )
    assert nan.verdict is Verdict.FAIL and "1 of 100 served predictions" in nan.reason
    dead = check_numerical_stability(_stability(dead_units=30), max_dead_unit_share=0.5)
    assert dead.verdict is Verdict.FAIL and "30 of 32 ReLU units" in dead.reason
    ok = check_numerical_stability(_stability(), max_dead_unit_share=0.5)
    assert ok.verdict is Verdict.PASS


PERF = {
    "latency_p50_ms": 4.0,
    "latency_p95_ms": 10.0,
    "latency_p99_ms": 15.0,
    "throughput_rows_per_s": 300.0,
    "memory_mb": 800.0,
    "training_seconds_per_epoch": 2.0,
}
PERF_LIMITS = {
    "max_ratios": {
        "latency_p50_ms": 1.75,
        "latency_p95_ms": 1.75,
        "memory_mb": 1.5,
        "throughput_rows_per_s": 0.5,
        "training_seconds_per_epoch": 2.0,
    },
    "slack": {"latency_p50_ms": 0.5, "latency_p95_ms": 1.0},
    "max_p95_latency_ms": 250.0,
    "min_history": 1,
}


def test_computing_performance_fails_when_latency_doubles() -> None:
    """Twice the p50/p95 latency of recent history fails Mo6."""
    doubled = {**PERF, "latency_p50_ms": 8.0, "latency_p95_ms": 20.0}
    result = check_computing_performance(doubled, [PERF, PERF], **PERF_LIMITS)  # type: ignore[arg-type]
    assert result.verdict is Verdict.FAIL and "latency_p95_ms 20.00" in result.reason
    same = check_computing_performance(PERF, [PERF, PERF], **PERF_LIMITS)  # type: ignore[arg-type]
    assert same.verdict is Verdict.PASS


def test_computing_performance_fails_on_lost_throughput() -> None:
    """Throughput under half its median fails, whatever the latency."""
    slow = {**PERF, "throughput_rows_per_s": 100.0}
    result = check_computing_performance(slow, [PERF], **PERF_LIMITS)  # type: ignore[arg-type]
    assert result.verdict is Verdict.FAIL and "throughput" in result.reason


def _quality(rows: int, auc: float, ece: float) -> QualityFigures:
    return QualityFigures(
        rows=rows, positives=rows // 4, auc=auc, calibration_error=ece
    )


def _mo7(online: QualityFigures, slices: dict | None = None):  # type: ignore[no-untyped-def, type-arg]
    return check_prediction_quality(
        online,
        _quality(4000, 0.84, 0.01),
        slices or {},
        max_auc_drop=0.05,
        max_calibration_rise=0.05,
        max_slice_auc_drop=0.08,
        min_rows=200,
        min_slice_rows=100,
    )


def test_prediction_quality_fails_when_quality_drops() -> None:
    """An AUC drop, a calibration rise or one degraded slice fails Mo7."""
    assert _mo7(_quality(800, 0.75, 0.02)).verdict is Verdict.FAIL
    miscalibrated = _mo7(_quality(800, 0.84, 0.12))
    assert miscalibrated.verdict is Verdict.FAIL and "calibration" in (
        miscalibrated.reason
    )
    sliced = _mo7(
        _quality(800, 0.84, 0.02),
        {"Contract=Two year": (_quality(200, 0.6, 0.02), _quality(900, 0.8, 0.01))},
    )
    assert sliced.verdict is Verdict.FAIL and "Contract=Two year" in sliced.reason
    assert _mo7(_quality(800, 0.83, 0.03)).verdict is Verdict.PASS


def test_prediction_quality_needs_enough_labels() -> None:
    """Fewer labelled rows than the minimum is insufficient evidence."""
    assert _mo7(_quality(50, 0.9, 0.0)).verdict is Verdict.INSUFFICIENT


def test_expected_calibration_error_of_a_calibrated_and_a_biased_model() -> None:
    """Predictions equal to the outcome rate have ~0 error; +0.3 bias gives ~0.3."""
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.65, 20000)
    y = (rng.uniform(size=p.size) < p).astype(float)
    assert expected_calibration_error(y, p, 10) < 0.02
    assert abs(expected_calibration_error(y, p + 0.3, 10) - 0.3) < 0.03
