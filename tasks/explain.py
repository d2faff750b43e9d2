"""The trace of one prediction (I5): raw row, features, every layer, attributions.

Attributions are integrated gradients of the logit, from a baseline customer (the
training mean of every model input) to the customer traced. They add up to the logit's
change from baseline to customer, up to the error of the path integral's numeric
approximation; the step count doubles until that error is under the threshold. A
model the gradients cannot pass through (a frozen or non-differentiable block) leaves
the sum short, and the trace says so.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from tasks.features import FeatureTransform
from tasks.model_spec import LOGIT_LAYER, prepare_keras

log = logging.getLogger(__name__)

_MAX_LAYER_VALUES = 64


def _integrated_gradients(
    logit_model: Any, x: np.ndarray, baseline: np.ndarray, steps: int
) -> np.ndarray:
    import tensorflow as tf

    alphas = np.linspace(0.0, 1.0, steps + 1, dtype=np.float32)[:, None]
    path = tf.constant(baseline[None, :] + alphas * (x - baseline)[None, :])
    with tf.GradientTape() as tape:
        tape.watch(path)
        logits = logit_model(path, training=False)
    grads = tape.gradient(logits, path)
    grads = np.zeros(path.shape, np.float32) if grads is None else grads.numpy()
    # Trapezoid rule over the path.
    average = (grads[:-1] + grads[1:]).mean(axis=0) / 2.0
    return (x - baseline) * average


def trace_prediction(
    model: Any,
    transform: FeatureTransform,
    row: pd.DataFrame,
    baseline: np.ndarray,
    *,
    max_error: float,
    steps: Sequence[int],
) -> dict[str, Any]:
    """Follow one customer through the model; returns a JSON-able trace."""
    keras = prepare_keras()
    if len(row) != 1:
        raise ValueError(f"trace one customer at a time; got {len(row)} rows")
    x = transform.transform(row)[0].astype(np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    names = transform.output_names

    layers = [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    probe = keras.Model(model.input, [layer.output for layer in layers])
    outputs = probe(x[None, :].astype(np.float32), training=False)
    outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
    layer_trace = []
    for layer, out in zip(layers, outputs, strict=True):
        values = np.asarray(out).reshape(-1)
        layer_trace.append(
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "units": int(values.size),
                "active": int(np.sum(values > 0)),
                "values": [round(float(v), 6) for v in values[:_MAX_LAYER_VALUES]],
            }
        )
    traced_output = float(np.asarray(outputs[-1]).reshape(-1)[0])
    predicted = float(
        np.asarray(model.predict(x[None, :].astype(np.float32), verbose=0)).reshape(-1)[
            0
        ]
    )

    logit_model = keras.Model(model.input, model.get_layer(LOGIT_LAYER).output)
    logit_x = float(
        np.asarray(logit_model(x[None, :].astype(np.float32))).reshape(-1)[0]
    )
    logit_b = float(
        np.asarray(logit_model(baseline[None, :].astype(np.float32))).reshape(-1)[0]
    )
    delta = logit_x - logit_b
    first, last = int(steps[0]), int(steps[-1])
    count = first
    while True:
        attributions = _integrated_gradients(
            logit_model, x.astype(np.float32), baseline.astype(np.float32), count
        ).astype(np.float64)
        error = abs(float(attributions.sum()) - delta)
        if error <= max_error or count >= last:
            break
        count *= 2

    per_feature: dict[str, float] = {}
    for feature in transform.inputs:
        columns = transform.columns_of(feature)
        idx = [names.index(c) for c in columns]
        per_feature[feature] = float(attributions[idx].sum())
    top = sorted(per_feature.items(), key=lambda kv: -abs(kv[1]))
    raw = {k: (None if pd.isna(v) else v) for k, v in row.iloc[0].to_dict().items()}
    trace = {
        "raw_input": json.loads(json.dumps(raw, default=str)),
        "features": {n: round(float(v), 6) for n, v in zip(names, x, strict=True)},
        "baseline": {
            n: round(float(v), 6) for n, v in zip(names, baseline, strict=True)
        },
        "layers": layer_trace,
        "logit": logit_x,
        "baseline_logit": logit_b,
        "logit_delta": delta,
        "probability": predicted,
        "traced_probability": traced_output,
        "output_mismatch": abs(traced_output - predicted),
        "attribution_sum": float(attributions.sum()),
        "completeness_error": error if math.isfinite(error) else float("inf"),
        "steps": count,
        "attributions": {n: float(a) for n, a in zip(names, attributions, strict=True)},
        "top": [{"feature": f, "attribution": a} for f, a in top],
    }
    log.info(
        "Traced one prediction: p=%.4f, completeness error %.2g at %d steps",
        predicted,
        error,
        count,
    )
    return trace


def render_trace_markdown(trace: dict[str, Any]) -> str:
    """A page a person reads: the customer, the layers, what pushed the prediction."""
    lines = [
        "# Trace of one churn prediction",
        "",
        f"Churn probability **{trace['probability']:.4f}** "
        f"(logit {trace['logit']:.4f}; "
        f"baseline customer {trace['baseline_logit']:.4f}).",
        f"Attributions sum to {trace['attribution_sum']:.5f} against a logit change of "
        f"{trace['logit_delta']:.5f}: error {trace['completeness_error']:.2g} "
        f"({trace['steps']} integration steps).",
        "",
        "## Raw input",
        "",
        "| column | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in trace["raw_input"].items()],
        "",
        "## Layers",
        "",
        "| layer | type | units | active | first values |",
        "|---|---|---|---|---|",
        *[
            f"| {layer['name']} | {layer['type']} | {layer['units']} | "
            f"{layer['active']} | "
            f"{', '.join(f'{v:.3f}' for v in layer['values'][:6])} |"
            for layer in trace["layers"]
        ],
        "",
        "## What moved the logit (integrated gradients, by feature)",
        "",
        "| feature | attribution |",
        "|---|---|",
        *[f"| {t['feature']} | {t['attribution']:+.4f} |" for t in trace["top"]],
        "",
    ]
    return "\n".join(lines)
