"""The traffic simulator: pseudonymized synthetic customers, sent one per request."""

from __future__ import annotations

import dataclasses

import pytest

from tasks.config import ColumnSpec
from tasks.pseudonymize import pseudonymize_ids
from tasks.synthetic import generate_customers
from tasks.traffic import TrafficError, customer_records, simulate_customers
from tests.serving.conftest_serving import TEST_KEY
from tests.tasks.conftest_model import ModelData

pytest_plugins = ("tests.tasks.conftest_model",)


def test_simulate_customers_pseudonymizes_with_the_pipeline_key(
    model_data: ModelData,
) -> None:
    """Ids are the pipeline's pseudonyms of the generated ids; no label is sent."""
    dataset = model_data.dataset
    customers = simulate_customers(dataset, 30, 5, TEST_KEY)
    raw = generate_customers(30, 5)
    assert list(customers["customerID"]) == pseudonymize_ids(
        raw["customerID"], TEST_KEY
    )
    assert "Churn" not in customers.columns
    records = customer_records(customers)
    assert not any(r in str(records) for r in raw["customerID"])
    assert isinstance(records[0]["signup_date"], str)


def test_simulate_customers_refuses_a_dataset_it_cannot_fill(
    model_data: ModelData,
) -> None:
    """A contract column the generator lacks is named, pointing to the holdout."""
    dataset = model_data.dataset
    columns = {**dataset.contract.columns, "loyalty_tier": ColumnSpec("x", "string")}
    contract = dataclasses.replace(dataset.contract, columns=columns)
    other = dataclasses.replace(dataset, contract=contract)
    with pytest.raises(TrafficError, match=r"\['loyalty_tier'\].*holdout"):
        simulate_customers(other, 5, 1, TEST_KEY)
