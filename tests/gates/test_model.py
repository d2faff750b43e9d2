"""Model development gates M1-M7, each with the fault that must fail it."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gates.model import (
    VersionMetrics,
    check_hyperparameter_search,
    check_inclusion,
    check_metric_correlation,
    check_model_spec,
    check_simpler_model,
    check_slice_quality,
    check_staleness_curve,
    roc_auc,
    staleness_budget_days,
)
from gates.result import Verdict
from tasks.config import ModelConfig, load_model_config
from tasks.lineage import read_spec_state
from tests.tasks.conftest_model import PROJECT_ROOT


@pytest.fixture
def model_config() -> ModelConfig:
    return load_model_config(PROJECT_ROOT / "config/model.yaml")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def spec_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "config").mkdir(parents=True)
    (repo / "tasks").mkdir()
    (repo / "config" / "model.yaml").write_text("seed: 1\n")
    (repo / "tasks" / "model_spec.py").write_text("UNITS = 8\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "spec")
    return repo


# M1


def test_check_model_spec_clean_tree(spec_repo: Path) -> None:
    """A committed spec passes and names its commit."""
    result = check_model_spec(read_spec_state(spec_repo), allow_dirty=False)
    assert result.verdict is Verdict.PASS
    assert "committed at" in result.reason


def test_check_model_spec_dirty_tree_fails(spec_repo: Path) -> None:
    """Training from an edited spec is refused outside the demo."""
    (spec_repo / "tasks" / "model_spec.py").write_text("UNITS = 9\n")
    result = check_model_spec(read_spec_state(spec_repo), allow_dirty=False)
    assert result.verdict is Verdict.FAIL
    assert "tasks/model_spec.py" in result.reason


def test_check_model_spec_dirty_tree_marked_in_demo(spec_repo: Path) -> None:
    """With the demo flag a dirty tree is a warning, not a pass."""
    (spec_repo / "config" / "model.yaml").write_text("seed: 2\n")
    result = check_model_spec(read_spec_state(spec_repo), allow_dirty=True)
    assert result.verdict is Verdict.WARN
    assert "marked dirty" in result.reason


def test_check_model_spec_outside_git(tmp_path: Path) -> None:
    """Without git the commit cannot be recorded: insufficient evidence."""
    result = check_model_spec(read_spec_state(tmp_path), allow_dirty=False)
    assert result.verdict is Verdict.INSUFFICIENT


# M2


def _versions(offline: list[float], online: list[float | None]) -> list[VersionMetrics]:
    return [
        VersionMetrics(f"v2026010{i}T000000-0000000{i}", off, on)
        for i, (off, on) in enumerate(zip(offline, online, strict=True))
    ]


def test_check_metric_correlation_insufficient_versions() -> None:
    """Two versions with online metrics are not enough to judge."""
    result = check_metric_correlation(
        _versions([0.8, 0.7, 0.75], [0.78, None, 0.7]),
        min_versions=3,
        min_correlation=0.5,
    )
    assert result.verdict is Verdict.INSUFFICIENT
    assert "2 model version(s)" in result.reason


def test_check_metric_correlation_tracks() -> None:
    """Online AUC that follows offline AUC (a degraded version included) passes."""
    result = check_metric_correlation(
        _versions([0.85, 0.80, 0.62, 0.84], [0.82, 0.78, 0.60, 0.80]),
        min_versions=3,
        min_correlation=0.5,
    )
    assert result.verdict is Verdict.PASS
    assert result.value is not None and result.value > 0.9


def test_check_metric_correlation_fails_without_correlation() -> None:
    """Fabricated versions whose online AUC ignores the offline one fail."""
    result = check_metric_correlation(
        _versions([0.85, 0.80, 0.62, 0.84], [0.70, 0.80, 0.81, 0.69]),
        min_versions=3,
        min_correlation=0.5,
    )
    assert result.verdict is Verdict.FAIL
    assert "do not carry" in result.reason


# M3


def _trials(config: ModelConfig, n: int) -> list[dict[str, Any]]:
    from tasks.model_spec import sample_hyperparameters

    rng = np.random.default_rng(0)
    return [
        {
            "hyperparameters": sample_hyperparameters(config.hyperparameters, rng),
            "val_auc": 0.7 + i / 100,
        }
        for i in range(n)
    ]


def test_check_hyperparameter_search_passes(model_config: ModelConfig) -> None:
    """A search over every declared range passes with the best AUC."""
    result = check_hyperparameter_search(
        model_config, _trials(model_config, 4), evidence=None
    )
    assert result.verdict is Verdict.PASS
    assert result.value == pytest.approx(0.73)


def test_check_hyperparameter_search_missing_range(model_config: ModelConfig) -> None:
    """A hyperparameter with no range fails."""
    space = dict(model_config.hyperparameters)
    space.pop("l2")
    broken = dataclasses.replace(model_config, hyperparameters=space)
    result = check_hyperparameter_search(
        broken, _trials(model_config, 3), evidence=None
    )
    assert result.verdict is Verdict.FAIL
    assert "l2" in result.reason


def test_check_hyperparameter_search_no_search(model_config: ModelConfig) -> None:
    """No search run fails."""
    result = check_hyperparameter_search(model_config, [], evidence=None)
    assert result.verdict is Verdict.FAIL
    assert "not tuned" in result.reason


# M4


def test_staleness_budget_days_stops_at_first_drop() -> None:
    """The budget is the oldest age before quality first falls past the drop."""
    curve = [
        {"age_days": 0, "auc": 0.80},
        {"age_days": 30, "auc": 0.79},
        {"age_days": 60, "auc": 0.77},
        {"age_days": 90, "auc": 0.795},
    ]
    assert staleness_budget_days(curve, 0.02) == 30


def test_check_staleness_curve_missing_curve() -> None:
    """A table with dates but no curve fails."""
    result = check_staleness_curve([], max_drop=0.02)
    assert result.verdict is Verdict.FAIL
    assert "0 point(s)" in result.reason


def test_check_staleness_curve_no_dates() -> None:
    """No event date in the contract: insufficient evidence with the reason."""
    result = check_staleness_curve(
        None, max_drop=0.02, no_curve_reason="the ibm_telco contract has no date"
    )
    assert result.verdict is Verdict.INSUFFICIENT
    assert "no date" in result.reason


# M5


def test_check_simpler_model_worse_candidate_fails() -> None:
    """A candidate worse than logistic regression fails, numbers in the reason."""
    result = check_simpler_model(
        0.78,
        {"logistic regression": 0.85, "churn rate": 0.80},
        margin=0.005,
        tie_verdict="warn",
    )
    assert result.verdict is Verdict.FAIL
    assert "0.850 against 0.780" in result.reason


def test_check_simpler_model_tie_is_said_plainly() -> None:
    """About as good as the simple model gets the configured tie verdict."""
    result = check_simpler_model(
        0.847, {"logistic regression": 0.852}, margin=0.01, tie_verdict="warn"
    )
    assert result.verdict is Verdict.WARN
    assert "about as good" in result.reason and "0.852" in result.reason


def test_check_simpler_model_better_candidate_passes() -> None:
    """A clear gain passes."""
    result = check_simpler_model(
        0.90, {"logistic regression": 0.85}, margin=0.005, tie_verdict="fail"
    )
    assert result.verdict is Verdict.PASS


# M6


def _slice_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    n = 1200
    y = rng.integers(0, 2, n).astype(float)
    good = np.clip(y * 0.6 + rng.normal(0.2, 0.2, n), 0, 1)
    contract = np.array(["Month-to-month", "One year", "Two year"])[np.arange(n) % 3]
    return y, good, {"Contract": contract}


def test_check_slice_quality_passes_floor_only() -> None:
    """Good everywhere passes; without production the reason says floor only."""
    y, good, slices = _slice_data()
    result = check_slice_quality(
        y, good, slices, production=None, floor=0.6, max_drop=0.05, min_rows=50
    )
    assert result.verdict is Verdict.PASS
    assert "floor 0.6 only" in result.reason


def test_check_slice_quality_one_slice_degraded() -> None:
    """Noise in one slice's predictions fails that slice by name."""
    y, good, slices = _slice_data()
    degraded = good.copy()
    mask = slices["Contract"] == "Two year"
    degraded[mask] = np.random.default_rng(1).random(mask.sum())
    result = check_slice_quality(
        y, degraded, slices, production=None, floor=0.6, max_drop=0.05, min_rows=50
    )
    assert result.verdict is Verdict.FAIL
    assert "Contract=Two year" in result.reason


def test_check_slice_quality_drop_against_production() -> None:
    """Above the floor but well below production in one slice fails."""
    y, good, slices = _slice_data()
    weaker = good.copy()
    mask = slices["Contract"] == "One year"
    rng = np.random.default_rng(2)
    weaker[mask] = 0.5 * weaker[mask] + 0.5 * rng.random(mask.sum())
    assert roc_auc(y[mask], weaker[mask]) > 0.6
    result = check_slice_quality(
        y, weaker, slices, production=good, floor=0.6, max_drop=0.02, min_rows=50
    )
    assert result.verdict is Verdict.FAIL
    assert "below production" in result.reason


# M7


def _inclusion(biased: bool) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    n = 2000
    y = rng.integers(0, 2, n).astype(float)
    gender = np.where(rng.random(n) < 0.5, "Female", "Male")
    p = np.clip(y * 0.5 + rng.normal(0.25, 0.15, n), 0, 1)
    if biased:
        p = np.where(gender == "Female", p * 0.6, p)
    return {"y": y, "p": p, "groups": {"gender": gender}}


_M7 = {
    "decision_threshold": 0.5,
    "max_gap": 0.1,
    "min_share": 0.05,
    "max_proxy_auc": 0.8,
    "proxy_verdict": "warn",
}


def test_check_inclusion_fair_model_passes() -> None:
    """Equal true-positive rates and no proxy pass."""
    d = _inclusion(biased=False)
    result = check_inclusion(
        d["y"], d["p"], d["groups"], {"gender": {"tenure": 0.52}}, **_M7
    )
    assert result.verdict is Verdict.PASS


def test_check_inclusion_biased_model_fails() -> None:
    """A model that under-scores one gender fails on the TPR gap."""
    d = _inclusion(biased=True)
    result = check_inclusion(d["y"], d["p"], d["groups"], {}, **_M7)
    assert result.verdict is Verdict.FAIL
    assert "gender: true-positive rate gap" in result.reason
    assert "Female lowest" in result.reason


def test_check_inclusion_proxy_warns() -> None:
    """A feature that predicts the attribute is reported for review."""
    d = _inclusion(biased=False)
    result = check_inclusion(
        d["y"], d["p"], d["groups"], {"gender": {"Partner": 0.93}}, **_M7
    )
    assert result.verdict is Verdict.WARN
    assert "Partner predicts gender (AUC 0.93)" in result.reason


def test_check_inclusion_under_represented_group() -> None:
    """A group under the minimum share fails."""
    d = _inclusion(biased=False)
    groups = {"SeniorCitizen": np.where(np.arange(len(d["y"])) < 40, "1", "0")}
    result = check_inclusion(d["y"], d["p"], groups, {}, **_M7)
    assert result.verdict is Verdict.FAIL
    assert "SeniorCitizen=1 is 2.0% of the holdout" in result.reason


def test_check_inclusion_small_group_is_insufficient_evidence() -> None:
    """A gap between groups with a handful of churners is not judged either way."""
    d = _inclusion(biased=True)
    small = {
        "y": d["y"][:60],
        "p": d["p"][:60],
        "groups": {"gender": d["groups"]["gender"][:60]},
    }
    result = check_inclusion(
        small["y"], small["p"], small["groups"], {}, **_M7, min_group_positives=50
    )
    assert result.verdict is Verdict.INSUFFICIENT
    assert "too few churners to compare true-positive rates" in result.reason


@pytest.mark.slow
def test_check_simpler_model_on_telco_says_tie(telco_csv: Path) -> None:
    """On the real Telco table the network is no better than logistic regression."""
    import pandas as pd

    from tasks.baselines import fit_logistic_regression
    from tasks.config import load_dataset
    from tasks.features import encode_label, fit_features
    from tasks.model_spec import central_hyperparameters, prepare_keras
    from tasks.train import predict_probabilities, train_churn_model
    from tests.tasks.conftest_model import split_customers

    prepare_keras(1)
    dataset = load_dataset(PROJECT_ROOT / "config/datasets/telco.yaml")
    config = load_model_config(PROJECT_ROOT / "config/model.yaml")
    frame = pd.read_csv(telco_csv)
    frame["TotalCharges"] = pd.to_numeric(
        frame["TotalCharges"].str.strip(), errors="coerce"
    )
    parts = split_customers(frame, seed=0)
    transform = fit_features(parts["train"], dataset)
    x = {k: transform.transform(v) for k, v in parts.items()}
    y = {k: encode_label(v, dataset.contract.label) for k, v in parts.items()}
    network = train_churn_model(
        x["train"],
        y["train"],
        x["validation"],
        y["validation"],
        central_hyperparameters(config.hyperparameters),
        seed=42,
        max_epochs=40,
        patience=5,
    )
    logistic = fit_logistic_regression(x["train"], y["train"], 42)
    result = check_simpler_model(
        roc_auc(y["holdout"], predict_probabilities(network.model, x["holdout"])),
        {
            "logistic regression": roc_auc(
                y["holdout"], logistic.predict_proba(x["holdout"])[:, 1]
            )
        },
        margin=0.01,
        tie_verdict="warn",
    )
    assert result.verdict is Verdict.WARN, result.reason
    assert "about as good as the simpler logistic regression" in result.reason
