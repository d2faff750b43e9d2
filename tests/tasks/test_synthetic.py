"""The synthetic generator: Telco schema, determinism, sizes and the known mechanism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import load_dataset
from tasks.synthetic import (
    BLOCK_ROWS,
    COLUMNS,
    generate_customers,
    label_arrival_dates,
    write_customers_parquet,
)


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return generate_customers(5_000, seed=11)


def test_generate_customers_matches_the_dataset_contract(
    customers: pd.DataFrame,
) -> None:
    """Every column and value set the synthetic contract declares is honoured."""
    contract = load_dataset("config/datasets/synthetic.yaml").contract
    assert list(customers.columns) == list(COLUMNS)
    assert set(contract.columns) == set(customers.columns)
    for name, spec in contract.columns.items():
        column = customers[name]
        if spec.values is not None:
            assert set(column.dropna().unique()) <= set(spec.values), name
        if spec.min is not None:
            assert column.min() >= spec.min, name
        if spec.max is not None:
            assert column.max() <= spec.max, name
        if not spec.nullable:
            assert column.notna().all(), name
    assert customers["customerID"].is_unique


def test_generate_customers_follows_telco_rules(customers: pd.DataFrame) -> None:
    """Dependent columns agree, as they do in the IBM table."""
    no_internet = customers["InternetService"] == "No"
    assert (customers.loc[no_internet, "TechSupport"] == "No internet service").all()
    no_phone = customers["PhoneService"] == "No"
    assert (customers.loc[no_phone, "MultipleLines"] == "No phone service").all()
    new = customers["tenure"] == 0
    assert customers.loc[new, "TotalCharges"].isna().all()
    assert (customers["signup_date"] <= customers["event_date"]).all()


def test_generate_customers_is_deterministic_for_a_seed() -> None:
    """The same seed gives the same customers; another seed does not."""
    first = generate_customers(2_000, seed=3)
    pd.testing.assert_frame_equal(first, generate_customers(2_000, seed=3))
    assert not first["Churn"].equals(generate_customers(2_000, seed=4)["Churn"])


def test_generate_customers_prefix_does_not_depend_on_size() -> None:
    """Asking for more rows extends the table; the first rows stay the same."""
    small = generate_customers(1_000, seed=5)
    large = generate_customers(BLOCK_ROWS + 10, seed=5)
    pd.testing.assert_frame_equal(small, large.iloc[:1_000])
    assert large["customerID"].is_unique


@pytest.mark.parametrize("rows", [0, 10_000_001])
def test_generate_customers_refuses_sizes_out_of_range(rows: int) -> None:
    """Sizes outside 1 to 10 million are refused with the allowed range."""
    with pytest.raises(ValueError, match="between 1 and 10,000,000"):
        generate_customers(rows, seed=1)


def test_write_customers_parquet_equals_in_memory(tmp_path: Path) -> None:
    """Chunked Parquet output holds exactly what the in-memory generator makes."""
    path = write_customers_parquet(tmp_path / "c.parquet", BLOCK_ROWS + 7, seed=2)
    written = pd.read_parquet(path)
    expected = generate_customers(BLOCK_ROWS + 7, seed=2)
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)
    assert not list(tmp_path.glob(".*partial"))


def test_churn_mechanism_is_visible_in_the_data(customers: pd.DataFrame) -> None:
    """The documented drivers move the churn rate the documented way."""
    churn = customers["Churn"] == "Yes"
    by_contract = churn.groupby(customers["Contract"]).mean()
    assert by_contract["Month-to-month"] > by_contract["One year"]
    assert by_contract["One year"] > by_contract["Two year"]
    senior_echeck = (customers["SeniorCitizen"] == 1) & (
        customers["PaymentMethod"] == "Electronic check"
    )
    assert churn[senior_echeck].mean() > churn[~senior_echeck].mean() + 0.1


def test_drift_moves_the_newer_half_only() -> None:
    """With drift on, late customers pay more and use more fiber; early ones do not."""
    base = generate_customers(20_000, seed=8)
    drifted = generate_customers(20_000, seed=8, drift=True)
    middle = (
        base["event_date"].min()
        + (base["event_date"].max() - base["event_date"].min()) / 2
    )
    early, late = base["event_date"] < middle, base["event_date"] >= middle
    assert np.isclose(
        base.loc[early, "MonthlyCharges"].mean(),
        drifted.loc[early, "MonthlyCharges"].mean(),
    )
    gap = (
        drifted.loc[late, "MonthlyCharges"].mean()
        - base.loc[late, "MonthlyCharges"].mean()
    )
    assert gap > 5


def test_label_arrival_dates_add_the_delay(customers: pd.DataFrame) -> None:
    """Labels become known a fixed delay after the event."""
    arrival = label_arrival_dates(customers, 30)
    assert ((arrival - customers["event_date"]).dt.days == 30).all()


def test_generate_customers_ids_differ_between_seeds() -> None:
    """Customers drawn with another seed are other customers, not the same ids."""
    first = set(generate_customers(2_000, seed=1)["customerID"])
    second = set(generate_customers(2_000, seed=2)["customerID"])
    assert not first & second


def test_write_customers_parquet_leaves_nothing_behind_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails half way leaves neither the target nor a partial file."""
    from tasks import synthetic

    real_block = synthetic._block
    calls = []

    def failing_block(*args: object, **kwargs: object) -> pd.DataFrame:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_block(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(synthetic, "_block", failing_block)
    with pytest.raises(OSError, match="disk full"):
        write_customers_parquet(tmp_path / "c.parquet", BLOCK_ROWS + 5, seed=1)
    assert list(tmp_path.iterdir()) == []
