"""The GX suite from training statistics, and validation of batches against it."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from gates.result import GateFailed
from tasks.config import load_dataset
from tasks.data_steps import (
    ingest_customers_step,
    pseudonymize_customers_step,
    validate_customers_step,
)
from tasks.ingest import SourceTable, check_customers_contract
from tasks.pseudonymize import pseudonymize_customers
from tasks.validation import (
    build_expectation_suite,
    render_validation_html,
    validate_customers,
)
from tests.tasks.conftest_data import KEY, make_context, results_of, small_customers

IDS = {"customerID"}


@pytest.fixture(scope="module")
def dataset():
    return load_dataset("config/datasets/synthetic.yaml")


@pytest.fixture(scope="module")
def batch(dataset):
    """300 synthetic customers, typed by the contract and pseudonymized."""
    table = SourceTable(small_customers(300, seed=4), "synthetic", typed=True)
    frame = check_customers_contract(table, dataset.contract)
    return pseudonymize_customers(frame, dataset.contract, KEY)


@pytest.fixture(scope="module")
def suite(batch, dataset):
    return build_expectation_suite(batch, dataset, range_tolerance=0.1)


def _failed(report):
    return {(f.expectation, f.column) for f in report.failures}


def test_build_suite_mixes_contract_and_training_rules(suite):
    """Declared sets and bounds come from the contract, open bounds from training."""
    by_key = {(e["type"], e["kwargs"].get("column")): e for e in suite["expectations"]}
    tenure = by_key[("expect_column_values_to_be_between", "tenure")]
    assert (tenure["kwargs"]["min_value"], tenure["kwargs"]["max_value"]) == (0, 72)
    total = by_key[("expect_column_values_to_be_between", "TotalCharges")]
    assert total["meta"]["source"] == "contract+training"
    assert total["kwargs"]["min_value"] == 0 and total["kwargs"]["max_value"] > 0
    assert ("expect_column_values_to_be_unique", "customerID") in by_key
    assert json.loads(json.dumps(suite)) == suite


def test_validate_customers_good_batch_passes(batch, suite):
    """The training batch holds every expectation built from it."""
    report = validate_customers(batch, suite, identifier_columns=IDS)
    assert report.success, report.summary()
    assert report.evaluated == len(suite["expectations"])


def test_validate_customers_changed_type_fails(batch, suite):
    """A numeric column that arrives as text fails its type expectation."""
    changed = batch.assign(tenure=batch["tenure"].astype("string"))
    report = validate_customers(changed, suite, identifier_columns=IDS)
    assert ("expect_column_values_to_be_in_type_list", "tenure") in _failed(report)


def test_validate_customers_unseen_category_fails(batch, suite):
    """A category outside the declared values fails, and the value is shown."""
    changed = batch.copy()
    changed.loc[changed.index[:3], "Contract"] = "Three year"
    report = validate_customers(changed, suite, identifier_columns=IDS)
    failure = next(f for f in report.failures if f.column == "Contract")
    assert failure.examples == ["Three year"]
    assert "3 unexpected" in failure.observed


def test_validate_customers_out_of_range_fails(batch, suite):
    """Values outside the declared bounds fail."""
    changed = batch.copy()
    changed.loc[changed.index[0], "MonthlyCharges"] = 5000.0
    report = validate_customers(changed, suite, identifier_columns=IDS)
    assert ("expect_column_values_to_be_between", "MonthlyCharges") in _failed(report)


def test_validate_customers_result_keeps_no_identifier_values(batch, suite):
    """Duplicate ids fail uniqueness, but no id value is stored or rendered."""
    changed = batch.copy()
    duplicate = str(changed["customerID"].iloc[0])
    changed.loc[changed.index[1], "customerID"] = duplicate
    report = validate_customers(changed, suite, identifier_columns=IDS)
    assert ("expect_column_values_to_be_unique", "customerID") in _failed(report)
    assert duplicate not in json.dumps(report.result)
    assert duplicate not in render_validation_html(report, title="t")


def test_validate_customers_partial_batch_skips_absent_columns(batch, suite):
    """Serving inputs without the label validate when asked to skip absent columns."""
    inputs = batch.drop(columns=["Churn"])
    report = validate_customers(
        inputs, suite, identifier_columns=IDS, require_all_columns=False
    )
    assert report.success, report.summary()


def test_render_validation_html_marks_failures(batch, suite):
    """The report names each failed expectation."""
    changed = batch.assign(tenure=batch["tenure"] + 500)
    report = validate_customers(changed, suite, identifier_columns=IDS)
    page = render_validation_html(report, title="run x")
    assert "FAILED" in page and "<tr class='fail'>" in page and "tenure" in page


def test_validate_step_records_d1_with_data_docs(tmp_path):
    """The step stores suite, result and Data Docs, and links them from D1."""
    ctx = make_context(tmp_path, params={"source": "synthetic://400?seed=2"})
    masked = pseudonymize_customers_step(ctx, ingest_customers_step(ctx), key=KEY)
    out = validate_customers_step(ctx, masked)
    row = results_of(ctx, "D1")[-1]
    assert row.verdict == "pass" and row.evidence == out["data_docs"]
    assert ctx.store.exists(ctx.key("validation", "suite.json"))
    assert ctx.store.exists(ctx.key("validation", "result.json"))


def test_validate_step_with_stored_suite_fails_drifted_batch(tmp_path):
    """A batch outside the model's stored suite fails D1 and stops the run."""
    ctx = make_context(tmp_path, params={"source": "synthetic://400?seed=2"})
    masked = pseudonymize_customers_step(ctx, ingest_customers_step(ctx), key=KEY)
    first = validate_customers_step(ctx, masked)
    frame = pd.read_parquet(ctx.store.uri(masked["snapshot"]).removeprefix("file://"))
    frame.loc[frame.index[:5], "MonthlyCharges"] = -1.0
    bad = ctx.key("data", "bad.parquet")
    frame.to_parquet(ctx.store.uri(bad).removeprefix("file://"))
    with pytest.raises(GateFailed, match="MonthlyCharges"):
        validate_customers_step(ctx, {"snapshot": bad}, suite_key=first["suite"])
    assert results_of(ctx, "D1")[-1].verdict == "fail"
