"""Monitoring gates (Mo1-Mo7): measured figures in, a :class:`GateResult` out.

``tasks.monitoring_steps`` reads the prediction log, the late labels and the
production model and measures; these functions only judge the figures against the
thresholds in ``gates: monitoring:`` of ``config/churnops.yaml``, so every verdict can
be tested with numbers made by hand. Each check can fail; the fault that fails it
is in ``tests/gates/test_monitoring.py``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gates.result import GateResult, Verdict, insufficient

# PSI of an empty bin would be infinite: shares are floored at this.
_PSI_FLOOR = 1e-4


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


# Measures shared by the steps and the tests ---------------------------------------


def schema_fingerprint(columns: Mapping[str, str]) -> str:
    """A short hash of column names and their kinds, independent of order."""
    text = ";".join(f"{name}:{kind}" for name, kind in sorted(columns.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def population_stability_index(
    expected: pd.Series, actual: pd.Series, *, numeric: bool, bins: int
) -> float:
    """PSI of ``actual`` against ``expected``: quantile bins of the expected values
    for numbers (missing values get a bin of their own), categories otherwise."""
    if numeric:
        reference = pd.to_numeric(expected, errors="coerce").astype("float64")
        current = pd.to_numeric(actual, errors="coerce").astype("float64")
        quantiles = np.linspace(0, 1, bins + 1)[1:-1]
        edges = np.unique(np.nanquantile(reference.to_numpy(), quantiles))

        def binned(values: pd.Series) -> pd.Series:
            codes = np.searchsorted(edges, values.to_numpy(), side="right")
            labels = pd.Series(codes.astype(str), index=values.index)
            return labels.where(values.notna(), "<missing>")

        left, right = binned(reference), binned(current)
    else:
        left = expected.astype("string").fillna("<missing>")
        right = actual.astype("string").fillna("<missing>")
    categories = sorted(set(left) | set(right))
    p = left.value_counts(normalize=True).reindex(categories, fill_value=0.0)
    q = right.value_counts(normalize=True).reindex(categories, fill_value=0.0)
    p_arr = np.maximum(p.to_numpy(dtype=float), _PSI_FLOOR)
    q_arr = np.maximum(q.to_numpy(dtype=float), _PSI_FLOOR)
    return float(np.sum((q_arr - p_arr) * np.log(q_arr / p_arr)))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int) -> float:
    """Mean gap between predicted and observed churn rate over equal-width bins,
    weighted by the rows in each bin."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if y.size == 0:
        return float("nan")
    index = np.minimum((p * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            error += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(error)


# Mo1 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamState:
    """What monitoring saw of its inputs in one run (kept for the next run)."""

    rows_per_day: float | None
    schema: dict[str, str]
    newest_event: str | None
    packages: dict[str, str]

    @property
    def fingerprint(self) -> str:
        return schema_fingerprint(self.schema)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_per_day": self.rows_per_day,
            "schema": self.schema,
            "schema_fingerprint": self.fingerprint,
            "newest_event": self.newest_event,
            "packages": self.packages,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UpstreamState:
        return cls(
            rows_per_day=data.get("rows_per_day"),
            schema=dict(data.get("schema", {})),
            newest_event=data.get("newest_event"),
            packages=dict(data.get("packages", {})),
        )


def package_changes(
    before: Mapping[str, str], after: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Packages added, removed or at another version, by name."""
    changes = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old != new:
            changes.append({"package": name, "before": old, "after": new})
    return changes


def check_dependency_changes(
    current: UpstreamState,
    previous: UpstreamState | None,
    *,
    expected_rows_per_day: float | None,
    expected_columns: Sequence[str],
    days_since_newest_event: float | None,
    min_volume_ratio: float,
    max_event_age_days: float,
) -> GateResult:
    """Mo1: upstream volume, schema and freshness, and the package set, against the
    last run and the contract.

    Fails on missing contract columns, a volume under ``min_volume_ratio`` of the
    expected rows per day, or inputs staler than ``max_event_age_days``; warns on a
    schema or package change (``details["changes"]`` lists each, to notify on).
    """
    problems: list[str] = []
    changes: list[dict[str, Any]] = []
    missing = [c for c in expected_columns if c not in current.schema]
    if missing:
        problems.append(f"serving inputs lack contract column(s) {missing}")
    ratio = None
    if expected_rows_per_day and current.rows_per_day is not None:
        ratio = current.rows_per_day / expected_rows_per_day
        if ratio < min_volume_ratio:
            problems.append(
                f"{current.rows_per_day:.0f} rows on the newest day against "
                f"{expected_rows_per_day:.0f} expected ({ratio:.0%}, below "
                f"{min_volume_ratio:.0%})"
            )
    if days_since_newest_event is None:
        problems.append("no event date in the serving inputs: freshness unknown")
    elif days_since_newest_event > max_event_age_days:
        problems.append(
            f"newest event is {days_since_newest_event:.0f} days old (budget "
            f"{max_event_age_days:.0f})"
        )
    if previous is not None:
        if previous.fingerprint != current.fingerprint:
            changes.append(
                {
                    "kind": "schema",
                    "before": previous.schema,
                    "after": current.schema,
                }
            )
        changes += [
            {"kind": "package", **c}
            for c in package_changes(previous.packages, current.packages)
        ]
    details = {
        "state": {k: v for k, v in current.to_dict().items() if k != "packages"},
        "packages": len(current.packages),
        "expected_rows_per_day": expected_rows_per_day,
        "volume_ratio": ratio,
        "days_since_newest_event": days_since_newest_event,
        "changes": changes,
        "problems": problems,
        "first_run": previous is None,
    }
    if problems:
        return GateResult(
            "Mo1",
            Verdict.FAIL,
            "upstream data broke its contract: " + "; ".join(problems),
            value=ratio,
            threshold=min_volume_ratio,
            details=details,
        )
    if changes:
        named = [
            f"{c['package']} {c['before']} -> {c['after']}"
            if c["kind"] == "package"
            else "the serving input schema"
            for c in changes
        ]
        return GateResult(
            "Mo1",
            Verdict.WARN,
            f"{len(changes)} dependency change(s) since the last run: "
            + ", ".join(named[:5])
            + "; a notification was sent",
            value=ratio,
            threshold=min_volume_ratio,
            details=details,
        )
    if previous is None:
        return insufficient(
            "Mo1",
            "first monitoring run: volume and freshness hold, and the schema and "
            "package set are stored as the baseline the next run compares with",
            value=ratio,
            threshold=min_volume_ratio,
            details=details,
        )
    return GateResult(
        "Mo1",
        Verdict.PASS,
        f"no dependency change since the last run; volume "
        f"{_fmt(ratio, 2)} of expected, newest event "
        f"{_fmt(days_since_newest_event, 0)} days old",
        value=ratio,
        threshold=min_volume_ratio,
        details=details,
    )


# Mo2 -------------------------------------------------------------------------------


def check_serving_invariants(
    *,
    rows: int,
    evaluated: int,
    failures: Sequence[Mapping[str, Any]],
    missing_columns: Sequence[str],
    suite: str,
    evidence: str | None = None,
) -> GateResult:
    """Mo2: the training expectation suite holds on logged serving inputs."""
    details = {
        "rows": rows,
        "evaluated": evaluated,
        "failures": list(failures)[:20],
        "missing_columns": list(missing_columns),
        "suite": suite,
    }
    if rows == 0:
        return insufficient(
            "Mo2", "no live serving inputs in the window to validate", details=details
        )
    broken = len(failures) + len(missing_columns)
    if broken:
        named = [
            f"{f.get('expectation')} on {f.get('column')} ({f.get('observed')})"
            for f in failures[:4]
        ]
        if missing_columns:
            named.insert(0, f"missing column(s) {list(missing_columns)}")
        return GateResult(
            "Mo2",
            Verdict.FAIL,
            f"serving inputs violate the training schema: {broken} of "
            f"{evaluated + len(missing_columns)} checks fail on {rows} rows: "
            + "; ".join(named),
            value=float(broken),
            threshold=0.0,
            evidence=evidence,
            details=details,
        )
    return GateResult(
        "Mo2",
        Verdict.PASS,
        f"all {evaluated} expectations of the model's suite hold on {rows} logged "
        "serving inputs",
        value=0.0,
        threshold=0.0,
        evidence=evidence,
        details=details,
    )


# Mo3 -------------------------------------------------------------------------------


def check_training_serving_skew(
    *,
    compared: int,
    differing: int,
    unhashed: int,
    psi: Mapping[str, float],
    max_skew_share: float,
    psi_warn: float,
    psi_fail: float,
    examples: Sequence[str] = (),
) -> GateResult:
    """Mo3: serving's features equal the training code's on the same inputs, and the
    input distributions stay close to training's (PSI per feature)."""
    share = differing / compared if compared else None
    worst = max(psi.items(), key=lambda item: item[1]) if psi else None
    details = {
        "compared": compared,
        "differing": differing,
        "without_feature_hash": unhashed,
        "differing_share": share,
        "psi": {k: round(v, 4) for k, v in sorted(psi.items())},
        "psi_warn": psi_warn,
        "psi_fail": psi_fail,
        "examples": list(examples)[:5],
    }
    if compared == 0:
        return insufficient(
            "Mo3",
            f"none of the {unhashed} logged serving rows carries the hash of its "
            "feature vector, so serving's features cannot be compared with "
            "training's; serve with serving.router.KerasServedModel",
            details=details,
        )
    drifted = {k: v for k, v in psi.items() if v > psi_fail}
    shifted = {k: v for k, v in psi.items() if psi_warn < v <= psi_fail}
    psi_text = (
        f"largest PSI {worst[1]:.3f} ({worst[0]})" if worst else "no PSI measured"
    )
    if share is not None and share > max_skew_share:
        return GateResult(
            "Mo3",
            Verdict.FAIL,
            f"serving computed other features than the training code for "
            f"{differing} of {compared} examples ({share:.1%}, allowed "
            f"{max_skew_share:.1%}); {psi_text}",
            value=share,
            threshold=max_skew_share,
            details=details,
        )
    if drifted:
        named = ", ".join(f"{k} {v:.2f}" for k, v in sorted(drifted.items()))
        return GateResult(
            "Mo3",
            Verdict.FAIL,
            f"serving inputs moved away from the training data: PSI above "
            f"{psi_fail} for {named}; features agree on {compared - differing} of "
            f"{compared} examples",
            value=share,
            threshold=max_skew_share,
            details=details,
        )
    if shifted:
        named = ", ".join(f"{k} {v:.2f}" for k, v in sorted(shifted.items()))
        return GateResult(
            "Mo3",
            Verdict.WARN,
            f"features agree on {compared - differing} of {compared} examples, but "
            f"PSI is above {psi_warn} for {named}",
            value=share,
            threshold=max_skew_share,
            details=details,
        )
    return GateResult(
        "Mo3",
        Verdict.PASS,
        f"serving's features equal the training code's on {compared - differing} of "
        f"{compared} examples; {psi_text}",
        value=share,
        threshold=max_skew_share,
        details=details,
    )


# Mo4 -------------------------------------------------------------------------------


def check_model_staleness(
    *,
    version: str,
    model_age_days: float,
    data_age_days: float | None,
    budget_days: float | None,
    warn_share: float,
) -> GateResult:
    """Mo4: the serving model's age against the staleness budget from M4.

    The age judged is the larger of the days since registration and (when known)
    the days between the newest training event and the newest served event.
    """
    age = max(model_age_days, data_age_days or 0.0)
    details = {
        "version": version,
        "model_age_days": round(model_age_days, 2),
        "data_age_days": None if data_age_days is None else round(data_age_days, 2),
        "budget_days": budget_days,
        "warn_share": warn_share,
    }
    if budget_days is None:
        return insufficient(
            "Mo4",
            f"model {version} carries no staleness budget (M4 measured no curve for "
            "it), so its age of "
            f"{age:.0f} days cannot be judged; train it with an event-dated dataset",
            value=age,
            details=details,
        )
    if age > budget_days:
        return GateResult(
            "Mo4",
            Verdict.FAIL,
            f"model {version} is {age:.0f} days old, over its staleness budget of "
            f"{budget_days:.0f} days; retrain it",
            value=age,
            threshold=budget_days,
            details=details,
        )
    if age > warn_share * budget_days:
        return GateResult(
            "Mo4",
            Verdict.WARN,
            f"model {version} is {age:.0f} days old, {age / budget_days:.0%} of its "
            f"staleness budget of {budget_days:.0f} days; schedule a retrain",
            value=age,
            threshold=budget_days,
            details=details,
        )
    return GateResult(
        "Mo4",
        Verdict.PASS,
        f"model {version} is {age:.0f} days old, within its staleness budget of "
        f"{budget_days:.0f} days",
        value=age,
        threshold=budget_days,
        details=details,
    )


# Mo5 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StabilityFigures:
    """Counts of non-finite values and dead units in one model and its traffic."""

    predictions: int
    bad_predictions: int
    weights: int
    bad_weights: int
    losses: int
    bad_losses: int
    units: int
    dead_units: int
    dead_by_layer: dict[str, int] = field(default_factory=dict)


def check_numerical_stability(
    figures: StabilityFigures, *, max_dead_unit_share: float
) -> GateResult:
    """Mo5: no NaN or infinity in predictions, weights or training loss, and few
    ReLU units that output zero for every recent input."""
    dead_share = figures.dead_units / figures.units if figures.units else 0.0
    details = {**vars(figures), "dead_share": dead_share}
    if figures.predictions == 0 and figures.weights == 0:
        return insufficient(
            "Mo5", "no predictions and no model weights to inspect", details=details
        )
    faults = []
    if figures.bad_predictions:
        faults.append(
            f"{figures.bad_predictions} of {figures.predictions} served predictions "
            "are NaN, infinite or outside [0, 1]"
        )
    if figures.bad_weights:
        faults.append(
            f"{figures.bad_weights} of {figures.weights} weights are not finite"
        )
    if figures.bad_losses:
        faults.append(
            f"{figures.bad_losses} of {figures.losses} training losses are not finite"
        )
    if dead_share > max_dead_unit_share:
        faults.append(
            f"{figures.dead_units} of {figures.units} ReLU units are dead "
            f"({dead_share:.0%}, allowed {max_dead_unit_share:.0%})"
        )
    if faults:
        return GateResult(
            "Mo5",
            Verdict.FAIL,
            "the model is numerically unstable: " + "; ".join(faults),
            value=float(figures.bad_predictions + figures.bad_weights),
            threshold=0.0,
            details=details,
        )
    return GateResult(
        "Mo5",
        Verdict.PASS,
        f"{figures.predictions} predictions, {figures.weights} weights and "
        f"{figures.losses} training losses are finite; {figures.dead_units} of "
        f"{figures.units} ReLU units dead on recent inputs",
        value=0.0,
        threshold=0.0,
        details=details,
    )


# Mo6 -------------------------------------------------------------------------------

# Figure name -> True when a higher value is worse.
PERFORMANCE_FIGURES = {
    "latency_p50_ms": True,
    "latency_p95_ms": True,
    "latency_p99_ms": True,
    "throughput_rows_per_s": False,
    "memory_mb": True,
    "training_seconds_per_epoch": True,
}


def check_computing_performance(
    current: Mapping[str, float | None],
    history: Sequence[Mapping[str, Any]],
    *,
    max_ratios: Mapping[str, float],
    slack: Mapping[str, float],
    max_p95_latency_ms: float,
    min_history: int,
) -> GateResult:
    """Mo6: each figure against the median of recent runs' (a ratio per figure;
    for throughput the allowed share of the median), plus an absolute p95 budget.

    ``max_ratios`` names the figures judged; the others are only reported.
    """
    baseline: dict[str, float] = {}
    for name in PERFORMANCE_FIGURES:
        values = [
            float(h[name])
            for h in history
            if h.get(name) is not None and math.isfinite(float(h[name]))
        ]
        if len(values) >= min_history:
            baseline[name] = float(np.median(values))
    regressions = []
    compared = []
    for name, limit in max_ratios.items():
        now, before = current.get(name), baseline.get(name)
        if now is None or before is None or before <= 0:
            continue
        compared.append(name)
        extra = slack.get(name, 0.0)
        if PERFORMANCE_FIGURES[name] and now > limit * before + extra:
            regressions.append(f"{name} {now:.2f} vs {before:.2f} (> x{limit})")
        if not PERFORMANCE_FIGURES[name] and now < limit * before - extra:
            regressions.append(f"{name} {now:.1f} vs {before:.1f} (< x{limit})")
    p95 = current.get("latency_p95_ms")
    if p95 is not None and p95 > max_p95_latency_ms:
        regressions.append(f"p95 latency {p95:.1f} ms over {max_p95_latency_ms} ms")
    details = {
        "current": dict(current),
        "baseline_median": baseline,
        "history_runs": len(history),
        "compared": compared,
        "regressions": regressions,
    }
    ratio = (
        p95 / baseline["latency_p95_ms"]
        if p95 is not None and baseline.get("latency_p95_ms")
        else None
    )
    if regressions:
        return GateResult(
            "Mo6",
            Verdict.FAIL,
            "computing performance regressed: " + "; ".join(regressions),
            value=ratio,
            threshold=max_ratios.get("latency_p95_ms"),
            details=details,
        )
    if p95 is None:
        return insufficient(
            "Mo6", "no served request in the window to time", details=details
        )
    if not compared:
        return GateResult(
            "Mo6",
            Verdict.PASS,
            f"p95 latency {p95:.1f} ms within {max_p95_latency_ms} ms; fewer than "
            f"{min_history} earlier runs in the history, so no figure was compared "
            "with a baseline yet",
            value=ratio,
            threshold=max_ratios.get("latency_p95_ms"),
            details=details,
        )
    return GateResult(
        "Mo6",
        Verdict.PASS,
        f"{len(compared)} figures within their ratio of the median of "
        f"{len(history)} earlier runs; p95 latency {p95:.1f} ms",
        value=ratio,
        threshold=max_ratios.get("latency_p95_ms"),
        details=details,
    )


# Mo7 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityFigures:
    """AUC and calibration of one set of predictions."""

    rows: int
    positives: int
    auc: float
    calibration_error: float


def check_prediction_quality(
    online: QualityFigures,
    reference: QualityFigures,
    slices: Mapping[str, tuple[QualityFigures, QualityFigures]],
    *,
    max_auc_drop: float,
    max_calibration_rise: float,
    max_slice_auc_drop: float,
    min_rows: int,
    min_slice_rows: int,
) -> GateResult:
    """Mo7: AUC and calibration on labelled live traffic against the validation
    (holdout) figures of the same version, overall and per slice."""
    details: dict[str, Any] = {
        "online": vars(online),
        "reference": vars(reference),
        "slices": {
            name: {"online": vars(now), "reference": vars(ref)}
            for name, (now, ref) in slices.items()
        },
    }
    if online.rows < min_rows or online.positives in (0, online.rows):
        return insufficient(
            "Mo7",
            f"{online.rows} labelled live predictions ({online.positives} churned) "
            f"in the window; at least {min_rows} with both outcomes are needed",
            details=details,
        )
    faults = []
    drop = reference.auc - online.auc
    if drop > max_auc_drop:
        faults.append(
            f"AUC {online.auc:.3f} on live traffic vs {reference.auc:.3f} at "
            f"validation (drop {drop:.3f} > {max_auc_drop})"
        )
    rise = online.calibration_error - reference.calibration_error
    if rise > max_calibration_rise:
        faults.append(
            f"calibration error {online.calibration_error:.3f} vs "
            f"{reference.calibration_error:.3f} (rise {rise:.3f} > "
            f"{max_calibration_rise})"
        )
    judged = 0
    for name, (now, ref) in slices.items():
        if now.rows < min_slice_rows or now.positives in (0, now.rows):
            continue
        if not math.isfinite(ref.auc):
            continue
        judged += 1
        if ref.auc - now.auc > max_slice_auc_drop:
            faults.append(
                f"slice {name}: AUC {now.auc:.3f} vs {ref.auc:.3f} "
                f"(drop > {max_slice_auc_drop})"
            )
    details["slices_judged"] = judged
    if faults:
        return GateResult(
            "Mo7",
            Verdict.FAIL,
            f"prediction quality regressed on {online.rows} labelled live rows: "
            + "; ".join(faults[:5]),
            value=online.auc,
            threshold=reference.auc - max_auc_drop,
            details=details,
        )
    return GateResult(
        "Mo7",
        Verdict.PASS,
        f"AUC {online.auc:.3f} on {online.rows} labelled live rows (validation "
        f"{reference.auc:.3f}), calibration error {online.calibration_error:.3f} "
        f"(validation {reference.calibration_error:.3f}); {judged} slices within "
        f"{max_slice_auc_drop} AUC",
        value=online.auc,
        threshold=reference.auc - max_auc_drop,
        details=details,
    )
