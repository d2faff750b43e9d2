"""The prediction service over real HTTP: routing, reload, failed loads, the log."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pandas as pd
import pytest

from serving.predlog import read_prediction_log
from serving.router import canary_position, load_served_model
from tasks.registry import load_model_version, version_key
from tasks.traffic import customer_records
from tests.serving.conftest_serving import (
    TEST_SETTINGS,
    Registry,
    running_service,
)

pytest_plugins = ("tests.serving.conftest_serving",)


def test_predict_serves_production_with_version_and_alias(registry: Registry) -> None:
    """Without a canary every customer gets production's version and alias."""
    customers = registry.customers(5)
    with running_service(registry.store, registry.data.dataset) as (url, _):
        response = httpx.post(f"{url}/predict", json={"customers": customers})
        health = httpx.get(f"{url}/health").json()
        ready = httpx.get(f"{url}/ready")
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["model_version"] for p in predictions] == [registry.first] * 5
    assert {p["alias"] for p in predictions} == {"production"}
    assert all(0.0 <= p["churn_probability"] <= 1.0 for p in predictions)
    assert health["versions"] == {"production": registry.first, "canary": None}
    assert ready.status_code == 200


def test_predict_matches_offline_predictions(registry: Registry) -> None:
    """The served probabilities are the registry loader's offline ones."""
    customers = registry.customers(20)
    offline = load_model_version(registry.store, registry.first).predict(
        pd.DataFrame(customers)
    )
    with running_service(registry.store, registry.data.dataset) as (url, _):
        body = httpx.post(f"{url}/predict", json={"customers": customers}).json()
    served = [p["churn_probability"] for p in body["predictions"]]
    assert served == pytest.approx(list(offline), abs=1e-6)


def test_canary_gets_its_share_by_customer_hash(registry: Registry) -> None:
    """The canary serves exactly the customers whose id hash falls under the share."""
    registry.move("canary", registry.second)
    customers = registry.customers(60)
    with running_service(registry.store, registry.data.dataset) as (url, _):
        first = httpx.post(f"{url}/predict", json={"customers": customers}).json()
        again = httpx.post(f"{url}/predict", json={"customers": customers}).json()
    expected = [
        "canary"
        if canary_position(c["customerID"]) < TEST_SETTINGS.canary_share
        else "production"
        for c in customers
    ]
    served = [p["alias"] for p in first["predictions"]]
    assert served == expected == [p["alias"] for p in again["predictions"]]
    assert 0 < served.count("canary") < len(customers)
    versions = {p["alias"]: p["model_version"] for p in first["predictions"]}
    assert versions == {"canary": registry.second, "production": registry.first}


def test_reload_picks_up_an_alias_move(registry: Registry) -> None:
    """Moving production takes effect on POST /reload, without a restart."""
    customers = registry.customers(3)
    with running_service(registry.store, registry.data.dataset) as (url, _):
        registry.move("production", registry.second)
        before = httpx.post(f"{url}/predict", json={"customers": customers}).json()
        httpx.post(f"{url}/reload").raise_for_status()
        after = httpx.post(f"{url}/predict", json={"customers": customers}).json()
    assert {p["model_version"] for p in before["predictions"]} == {registry.first}
    assert {p["model_version"] for p in after["predictions"]} == {registry.second}


def test_failed_load_keeps_the_old_model_serving(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """A version whose files are broken never replaces the one serving."""
    registry.store.write_bytes(version_key(registry.second, "model.keras"), b"junk")
    customers = registry.customers(3)
    with running_service(registry.store, registry.data.dataset) as (url, _):
        registry.move("production", registry.second)
        with caplog.at_level(logging.WARNING, logger="serving.router"):
            health = httpx.post(f"{url}/reload").json()
        body = httpx.post(f"{url}/predict", json={"customers": customers}).json()
    assert {p["model_version"] for p in body["predictions"]} == {registry.first}
    state = health["aliases"]["production"]
    assert state["version"] == registry.first
    assert state["failed_version"] == registry.second
    assert f"still serving {registry.first}" in caplog.text
    assert "POST /reload" in caplog.text


def test_raw_ids_are_refused_and_never_logged(registry: Registry) -> None:
    """A raw customer id gets 422 and the prediction log holds only pseudonyms."""
    raw = registry.data.frames["holdout"].head(2)
    raw_ids = list(raw["customerID"])
    raw_rows = [
        {k: v for k, v in row.items() if k != "Churn"} for row in customer_records(raw)
    ]
    customers = registry.customers(10)
    with running_service(registry.store, registry.data.dataset) as (url, service):
        refused = httpx.post(f"{url}/predict", json={"customers": raw_rows})
        httpx.post(f"{url}/predict", json={"customers": customers}).raise_for_status()
    assert refused.status_code == 422
    assert "not a pseudonym" in refused.json()["detail"]["error"]
    assert not any(r in refused.text for r in raw_ids)
    logged = read_prediction_log(registry.store)
    assert len(logged) == 10 and service.prediction_log.pending == 0
    assert set(logged["customer_id"]) == {c["customerID"] for c in customers}
    assert set(logged["customerID"]) == set(logged["customer_id"])
    assert {"model_version", "alias", "latency_ms", "at", "tenure"} <= set(logged)
    assert "Churn" not in logged.columns
    text = "".join(
        registry.store.read_text(k) for k in registry.store.list("predictions/")
    )
    assert not any(r in text for r in raw_ids)


def test_metrics_count_errors_and_latency_per_alias(registry: Registry) -> None:
    """/metrics reports requests, errors and p50/p95/p99 per alias, JSON and text."""
    registry.move("canary", registry.second)

    def broken(store: Any, version: str) -> Any:
        model = load_served_model(store, version)
        if version == registry.second:
            model.predict = lambda frame: (_ for _ in ()).throw(RuntimeError("boom"))
        return model

    customers = registry.customers(40)
    with running_service(registry.store, registry.data.dataset, loader=broken) as (
        url,
        _,
    ):
        statuses = [
            httpx.post(f"{url}/predict", json={"customers": [c]}).status_code
            for c in customers
        ]
        metrics = httpx.get(f"{url}/metrics").json()
        text = httpx.get(f"{url}/metrics", params={"format": "prometheus"}).text
    canary = metrics["aliases"]["canary"]
    production = metrics["aliases"]["production"]
    assert canary["errors"] == canary["requests"] == statuses.count(500) > 0
    assert production["errors"] == 0 and production["requests"] == statuses.count(200)
    assert production["p50_ms"] <= production["p95_ms"] <= production["p99_ms"]
    assert 'churnops_request_errors_total{alias="canary"}' in text
    assert 'quantile="0.95"' in text


def test_no_production_model_is_not_ready(tmp_path: Any, model_data: Any) -> None:
    """An empty registry: /ready says 503 and /predict explains what to do."""
    from tasks.storage import FileStore

    store = FileStore(tmp_path)
    customer = {"customerID": "0" * 32}
    with running_service(store, model_data.dataset) as (url, _):
        ready = httpx.get(f"{url}/ready")
        predicted = httpx.post(f"{url}/predict", json={"customers": [customer]})
    assert ready.status_code == 503
    assert predicted.status_code == 503
    assert "promote a version" in predicted.json()["detail"]["error"]
