"""Model development gates (M1-M7): measured figures in, a :class:`GateResult` out.

The steps in ``tasks.model_steps`` compute predictions, curves and baselines; these
functions only judge them against the thresholds in ``gates: model:`` of
``config/churnops.yaml``, so each verdict can be tested with numbers made by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gates.result import GateResult, Verdict, insufficient
from tasks.config import ModelConfig
from tasks.lineage import SpecState
from tasks.model_spec import ModelSpecError, check_search_space


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, or NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


# M1 ----------------------------------------------------------------------------


def check_model_spec(state: SpecState, *, allow_dirty: bool) -> GateResult:
    """The spec and config are committed, and the model records which commit."""
    details = state.to_dict()
    if state.commit is None:
        return insufficient(
            "M1",
            "the code is not a git checkout, so the commit of the model spec cannot be "
            "recorded; train from a checkout of the repository",
            details=details,
        )
    if not state.dirty:
        return GateResult(
            "M1",
            Verdict.PASS,
            f"model spec and config are committed at {state.commit[:12]}; the commit "
            "is stored in the model's lineage",
            details=details,
        )
    changed = ", ".join(state.dirty_paths[:5])
    if allow_dirty:
        return GateResult(
            "M1",
            Verdict.WARN,
            f"training from uncommitted changes to {changed} on top of "
            f"{state.commit[:12]}; allowed here (allow_dirty_spec) and marked dirty in "
            "the lineage, commit them before a production run",
            details=details,
        )
    return GateResult(
        "M1",
        Verdict.FAIL,
        f"uncommitted changes to {changed} on top of {state.commit[:12]}: a model "
        "trained now could not be traced to a reviewed spec; commit or revert them",
        details=details,
    )


# M2 ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionMetrics:
    """A model version's offline metric and, once monitoring has it, its online one."""

    version: str
    offline_auc: float
    online_auc: float | None


def check_metric_correlation(
    versions: Sequence[VersionMetrics], *, min_versions: int, min_correlation: float
) -> GateResult:
    """Offline AUC predicts online AUC across versions (Pearson correlation)."""
    paired = [v for v in versions if v.online_auc is not None]
    details: dict[str, Any] = {
        "versions": [vars(v) for v in versions],
        "paired": len(paired),
    }
    if len(paired) < min_versions:
        return insufficient(
            "M2",
            f"{len(paired)} model version(s) have an online AUC from monitoring, "
            f"{min_versions} are needed to judge the correlation "
            f"({len(versions)} version(s) registered)",
            details=details,
            threshold=min_correlation,
        )
    offline = np.array([v.offline_auc for v in paired])
    online = np.array([v.online_auc for v in paired], dtype=float)
    if np.std(offline) == 0 or np.std(online) == 0:
        return insufficient(
            "M2",
            f"offline or online AUC is identical across the {len(paired)} versions, "
            "so a correlation is undefined; it needs versions of different quality",
            details=details,
        )
    correlation = float(np.corrcoef(offline, online)[0, 1])
    details["correlation"] = correlation
    passed = correlation >= min_correlation
    return GateResult(
        "M2",
        Verdict.PASS if passed else Verdict.FAIL,
        f"offline and online AUC correlate at {correlation:.2f} across "
        f"{len(paired)} versions ({'at least' if passed else 'below'} "
        f"{min_correlation}); "
        + (
            "offline gains can be trusted"
            if passed
            else "offline gains do not carry to served traffic"
        ),
        value=correlation,
        threshold=min_correlation,
        details=details,
    )


# M3 ----------------------------------------------------------------------------


def check_hyperparameter_search(
    config: ModelConfig, trials: Sequence[Mapping[str, Any]], *, evidence: str | None
) -> GateResult:
    """Every hyperparameter has a range and a random search over them was run."""
    try:
        check_search_space(config)
    except ModelSpecError as exc:
        return GateResult("M3", Verdict.FAIL, str(exc))
    finished = [t for t in trials if t.get("val_auc") is not None]
    if not finished:
        return GateResult(
            "M3",
            Verdict.FAIL,
            "no hyperparameter search trial finished, so the model's hyperparameters "
            "were not tuned; run the tune step",
            evidence=evidence,
        )
    unexplored = [
        name
        for name in config.hyperparameters
        if len(finished) > 1
        and len({repr(t["hyperparameters"].get(name)) for t in finished}) < 2
    ]
    best = max(finished, key=lambda t: float(t["val_auc"]))
    details = {"trials": len(finished), "best": best, "unexplored": unexplored}
    if unexplored:
        return GateResult(
            "M3",
            Verdict.FAIL,
            f"the search never varied {unexplored} over {len(finished)} trials; "
            "widen their ranges or run more trials",
            evidence=evidence,
            details=details,
        )
    return GateResult(
        "M3",
        Verdict.PASS,
        f"random search over {len(config.hyperparameters)} hyperparameters, "
        f"{len(finished)} trials; best validation AUC {float(best['val_auc']):.3f}",
        value=float(best["val_auc"]),
        evidence=evidence,
        details=details,
    )


# M4 ----------------------------------------------------------------------------


def staleness_budget_days(
    curve: Sequence[Mapping[str, float]], max_drop: float
) -> float | None:
    """The oldest age whose AUC, and every younger one's, stays within the drop."""
    points = sorted(curve, key=lambda p: p["age_days"])
    if not points:
        return None
    floor = points[0]["auc"] - max_drop
    budget = points[0]["age_days"]
    for point in points[1:]:
        if not point["auc"] >= floor:
            break
        budget = point["age_days"]
    return float(budget)


def check_staleness_curve(
    curve: Sequence[Mapping[str, float]] | None,
    *,
    max_drop: float,
    no_curve_reason: str | None = None,
    evidence: str | None = None,
    model_name: str = "model",
) -> GateResult:
    """A curve of AUC against model age exists and gives a staleness budget.

    ``no_curve_reason`` says why no curve could be measured (a table without event
    dates): that is missing evidence, not a failure. A curve that should exist but
    has fewer than two points fails.
    """
    if curve is None and no_curve_reason:
        return insufficient("M4", no_curve_reason, threshold=max_drop)
    points = list(curve or [])
    if len(points) < 2:
        return GateResult(
            "M4",
            Verdict.FAIL,
            f"the staleness curve has {len(points)} point(s); at least two model ages "
            "are needed to know how quality falls with age",
            evidence=evidence,
        )
    budget = staleness_budget_days(points, max_drop)
    assert budget is not None
    ages = sorted(p["age_days"] for p in points)
    return GateResult(
        "M4",
        Verdict.PASS,
        f"{model_name} AUC on the newest window measured at {len(points)} model "
        f"ages ({ages[0]:.0f}-{ages[-1]:.0f} days); it stays within {max_drop} of "
        f"the freshest model up to {budget:.0f} days, the staleness budget",
        value=budget,
        threshold=max_drop,
        evidence=evidence,
        details={"curve": points, "budget_days": budget, "model": model_name},
    )


# M5 ----------------------------------------------------------------------------


def check_simpler_model(
    candidate_auc: float,
    simple_aucs: Mapping[str, float],
    *,
    margin: float,
    tie_verdict: str,
) -> GateResult:
    """The candidate against the best simple model on the same holdout.

    Within ``margin`` either way the two are about as good: the verdict is
    ``tie_verdict`` (warn or fail) and the reason says the simple model would do.
    """
    name, best = max(simple_aucs.items(), key=lambda item: item[1])
    gain = candidate_auc - best
    figures = ", ".join(f"{k} {_fmt(v)}" for k, v in simple_aucs.items())
    details = {
        "candidate_auc": candidate_auc,
        "simple": dict(simple_aucs),
        "gain": gain,
    }
    if gain <= -margin:
        verdict = Verdict.FAIL
        reason = (
            f"the simpler {name} is better than the candidate: holdout AUC "
            f"{_fmt(best)} against {_fmt(candidate_auc)} ({figures}); serve the simple "
            "model or fix the network"
        )
    elif gain < margin:
        verdict = Verdict(tie_verdict)
        reason = (
            f"the candidate is about as good as the simpler {name}: holdout AUC "
            f"{_fmt(candidate_auc)} against {_fmt(best)} (gain {gain:+.3f}, within "
            f"{margin}; {figures}); the network buys no measurable quality here"
        )
    else:
        verdict = Verdict.PASS
        reason = (
            f"the candidate beats the best simple model ({name}) by {gain:+.3f} AUC: "
            f"{_fmt(candidate_auc)} against {figures}"
        )
    return GateResult(
        "M5", verdict, reason, value=gain, threshold=margin, details=details
    )


# M6 ----------------------------------------------------------------------------


def check_slice_quality(
    y: np.ndarray,
    candidate: np.ndarray,
    slices: Mapping[str, np.ndarray],
    *,
    production: np.ndarray | None,
    floor: float,
    max_drop: float,
    min_rows: int,
) -> GateResult:
    """AUC in every slice above a floor and, with a production model, not much worse."""
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    skipped: list[str] = []
    for column, labels in slices.items():
        for group in sorted({str(v) for v in labels}):
            mask = np.asarray(labels).astype(str) == group
            name = f"{column}={group}"
            auc = roc_auc(y[mask], candidate[mask])
            if mask.sum() < min_rows or not math.isfinite(auc):
                skipped.append(f"{name} ({int(mask.sum())} rows)")
                continue
            row: dict[str, Any] = {"slice": name, "rows": int(mask.sum()), "auc": auc}
            if auc < floor:
                problems.append(f"{name} AUC {auc:.3f} below the floor {floor}")
            if production is not None:
                prod_auc = roc_auc(y[mask], production[mask])
                row["production_auc"] = prod_auc
                if prod_auc - auc > max_drop:
                    problems.append(
                        f"{name} AUC {auc:.3f} is {prod_auc - auc:.3f} below "
                        f"production's {prod_auc:.3f} (allowed {max_drop})"
                    )
            rows.append(row)
    details = {
        "slices": rows,
        "skipped": skipped,
        "compared_to_production": production is not None,
    }
    if not rows:
        return insufficient(
            "M6",
            f"no slice had {min_rows} rows with both classes; skipped {skipped}",
            details=details,
        )
    worst = min(rows, key=lambda r: r["auc"])
    basis = (
        f"floor {floor} and at most {max_drop} below production"
        if production is not None
        else f"floor {floor} only: no production model to compare with yet"
    )
    if problems:
        return GateResult(
            "M6",
            Verdict.FAIL,
            "; ".join(problems) + f" ({basis})",
            value=worst["auc"],
            threshold=floor,
            details=details,
        )
    return GateResult(
        "M6",
        Verdict.PASS,
        f"{len(rows)} slices pass ({basis}); weakest {worst['slice']} AUC "
        f"{worst['auc']:.3f}" + (f"; skipped {len(skipped)} small" if skipped else ""),
        value=worst["auc"],
        threshold=floor,
        details=details,
    )


# M7 ----------------------------------------------------------------------------


def true_positive_rate(y: np.ndarray, predicted: np.ndarray) -> float:
    positives = y == 1
    if positives.sum() == 0:
        return float("nan")
    return float(predicted[positives].mean())


def check_inclusion(
    y: np.ndarray,
    probabilities: np.ndarray,
    groups: Mapping[str, np.ndarray],
    proxy_aucs: Mapping[str, Mapping[str, float]],
    *,
    decision_threshold: float,
    max_gap: float,
    min_share: float,
    max_proxy_auc: float,
    proxy_verdict: str,
    min_group_positives: int = 0,
) -> GateResult:
    """Equal opportunity, representation and proxies for each protected attribute.

    ``proxy_aucs[attribute][feature]`` is how well the feature alone predicts the
    attribute. A TPR gap or an under-represented group fails; a proxy feature gets
    ``proxy_verdict`` because whether it is acceptable is a person's call. A gap is
    judged only where every group has ``min_group_positives`` churners in the
    holdout: on fewer, a true-positive rate is mostly noise, and the attribute is
    reported as lacking evidence instead of passing or failing.
    """
    if not groups:
        return insufficient(
            "M7", "the dataset declares no protected attributes to test inclusion on"
        )
    predicted = (probabilities >= decision_threshold).astype(float)
    failures: list[str] = []
    unjudged: list[str] = []
    proxies: list[str] = []
    per_attribute: dict[str, Any] = {}
    worst_gap = 0.0
    for attribute, labels in groups.items():
        labels = np.asarray(labels).astype(str)
        rates: dict[str, Any] = {}
        for group in sorted(set(labels)):
            mask = labels == group
            share = float(mask.mean())
            tpr = true_positive_rate(y[mask], predicted[mask])
            rates[group] = {"share": share, "tpr": tpr, "rows": int(mask.sum())}
            if share < min_share:
                failures.append(
                    f"{attribute}={group} is {share:.1%} of the holdout "
                    f"(under {min_share:.0%})"
                )
        tprs = [r["tpr"] for r in rates.values() if math.isfinite(r["tpr"])]
        gap = max(tprs) - min(tprs) if len(tprs) > 1 else 0.0
        positives = {g: int(y[labels == g].sum()) for g in rates}
        too_few = {g: n for g, n in positives.items() if n < min_group_positives}
        if too_few:
            unjudged.append(
                f"{attribute}: too few churners to compare true-positive rates "
                f"({', '.join(f'{g}: {n}' for g, n in too_few.items())}; at least "
                f"{min_group_positives} per group needed)"
            )
            gap = 0.0
        worst_gap = max(worst_gap, gap)
        if gap > max_gap:
            low = min(rates, key=lambda g: rates[g]["tpr"])
            failures.append(
                f"{attribute}: true-positive rate gap {gap:.3f} over {max_gap} "
                f"({low} lowest at {rates[low]['tpr']:.3f})"
            )
        found = {
            f: a for f, a in proxy_aucs.get(attribute, {}).items() if a > max_proxy_auc
        }
        proxies += [f"{f} predicts {attribute} (AUC {a:.2f})" for f, a in found.items()]
        per_attribute[attribute] = {"groups": rates, "tpr_gap": gap, "proxies": found}
    details = {"attributes": per_attribute, "decision_threshold": decision_threshold}
    if failures:
        return GateResult(
            "M7",
            Verdict.FAIL,
            "; ".join(failures + unjudged + proxies),
            value=worst_gap,
            threshold=max_gap,
            details=details,
        )
    if unjudged:
        return insufficient(
            "M7",
            "; ".join(unjudged + proxies)
            + "; a larger holdout, or a longer window, would settle it",
            value=worst_gap,
            threshold=max_gap,
            details=details,
        )
    summary = (
        f"equal-opportunity gap at most {worst_gap:.3f} (limit {max_gap}) and every "
        f"group at least {min_share:.0%} of the holdout for {', '.join(groups)}"
    )
    if proxies:
        return GateResult(
            "M7",
            Verdict(proxy_verdict),
            f"{summary}; but proxy features found: {'; '.join(proxies)}",
            value=worst_gap,
            threshold=max_gap,
            details=details,
        )
    return GateResult(
        "M7",
        Verdict.PASS,
        f"{summary}; no feature predicts a protected attribute above AUC "
        f"{max_proxy_auc}",
        value=worst_gap,
        threshold=max_gap,
        details=details,
    )
