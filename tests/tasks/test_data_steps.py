"""The data steps end to end on small samples, as the DAG calls them."""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pandas as pd
import pytest

from gates.result import GateFailed
from tasks.config import load_model_config, parse_dataset
from tasks.data_steps import (
    build_features_step,
    check_feature_lead_time_step,
    check_feature_value_step,
    ingest_customers_step,
    prove_features_flow,
    pseudonymize_customers_step,
    split_customers,
    validate_customers_step,
)
from tasks.features import FeatureTransform
from tests.tasks.conftest_data import (
    KEY,
    make_context,
    results_of,
    small_customers,
    synthetic_dataset_dict,
    write_dataset_yaml,
)


def _read(ctx, key):
    return pd.read_parquet(io.BytesIO(ctx.store.read_bytes(key)))


def _run_data_path(ctx):
    ingested = ingest_customers_step(ctx)
    masked = pseudonymize_customers_step(ctx, ingested, key=KEY)
    validated = validate_customers_step(ctx, masked)
    return build_features_step(ctx, validated)


def _sklearn_predict(ctx, features):
    from sklearn.linear_model import LogisticRegression

    from tasks.features import encode_label

    transform = FeatureTransform.from_json(ctx.store.read_text(features["transform"]))
    train = _read(ctx, features["train"])
    model = LogisticRegression(max_iter=500).fit(
        transform.transform(train), encode_label(train, ctx.dataset.contract.label)
    )
    return lambda rows: model.predict_proba(transform.transform(rows))[:, 1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("run")
    ctx = make_context(tmp_path, params={"source": "synthetic://1500?seed=3"})
    return ctx, _run_data_path(ctx)


def test_build_features_step_records_d4_d7_and_stores_splits(built):
    """Splits, transform and plots stored; D4 and D7 pass on the committed config."""
    ctx, features = built
    assert sum(features["rows"].values()) == 1500
    verdicts = {r.test_id: r.verdict for r in ctx.scores.results()}
    assert {k: verdicts[k] for k in ("D1", "D4", "D7")} == {
        "D1": "pass",
        "D4": "pass",
        "D7": "pass",
    }
    transform = FeatureTransform.from_json(ctx.store.read_text(features["transform"]))
    assert transform.inputs == list(ctx.dataset.model_inputs)
    for uri in features["plots"].values():
        assert ctx.store.read_bytes(uri.split(ctx.store.root + "/")[1])[:4] == (
            b"\x89PNG"
        )


def test_split_customers_holdout_is_newest_by_event_date(built):
    """With an event date, every holdout row is at least as new as any other row."""
    ctx, features = built
    holdout = _read(ctx, features["holdout"])
    train = _read(ctx, features["train"])
    assert holdout["event_date"].min() >= train["event_date"].max()


def test_split_customers_without_date_is_stratified():
    """Without an event date the label share is kept in every split."""
    data = synthetic_dataset_dict()
    data["contract"]["event_date"] = None
    dataset = parse_dataset(data)
    frame = small_customers(1000, seed=2)
    parts = split_customers(frame, dataset, load_model_config("config/model.yaml"))
    shares = [(frame["Churn"].iloc[p] == "Yes").mean() for p in parts.values()]
    assert max(shares) - min(shares) < 0.02
    assert sorted(np.concatenate(list(parts.values()))) == list(range(1000))


def test_check_feature_value_step_records_d2_d3(built):
    """D2 and D3 are recorded for a trained model, D2 linked to the correlation plot."""
    ctx, features = built
    out = check_feature_value_step(ctx, features, _sklearn_predict(ctx, features))
    assert out["D3"] == "pass"
    d2 = results_of(ctx, "D2")[-1]
    assert d2.evidence == features["plots"]["correlation"]
    assert set(d2.details["importance"]) == set(ctx.dataset.model_inputs)


def test_check_feature_lead_time_step_first_run_passes(built):
    """On a new installation every input flows on a sample and is within budget."""
    ctx, features = built
    out = check_feature_lead_time_step(ctx, features, production_inputs_since={})
    assert out["D6"] == "pass"
    assert out["new_features"] == list(ctx.dataset.model_inputs)


def test_build_features_step_deprecated_input_fails_d4(tmp_path):
    """A deprecated model input stops the run at D4 before features are built."""
    data = synthetic_dataset_dict()
    data["features"]["Contract"]["status"] = "deprecated"
    config = write_dataset_yaml(tmp_path / "d.yaml", data)
    ctx = make_context(
        tmp_path, params={"dataset": str(config), "source": "synthetic://300?seed=1"}
    )
    with pytest.raises(GateFailed, match="Contract is deprecated"):
        _run_data_path(ctx)
    assert not ctx.store.exists(ctx.key("features", "transform.json"))


def test_newly_declared_feature_flows_end_to_end(tmp_path):
    """Declaring a column in a copied config is all it takes to reach the model."""
    frame = small_customers(800, seed=9)
    rng = np.random.default_rng(3)
    churned = (frame["Churn"] == "Yes").to_numpy()
    frame["support_calls"] = rng.poisson(np.where(churned, 4, 1))
    source = tmp_path / "customers.csv"
    frame.to_csv(source, index=False)

    data = synthetic_dataset_dict()
    data["source"] = f"file://{source}"
    data["contract"]["columns"]["support_calls"] = {"type": "integer", "min": 0}
    data["features"]["support_calls"] = {
        "kind": "numeric",
        "owner": "support",
        "source": "tickets.calls",
        "status": "active",
        "declared": "2026-11-30",
    }
    data["model_inputs"].append("support_calls")
    config = write_dataset_yaml(tmp_path / "copied.yaml", data)
    ctx = make_context(
        tmp_path, params={"dataset": str(config)}, today=dt.date(2026, 12, 1)
    )

    features = _run_data_path(ctx)
    transform = FeatureTransform.from_json(ctx.store.read_text(features["transform"]))
    assert "support_calls" in transform.output_names
    in_production = {
        name: dt.date(2026, 11, 1)
        for name in ctx.dataset.model_inputs
        if name != "support_calls"
    }
    out = check_feature_lead_time_step(
        ctx, features, production_inputs_since=in_production
    )
    assert out["new_features"] == ["support_calls"]
    assert out["D6"] == "pass"
    assert results_of(ctx, "D6")[-1].details["sample_flow"] == {"support_calls": True}


def test_prove_features_flow_reports_feature_missing_from_inputs():
    """A 'new' feature that is not among the model inputs did not flow."""
    dataset = parse_dataset(synthetic_dataset_dict())
    flowed = prove_features_flow(
        small_customers(300), dataset, ["tenure", "Partner"], seed=0
    )
    assert flowed == {"tenure": True, "Partner": False}


def test_build_features_plots_compare_with_previous_training(tmp_path):
    """A second run finds the first run's training rows for its distribution plot."""
    first = make_context(
        tmp_path, run_id="a", params={"source": "synthetic://300?seed=1"}
    )
    _run_data_path(first)
    second = make_context(
        tmp_path, run_id="b", params={"source": "synthetic://300?seed=2"}
    )
    from tasks.data_steps import _previous_training

    _, previous = _previous_training(second)
    assert previous is not None and len(previous) > 0


def test_data_path_runs_on_telco_by_config_alone(tmp_path, telco_csv):
    """The IBM table goes through every data step with its config and no code."""
    ctx = make_context(
        tmp_path,
        params={
            "dataset": "config/datasets/telco.yaml",
            "source": f"file://{telco_csv}",
        },
    )
    features = _run_data_path(ctx)
    assert sum(features["rows"].values()) == 7043
    verdicts = {r.test_id: r.verdict for r in ctx.scores.results()}
    assert {k: verdicts[k] for k in ("D1", "D4", "D7")} == {
        "D1": "pass",
        "D4": "pass",
        "D7": "pass",
    }
    holdout = _read(ctx, features["holdout"])
    assert abs((holdout["Churn"] == "Yes").mean() - 1869 / 7043) < 0.01
