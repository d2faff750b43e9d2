"""The prediction trace: layers, attributions that add up, a readable page."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.explain import render_trace_markdown, trace_prediction
from tasks.train import train_churn_model
from tests.tasks.conftest_model import ModelData

pytest_plugins = ("tests.tasks.conftest_model",)


def test_trace_prediction_complete(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
) -> None:
    """Attributions sum to the logit change; the page shows the top feature."""
    outcome = train_churn_model(
        model_data.x("train"),
        model_data.y("train"),
        model_data.x("validation"),
        model_data.y("validation"),
        small_hyperparameters,
        seed=2,
        max_epochs=2,
        patience=2,
    )
    row = model_data.frames["holdout"].iloc[[0]]
    trace = trace_prediction(
        outcome.model,
        model_data.transform,
        row,
        model_data.x("train").mean(axis=0),
        max_error=1e-3,
        steps=[32, 4096],
    )
    assert trace["attribution_sum"] == pytest.approx(trace["logit_delta"], abs=1e-3)
    assert [layer["name"] for layer in trace["layers"]][-2:] == [
        "logit",
        "churn_probability",
    ]
    assert trace["output_mismatch"] < 1e-5
    assert set(trace["top"][0]) == {"feature", "attribution"}
    page = render_trace_markdown(trace)
    assert trace["top"][0]["feature"] in page and "## Layers" in page


def test_trace_prediction_one_row_only(
    keras_single_thread: Any,
    model_data: ModelData,
    small_hyperparameters: dict[str, Any],
) -> None:
    """Tracing several customers at once is refused."""
    from tasks.model_spec import build_churn_model

    model = build_churn_model(model_data.x("train").shape[1], small_hyperparameters, 1)
    with pytest.raises(ValueError, match="one customer at a time; got 2 rows"):
        trace_prediction(
            model,
            model_data.transform,
            model_data.frames["holdout"].iloc[:2],
            model_data.x("train").mean(axis=0),
            max_error=1e-3,
            steps=[8],
        )
