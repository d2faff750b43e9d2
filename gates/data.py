"""Gates of the "Features and data" section (D1 to D7): measurements in, results out.

Each ``check_*`` function takes what was measured and the thresholds from
``gates: data:`` in ``config/churnops.yaml`` and returns a :class:`GateResult`; the
``measure_*`` functions compute what D2 and D3 judge from a ``predict`` callable, so
any model (the Keras candidate, a scikit-learn model in tests) can be assessed.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gates.result import GateResult, Verdict
from tasks.config import DatasetConfig
from tasks.features import FeatureTransform, KnownAnswerOutcome

Predict = Callable[[pd.DataFrame], np.ndarray]


def _verdict(ok: bool) -> Verdict:
    return Verdict.PASS if ok else Verdict.FAIL


# D1 -------------------------------------------------------------------------------


def check_contract_failure(
    problem: str, column: str | None, message: str
) -> GateResult:
    """D1 when ingestion refused the source: the schema did not hold."""
    return GateResult(
        "D1",
        Verdict.FAIL,
        f"the source breaks the data contract: {message}",
        value=1.0,
        threshold=0.0,
        details={"stage": "ingest", "problem": problem, "column": column},
    )


def check_data_expectations(
    success: bool,
    evaluated: int,
    failures: Sequence[Mapping[str, Any]],
    summary: str,
    *,
    evidence: str | None = None,
) -> GateResult:
    """D1 from a validation run: every expectation of the suite must hold."""
    return GateResult(
        "D1",
        _verdict(success and evaluated > 0),
        summary if evaluated else "the expectation suite is empty",
        value=float(len(failures)),
        threshold=0.0,
        evidence=evidence,
        details={"evaluated": evaluated, "failures": list(failures)[:20]},
    )


# D2 and D3 ------------------------------------------------------------------------


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


@dataclass(frozen=True)
class Importance:
    """AUC lost when one feature's values are shuffled across validation rows."""

    feature: str
    mean: float
    std: float


def measure_permutation_importance(
    predict: Predict,
    frame: pd.DataFrame,
    labels: np.ndarray,
    features: Sequence[str],
    *,
    repeats: int,
    seed: int,
) -> tuple[float, list[Importance]]:
    """The baseline AUC and each importance, one shuffled column at a time."""
    if len(np.unique(labels)) < 2:
        raise ValueError("permutation importance needs both classes in the labels")
    baseline = _auc(labels, np.asarray(predict(frame)).ravel())
    rng = np.random.default_rng(seed)
    results = []
    for feature in features:
        drops = []
        for _ in range(repeats):
            shuffled = frame.copy()
            order = rng.permutation(len(frame))
            shuffled[feature] = frame[feature].iloc[order].to_numpy()
            drops.append(baseline - _auc(labels, np.asarray(predict(shuffled)).ravel()))
        results.append(Importance(feature, float(np.mean(drops)), float(np.std(drops))))
    return baseline, results


def check_feature_importance(
    importances: Sequence[Importance], *, baseline_auc: float, min_importance: float
) -> GateResult:
    """D2: every input must cost at least ``min_importance`` AUC when shuffled."""
    weak = [i for i in importances if i.mean < min_importance]
    details = {
        "baseline_auc": baseline_auc,
        "importance": {i.feature: round(i.mean, 6) for i in importances},
        "not_beneficial": [i.feature for i in weak],
    }
    lowest = min((i.mean for i in importances), default=math.nan)
    if not importances:
        return GateResult(
            "D2", Verdict.FAIL, "the model has no input features", details=details
        )
    if weak:
        names = ", ".join(f"{i.feature} ({i.mean:+.4f})" for i in weak)
        reason = (
            f"{len(weak)} of {len(importances)} features do not help on validation "
            f"data (AUC drop below {min_importance}): {names}; remove them from "
            "model_inputs or mark them experimental"
        )
    else:
        reason = (
            f"all {len(importances)} features cost at least {min_importance} AUC when "
            f"shuffled (lowest {lowest:.4f}, baseline AUC {baseline_auc:.3f})"
        )
    return GateResult(
        "D2",
        _verdict(not weak),
        reason,
        value=lowest,
        threshold=min_importance,
        details=details,
    )


@dataclass(frozen=True)
class FeatureCost:
    """What one feature costs: declared acquisition, model width and serving time."""

    feature: str
    acquisition: float
    width: int
    latency_us_per_row: float

    def total(self, *, width_cost: float, latency_cost: float) -> float:
        return (
            self.acquisition
            + self.width * width_cost
            + self.latency_us_per_row * latency_cost
        )


def measure_feature_costs(
    transform: FeatureTransform, frame: pd.DataFrame, dataset: DatasetConfig
) -> list[FeatureCost]:
    """Each input's width in the model and the time its transform takes per row."""
    costs = []
    rows = max(len(frame), 1)
    for feature in transform.inputs:
        alone = FeatureTransform(
            kinds={feature: transform.kinds[feature]},
            numeric={k: v for k, v in transform.numeric.items() if k == feature},
            vocabularies={
                k: v for k, v in transform.vocabularies.items() if k == feature
            },
        )
        started = time.perf_counter()
        alone.transform(frame[[feature]])
        elapsed = time.perf_counter() - started
        costs.append(
            FeatureCost(
                feature=feature,
                acquisition=dataset.features[feature].cost,
                width=transform.width_of(feature),
                latency_us_per_row=elapsed * 1e6 / rows,
            )
        )
    return costs


def check_feature_cost(
    costs: Sequence[FeatureCost],
    importance: Mapping[str, float],
    *,
    max_width_share: float,
    max_cost_per_importance: float,
    width_cost: float,
    latency_cost: float,
) -> GateResult:
    """D3: no feature may take too much of the model, or cost too much for its worth.

    A feature with no positive importance is D2's finding; here it fails only when
    it takes too large a share of the model's width.
    """
    total_width = sum(c.width for c in costs) or 1
    too_costly = []
    table: dict[str, dict[str, float | str]] = {}
    worst_ratio = 0.0
    for cost in costs:
        total = cost.total(width_cost=width_cost, latency_cost=latency_cost)
        gain = importance.get(cost.feature, 0.0)
        ratio = total / gain if gain > 0 else math.inf
        share = cost.width / total_width
        if gain > 0:
            worst_ratio = max(worst_ratio, ratio)
        table[cost.feature] = {
            "acquisition": cost.acquisition,
            "width": cost.width,
            "width_share": round(share, 4),
            "latency_us_per_row": round(cost.latency_us_per_row, 3),
            "cost": round(total, 3),
            "importance": gain,
            "cost_per_importance": ratio if math.isfinite(ratio) else "inf",
        }
        if share > max_width_share:
            too_costly.append(
                f"{cost.feature} takes {share:.0%} of the model's {total_width} "
                f"inputs (limit {max_width_share:.0%})"
            )
        elif gain > 0 and ratio > max_cost_per_importance:
            too_costly.append(
                f"{cost.feature} costs {total:.1f} units for {gain:+.4f} AUC "
                f"(limit {max_cost_per_importance:g} per unit of AUC)"
            )
    if too_costly:
        reason = (
            "features cost more than they are worth: "
            + "; ".join(too_costly)
            + "; drop them, or bucket or hash them into fewer columns"
        )
    else:
        reason = (
            f"all {len(costs)} features are worth their cost (worst "
            f"{worst_ratio:.0f} cost units per unit of AUC, limit "
            f"{max_cost_per_importance:g})"
        )
    return GateResult(
        "D3",
        _verdict(not too_costly and bool(costs)),
        reason if costs else "the model has no input features",
        value=worst_ratio if math.isfinite(worst_ratio) else None,
        threshold=max_cost_per_importance,
        details={"features": table, "total_width": total_width},
    )


# D4 -------------------------------------------------------------------------------


def check_feature_registry(dataset: DatasetConfig) -> GateResult:
    """D4: inputs must be registered, active, owned, and neither PII nor protected."""
    problems = []
    for name in dataset.model_inputs:
        spec = dataset.features.get(name)
        if spec is None:
            problems.append(f"{name} is not registered")
            continue
        if spec.status in ("deprecated", "forbidden"):
            problems.append(f"{name} is {spec.status}")
        if spec.pii:
            problems.append(f"{name} is personal data (pii)")
        if spec.protected:
            problems.append(f"{name} is a protected attribute")
        if name == dataset.contract.id_column or name in (
            dataset.contract.direct_identifiers
        ):
            problems.append(f"{name} is an identifier")
        if not spec.owner.strip() or not spec.source.strip():
            problems.append(f"{name} has no owner or source")
    details = {
        "inputs": list(dataset.model_inputs),
        "registry": {
            name: {
                "owner": s.owner,
                "source": s.source,
                "status": s.status,
                "pii": s.pii,
                "protected": s.protected,
            }
            for name, s in dataset.features.items()
        },
    }
    if problems:
        reason = (
            "model inputs break the feature registry's rules: "
            + "; ".join(problems)
            + f". Fix model_inputs or the registry in {dataset.path or dataset.name}"
        )
    else:
        reason = (
            f"all {len(dataset.model_inputs)} model inputs are registered, active "
            "and allowed"
        )
    return GateResult(
        "D4",
        _verdict(not problems),
        reason,
        value=float(len(problems)),
        threshold=0.0,
        details=details,
    )


# D5 -------------------------------------------------------------------------------


def check_privacy(
    findings: Mapping[str, int],
    *,
    scanned: int,
    identifiers: int,
    unmasked_columns: Sequence[str] = (),
) -> GateResult:
    """D5: no artifact may hold a raw identifier, and no identifier column survives."""
    details = {
        "artifacts_scanned": scanned,
        "identifiers_searched": identifiers,
        "artifacts_with_identifiers": dict(findings),
        "unmasked_columns": list(unmasked_columns),
    }
    if identifiers == 0:
        return GateResult(
            "D5",
            Verdict.INSUFFICIENT,
            "no raw identifiers to search for (the raw snapshot has none)",
            details=details,
        )
    problems = []
    if unmasked_columns:
        problems.append(f"identifier column(s) {list(unmasked_columns)} left unmasked")
    if findings:
        listed = ", ".join(f"{k} ({n})" for k, n in sorted(findings.items())[:5])
        problems.append(
            f"raw identifiers found in {len(findings)} artifact(s): {listed}"
        )
    if problems:
        reason = "; ".join(problems) + (
            "; delete those artifacts and fix the step that wrote them"
        )
    else:
        reason = (
            f"{scanned} artifacts scanned for {identifiers} raw identifiers: none found"
        )
    return GateResult(
        "D5",
        _verdict(not problems),
        reason,
        value=float(sum(findings.values()) + len(unmasked_columns)),
        threshold=0.0,
        details=details,
    )


def check_deletion(requested: int, removed: int, remaining: int) -> GateResult:
    """D5 for a deletion request: no stored snapshot may still hold the customers."""
    ok = remaining == 0
    reason = (
        f"deletion request for {requested} customer(s) honoured: {removed} row(s) "
        "removed, none left in stored snapshots"
        if ok
        else f"deletion request for {requested} customer(s) incomplete: {remaining} "
        "row(s) still stored"
    )
    return GateResult(
        "D5",
        _verdict(ok),
        reason,
        value=float(remaining),
        threshold=0.0,
        details={"stage": "deletion", "requested": requested, "removed_rows": removed},
    )


# D6 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeadTime:
    """Days from a feature's declaration to a production model using it (or to now)."""

    feature: str
    declared: dt.date | None
    days: int | None
    in_production: bool


def measure_feature_lead_times(
    dataset: DatasetConfig,
    production_inputs_since: Mapping[str, dt.date],
    *,
    today: dt.date,
    tracking_since: dt.date | None = None,
) -> list[LeadTime]:
    """Lead time per model input; a feature not yet in production counts until today.

    The clock starts at the later of the declaration and ``tracking_since`` (when
    this installation first ran): a feature declared before churnops existed could
    not have reached production any sooner.
    """
    leads = []
    for name in dataset.model_inputs:
        spec = dataset.features.get(name)
        declared = spec.declared if spec else None
        since = production_inputs_since.get(name)
        if declared is None:
            leads.append(LeadTime(name, None, None, since is not None))
            continue
        start = max(declared, tracking_since) if tracking_since else declared
        end = since if since is not None else today
        leads.append(
            LeadTime(name, declared, max((end - start).days, 0), since is not None)
        )
    return leads


def check_feature_lead_time(
    leads: Sequence[LeadTime],
    *,
    budget_days: int,
    flowed: Mapping[str, bool],
) -> GateResult:
    """D6: lead times within budget, and new features proven to flow end to end."""
    undated = [lead.feature for lead in leads if lead.declared is None]
    late = [lead for lead in leads if lead.days is not None and lead.days > budget_days]
    stuck = [name for name, ok in flowed.items() if not ok]
    worst = max((lead.days for lead in leads if lead.days is not None), default=0)
    problems = []
    if undated:
        problems.append(f"no 'declared' date in the registry for {undated}")
    if late:
        problems.append(
            "over the lead-time budget of "
            f"{budget_days} days: "
            + ", ".join(f"{lead.feature} ({lead.days} days)" for lead in late)
        )
    if stuck:
        problems.append(
            f"new feature(s) {stuck} did not reach the model inputs in the sample run"
        )
    reason = (
        "; ".join(problems)
        if problems
        else f"all {len(leads)} inputs reached production within {budget_days} days "
        f"(longest {worst}); {len(flowed)} new feature(s) flowed end to end on a sample"
    )
    return GateResult(
        "D6",
        _verdict(not problems),
        reason,
        value=float(worst),
        threshold=float(budget_days),
        details={
            "lead_days": {lead.feature: lead.days for lead in leads},
            "in_production": [lead.feature for lead in leads if lead.in_production],
            "sample_flow": dict(flowed),
        },
    )


# D7 -------------------------------------------------------------------------------


def check_feature_code(outcomes: Sequence[KnownAnswerOutcome]) -> GateResult:
    """D7: every declared transform kind reproduces its hand-computed answer."""
    failed = [o for o in outcomes if not o.passed]
    details = {o.kind: {"passed": o.passed, "message": o.message} for o in outcomes}
    if not outcomes:
        return GateResult(
            "D7", Verdict.FAIL, "no feature kinds declared to check", details=details
        )
    if failed:
        reason = "known-answer checks fail: " + "; ".join(
            f"{o.kind}: {o.message}" for o in failed
        )
    else:
        reason = (
            f"known-answer checks pass for every declared transform kind "
            f"({', '.join(o.kind for o in outcomes)})"
        )
    return GateResult(
        "D7",
        _verdict(not failed),
        reason,
        value=float(len(failed)),
        threshold=0.0,
        details=details,
    )
