"""Gates D1 to D7: each passes on good evidence and fails on the fault it exists for."""

from __future__ import annotations

import copy
import datetime as dt

import numpy as np
import pytest

from gates import data as gates
from tasks.config import parse_dataset
from tasks.features import check_known_answers, encode_label, fit_features
from tests.tasks.conftest_data import small_customers, synthetic_dataset_dict

STRONG = ["tenure", "Contract", "MonthlyCharges", "InternetService"]


def _dataset(inputs, extra_features=None, extra_columns=None):
    data = synthetic_dataset_dict()
    data["model_inputs"] = list(inputs)
    data["features"].update(copy.deepcopy(extra_features or {}))
    data["contract"]["columns"].update(copy.deepcopy(extra_columns or {}))
    return parse_dataset(data, where="test")


@pytest.fixture(scope="module")
def frames():
    frame = small_customers(4000, seed=11)
    rng = np.random.default_rng(0)
    frame["noise"] = rng.normal(size=len(frame))
    return frame.iloc[:2000].reset_index(drop=True), frame.iloc[2000:].reset_index(
        drop=True
    )


def _fit_predict(train, dataset):
    from sklearn.linear_model import LogisticRegression

    transform = fit_features(train, dataset)
    labels = encode_label(train, dataset.contract.label)
    model = LogisticRegression(max_iter=500).fit(transform.transform(train), labels)
    return transform, lambda rows: model.predict_proba(transform.transform(rows))[:, 1]


def _importance(frames, dataset):
    train, validation = frames
    transform, predict = _fit_predict(train, dataset)
    labels = encode_label(validation, dataset.contract.label)
    baseline, importances = gates.measure_permutation_importance(
        predict, validation, labels, transform.inputs, repeats=3, seed=1
    )
    return transform, baseline, importances


NOISE = {
    "noise": {"kind": "numeric", "owner": "t", "source": "t", "declared": "2026-01-01"}
}
NOISE_COLUMN = {"noise": {"type": "float"}}


def test_d2_useful_features_pass(frames):
    """Features that drive churn each cost AUC when shuffled."""
    _, baseline, importances = _importance(frames, _dataset(STRONG))
    result = gates.check_feature_importance(
        importances, baseline_auc=baseline, min_importance=0.0005
    )
    assert result.verdict == "pass", result.reason


def test_d2_pure_noise_feature_fails(frames):
    """A pure-noise feature added to the config fails D2 by name."""
    dataset = _dataset([*STRONG, "noise"], NOISE, NOISE_COLUMN)
    _, baseline, importances = _importance(frames, dataset)
    result = gates.check_feature_importance(
        importances, baseline_auc=baseline, min_importance=0.0005
    )
    assert result.verdict == "fail"
    assert result.details["not_beneficial"] == ["noise"]


def _cost_result(frames, dataset):
    transform, _, importances = _importance(frames, dataset)
    costs = gates.measure_feature_costs(transform, frames[1], dataset)
    return gates.check_feature_cost(
        costs,
        {i.feature: i.mean for i in importances},
        max_width_share=0.5,
        max_cost_per_importance=20000,
        width_cost=1.0,
        latency_cost=1.0,
    )


def test_d3_cheap_useful_features_pass(frames):
    """Small, useful features are worth their cost."""
    result = _cost_result(frames, _dataset(STRONG))
    assert result.verdict == "pass", result.reason
    assert result.details["features"]["Contract"]["width"] == 4


def test_d3_huge_one_hot_id_feature_fails(frames):
    """A one-hot customer id takes most of the model's width and fails D3."""
    id_feature = {
        "customerID": {
            "kind": "categorical",
            "owner": "t",
            "source": "t",
            "declared": "2026-01-01",
        }
    }
    result = _cost_result(frames, _dataset([*STRONG, "customerID"], id_feature))
    assert result.verdict == "fail"
    assert "customerID takes" in result.reason


def test_d3_costly_feature_for_its_worth_fails():
    """A declared acquisition cost far above a small importance fails."""
    costs = [
        gates.FeatureCost("a", acquisition=50.0, width=1, latency_us_per_row=0.1),
        gates.FeatureCost("b", acquisition=1.0, width=1, latency_us_per_row=0.1),
    ]
    result = gates.check_feature_cost(
        costs,
        {"a": 0.001, "b": 0.05},
        max_width_share=0.9,
        max_cost_per_importance=20000,
        width_cost=1.0,
        latency_cost=1.0,
    )
    assert result.verdict == "fail" and "a costs 51.1 units" in result.reason


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "deprecated"}, "Contract is deprecated"),
        ({"status": "forbidden"}, "Contract is forbidden"),
        ({"pii": True}, "Contract is personal data"),
        ({"protected": True}, "Contract is a protected attribute"),
    ],
)
def test_d4_disallowed_feature_fails(change, message):
    """Deprecated, forbidden, PII or protected inputs fail D4 by name."""
    data = synthetic_dataset_dict()
    data["features"]["Contract"].update(change)
    result = gates.check_feature_registry(parse_dataset(data))
    assert result.verdict == "fail" and message in result.reason


def test_d4_registered_active_inputs_pass():
    """The committed synthetic config passes D4."""
    result = gates.check_feature_registry(parse_dataset(synthetic_dataset_dict()))
    assert result.verdict == "pass", result.reason


def test_d4_unregistered_input_fails():
    """A model input missing from the registry fails D4."""
    import dataclasses

    dataset = parse_dataset(synthetic_dataset_dict())
    dataset = dataclasses.replace(dataset, model_inputs=(*dataset.model_inputs, "x"))
    result = gates.check_feature_registry(dataset)
    assert result.verdict == "fail" and "x is not registered" in result.reason


def test_d5_findings_and_unmasked_columns_fail():
    """Raw ids in an artifact, or an unmasked column, fail D5; a clean scan passes."""
    assert gates.check_privacy({}, scanned=5, identifiers=10).verdict == "pass"
    leaked = gates.check_privacy(
        {"runs/a/validation/result.json": 2}, scanned=5, identifiers=10
    )
    assert leaked.verdict == "fail" and "result.json (2)" in leaked.reason
    unmasked = gates.check_privacy(
        {}, scanned=5, identifiers=10, unmasked_columns=["customerID"]
    )
    assert unmasked.verdict == "fail" and "left unmasked" in unmasked.reason
    assert gates.check_privacy({}, scanned=5, identifiers=0).verdict == (
        "insufficient evidence"
    )


def test_d5_incomplete_deletion_fails():
    """A deletion that leaves rows behind fails D5."""
    assert gates.check_deletion(2, 4, 0).verdict == "pass"
    assert gates.check_deletion(2, 3, 1).verdict == "fail"


def _lead_dataset(declared: str):
    data = synthetic_dataset_dict()
    data["model_inputs"] = ["tenure", "Contract"]
    for name in data["model_inputs"]:
        data["features"][name]["declared"] = declared
    return parse_dataset(data)


def test_d6_lead_time_within_budget_passes():
    """Features reaching production within the budget pass."""
    dataset = _lead_dataset("2026-11-01")
    leads = gates.measure_feature_lead_times(
        dataset,
        {"tenure": dt.date(2026, 11, 10)},
        today=dt.date(2026, 11, 12),
        tracking_since=dt.date(2026, 1, 1),
    )
    assert {lead.feature: lead.days for lead in leads} == {"tenure": 9, "Contract": 11}
    result = gates.check_feature_lead_time(
        leads, budget_days=14, flowed={"Contract": True}
    )
    assert result.verdict == "pass", result.reason


def test_d6_lead_time_over_budget_fails():
    """A feature declared 30 days ago and still not in production fails D6."""
    dataset = _lead_dataset("2026-11-01")
    leads = gates.measure_feature_lead_times(
        dataset, {}, today=dt.date(2026, 12, 1), tracking_since=dt.date(2026, 1, 1)
    )
    result = gates.check_feature_lead_time(leads, budget_days=14, flowed={})
    assert result.verdict == "fail"
    assert "tenure (30 days)" in result.reason and result.value == 30


def test_d6_clock_starts_when_tracking_started():
    """A feature declared before the installation existed counts from its first run."""
    leads = gates.measure_feature_lead_times(
        _lead_dataset("2025-01-01"),
        {},
        today=dt.date(2026, 12, 1),
        tracking_since=dt.date(2026, 11, 28),
    )
    assert {lead.days for lead in leads} == {3}


def test_d6_feature_that_did_not_flow_fails():
    """A new feature that never reached the model inputs in the sample run fails."""
    result = gates.check_feature_lead_time([], budget_days=14, flowed={"x": False})
    assert result.verdict == "fail" and "did not reach" in result.reason


def test_d7_known_answers_pass_and_untested_kind_fails():
    """Every kind with a true known answer passes; a kind without one fails D7."""
    assert (
        gates.check_feature_code(
            check_known_answers(["numeric", "categorical"])
        ).verdict
        == "pass"
    )
    result = gates.check_feature_code(check_known_answers(["numeric", "hashed"]))
    assert result.verdict == "fail" and "hashed" in result.reason


def test_d1_contract_failure_and_expectations():
    """D1 fails when ingestion refused the source or an expectation fails."""
    refused = gates.check_contract_failure("type", "tenure", "tenure is text")
    assert refused.verdict == "fail" and refused.details["column"] == "tenure"
    assert gates.check_data_expectations(True, 10, [], "ok").verdict == "pass"
    failed = gates.check_data_expectations(False, 10, [{"column": "x"}], "x fails")
    assert failed.verdict == "fail" and failed.value == 1.0
    assert gates.check_data_expectations(True, 0, [], "").verdict == "fail"
