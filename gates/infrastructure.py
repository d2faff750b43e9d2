"""ML infrastructure gates for the model (I1, I2, I4, I5).

As in :mod:`gates.model`, the steps measure and these functions judge, so each
verdict can be tested on numbers made by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gates.result import GateResult, Verdict, insufficient


@dataclass(frozen=True)
class SpecCheck:
    """One unit test of the model spec run before the full training."""

    name: str
    passed: bool
    value: float
    detail: str


def check_model_spec_tests(checks: Sequence[SpecCheck]) -> GateResult:
    """I2: every unit test of the model spec passed."""
    details = {"checks": [vars(c) for c in checks]}
    if not checks:
        return GateResult(
            "I2", Verdict.FAIL, "no unit test of the model spec ran", details=details
        )
    failed = [c for c in checks if not c.passed]
    if failed:
        return GateResult(
            "I2",
            Verdict.FAIL,
            "the model spec failed its unit tests: "
            + "; ".join(f"{c.name}: {c.detail}" for c in failed),
            value=float(len(failed)),
            threshold=0.0,
            details=details,
        )
    return GateResult(
        "I2",
        Verdict.PASS,
        f"all {len(checks)} unit tests of the model spec passed: "
        + ", ".join(c.name for c in checks),
        value=0.0,
        threshold=0.0,
        details=details,
    )


def check_reproducibility(
    first: np.ndarray, second: np.ndarray, *, max_diff: float, seed: int | None
) -> GateResult:
    """I1: two trainings on the same data and seed predict the same."""
    if first.shape != second.shape:
        return GateResult(
            "I1",
            Verdict.FAIL,
            f"the two trainings predicted {first.shape} and {second.shape} values",
        )
    diff = float(np.max(np.abs(first - second))) if len(first) else 0.0
    details = {
        "rows": len(first),
        "max_abs_diff": diff,
        "mean_abs_diff": float(np.mean(np.abs(first - second))) if len(first) else 0.0,
        "seed": seed,
    }
    if not math.isfinite(diff) or diff > max_diff:
        return GateResult(
            "I1",
            Verdict.FAIL,
            f"two trainings with seed {seed} on the same rows differ by up to "
            f"{diff:.3g} in predicted probability (allowed {max_diff}); some source "
            "of randomness is not seeded",
            value=diff,
            threshold=max_diff,
            details=details,
        )
    return GateResult(
        "I1",
        Verdict.PASS,
        f"a second training with seed {seed} reproduces the candidate's "
        f"{len(first)} holdout predictions within {diff:.3g} (allowed {max_diff})",
        value=diff,
        threshold=max_diff,
        details=details,
    )


@dataclass(frozen=True)
class KnownAnswer:
    """A pair of hand-made customers whose churn order is obvious."""

    name: str
    higher: float
    lower: float

    @property
    def passed(self) -> bool:
        return self.higher > self.lower


def check_candidate_quality(
    candidate: Mapping[str, float],
    production: Mapping[str, float] | None,
    known_answers: Sequence[KnownAnswer],
    *,
    min_auc: float,
    max_auc_drop: float,
    max_log_loss_rise: float,
    override: Mapping[str, str] | None = None,
) -> GateResult:
    """I4: the candidate against a floor, production and known answers.

    ``candidate`` and ``production`` hold ``auc`` and ``log_loss`` on the same fresh
    holdout. ``override`` ({"by": who, "reason": why}) lets a person ship a failing
    candidate: the result becomes a warning that names them and keeps every failed
    metric in its reason.
    """
    reasons: dict[str, str] = {}
    failed: list[str] = []
    auc = candidate["auc"]
    ok = auc >= min_auc
    reasons["auc_floor"] = f"AUC {auc:.3f} {'>=' if ok else '<'} floor {min_auc}"
    if not ok:
        failed.append("auc_floor")
    if production is None:
        reasons["production"] = "no production model yet: floor and known answers only"
    else:
        drop = production["auc"] - auc
        ok = drop <= max_auc_drop
        reasons["auc_drop"] = (
            f"AUC {auc:.3f} vs production {production['auc']:.3f}: drop {drop:+.3f} "
            f"({'within' if ok else 'over'} {max_auc_drop})"
        )
        if not ok:
            failed.append("auc_drop")
        rise = candidate["log_loss"] - production["log_loss"]
        ok = rise <= max_log_loss_rise
        reasons["log_loss_rise"] = (
            f"log loss {candidate['log_loss']:.4f} vs production "
            f"{production['log_loss']:.4f}: {rise:+.4f} "
            f"({'within' if ok else 'over'} {max_log_loss_rise})"
        )
        if not ok:
            failed.append("log_loss_rise")
    for answer in known_answers:
        key = f"known_answer:{answer.name}"
        reasons[key] = (
            f"{answer.name}: {answer.higher:.3f} "
            f"{'>' if answer.passed else 'not >'} {answer.lower:.3f}"
        )
        if not answer.passed:
            failed.append(key)
    details: dict[str, Any] = {
        "candidate": dict(candidate),
        "production": dict(production) if production else None,
        "reasons": reasons,
        "failed": failed,
        "known_answers": [vars(a) for a in known_answers],
    }
    summary = "; ".join(reasons[k] for k in (failed or list(reasons)))
    if not failed:
        return GateResult(
            "I4",
            Verdict.PASS,
            f"candidate validated: {summary}",
            value=auc,
            threshold=min_auc,
            details=details,
        )
    if (
        override
        and override.get("by", "").strip()
        and override.get("reason", "").strip()
    ):
        details["override"] = dict(override)
        return GateResult(
            "I4",
            Verdict.WARN,
            f"manual override by {override['by']} ({override['reason']}) of failed "
            f"checks: {summary}",
            value=auc,
            threshold=min_auc,
            details=details,
            recorded_by=override["by"],
        )
    return GateResult(
        "I4",
        Verdict.FAIL,
        f"candidate rejected: {summary}",
        value=auc,
        threshold=min_auc,
        details=details,
    )


def check_prediction_trace(
    trace: Mapping[str, Any] | None, *, max_error: float, evidence: str | None = None
) -> GateResult:
    """I5: a stored trace whose attributions add up and whose output is the model's."""
    if trace is None:
        return GateResult(
            "I5",
            Verdict.FAIL,
            "no trace of a prediction could be produced",
            evidence=evidence,
        )
    if not trace.get("layers"):
        return insufficient("I5", "the trace holds no layer outputs", evidence=evidence)
    error = float(trace["completeness_error"])
    mismatch = float(trace["output_mismatch"])
    problems = []
    if not math.isfinite(error) or error > max_error:
        problems.append(
            f"attributions sum to {trace['attribution_sum']:.5f} but the logit moved "
            f"{trace['logit_delta']:.5f} from the baseline (error {error:.3g} over "
            f"{max_error})"
        )
    if not math.isfinite(mismatch) or mismatch > max_error:
        problems.append(
            f"the layer-by-layer output differs from the model's prediction by "
            f"{mismatch:.3g}"
        )
    details = {k: trace[k] for k in ("completeness_error", "output_mismatch", "steps")}
    if problems:
        return GateResult(
            "I5",
            Verdict.FAIL,
            "untraceable prediction: " + "; ".join(problems),
            value=error,
            threshold=max_error,
            evidence=evidence,
            details=details,
        )
    top = ", ".join(f"{a['feature']} {a['attribution']:+.3f}" for a in trace["top"][:3])
    return GateResult(
        "I5",
        Verdict.PASS,
        f"one prediction traced through {len(trace['layers'])} layers; integrated "
        f"gradients add up to the logit within {error:.2g} (limit {max_error}); "
        f"largest: {top}",
        value=error,
        threshold=max_error,
        evidence=evidence,
        details=details,
    )
