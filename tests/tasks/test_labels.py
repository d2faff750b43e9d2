"""Late labels and the simulated stretch of live traffic that writes them."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from serving.predlog import read_prediction_log
from tasks.labels import build_labels, read_arrived_labels, write_labels
from tasks.pseudonymize import pseudonymize_customers
from tasks.storage import FileStore
from tasks.synthetic import generate_customers
from tests.serving.conftest_serving import TEST_KEY
from tests.tasks.conftest_model import ModelData
from tests.tasks.conftest_monitoring import TODAY, World

pytest_plugins = ("tests.tasks.conftest_monitoring",)


def test_labels_arrive_after_the_delay_keyed_by_pseudonym(
    model_data: ModelData, tmp_path: object
) -> None:
    """A label is stored under its arrival date, keyed by pseudonym, not raw id."""
    store = FileStore(str(tmp_path))
    raw = generate_customers(20, 3, start=dt.date(2026, 11, 1), span_days=2)
    customers = pseudonymize_customers(raw, model_data.dataset.contract, TEST_KEY)
    keys = write_labels(store, build_labels(customers, model_data.dataset, 3))

    assert sorted(k.split("/")[1] for k in keys) == ["2026-11-04", "2026-11-05"]
    assert read_arrived_labels(store, until=dt.date(2026, 11, 3)).empty
    first = read_arrived_labels(store, until=dt.date(2026, 11, 4))
    assert set(first["event_date"]) == {"2026-11-01"}
    every = read_arrived_labels(store, until=dt.date(2026, 11, 5))
    assert len(every) == 20
    assert not set(raw["customerID"]) & set(every["customer_id"])
    assert write_labels(store, build_labels(customers, model_data.dataset, 3)) == keys


def test_simulate_live_traffic_logs_live_rows_per_day_with_labels(
    monitored_world: World,
) -> None:
    """Each simulated day lands in its own log folder, tagged live, with a feature
    hash; labels of the last days have not arrived yet."""
    store = monitored_world.store
    traffic = monitored_world.traffic
    assert traffic["requests"] == 150 and traffic["errors"] == 0
    log = read_prediction_log(store)
    days = sorted(log["at"].dt.date.astype(str).unique())
    assert days == [(TODAY - dt.timedelta(days=n)).isoformat() for n in range(5, 0, -1)]
    assert set(log["source"]) == {"live"} and log["feature_hash"].notna().all()
    arrived = read_arrived_labels(store, until=TODAY)
    assert len(arrived) == 90  # events 5, 4 and 3 days ago, with a 3-day delay
    joined = log.merge(arrived, on="customer_id")
    assert len(joined) >= 90 and pd.api.types.is_string_dtype(joined["label"])
