"""How quality falls with model age (M4): older windows trained, newest scored.

Rows are cut into equal spans of the event date. A logistic regression (fast, and
the M5 reference, so its curve is the shape a retrain schedule must respect) is fitted
on each older window with the candidate's feature transform and scored on the newest
window. A model's age is the days from the end of its training window to the start
of the newest one.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import DatasetConfig
from tasks.features import FeatureTransform, encode_label

log = logging.getLogger(__name__)

STALENESS_MODEL = "logistic regression"


class StalenessError(ValueError):
    """The rows cannot be cut into time windows."""


def measure_staleness_curve(
    frame: pd.DataFrame,
    dataset: DatasetConfig,
    transform: FeatureTransform,
    *,
    windows: int,
    seed: int,
) -> list[dict[str, Any]]:
    """AUC on the newest window of models trained on each older window."""
    from gates.model import roc_auc
    from tasks.baselines import fit_logistic_regression

    column = dataset.contract.event_date
    if not column or column not in frame.columns:
        raise StalenessError(
            f"rows have no event date column ({column!r}); declare contract.event_date "
            "in the dataset config to measure staleness"
        )
    if windows < 2:
        raise StalenessError(f"staleness needs at least 2 windows, got {windows}")
    dates = pd.to_datetime(frame[column], errors="coerce")
    start, end = dates.min(), dates.max()
    if pd.isna(start) or start == end:
        raise StalenessError(f"{column!r} spans no time ({start} to {end})")
    edges = pd.date_range(start, end, periods=windows + 1)
    window_of = np.clip(
        np.searchsorted(edges.values, dates.values, side="right") - 1, 0, windows - 1
    )
    newest = frame[window_of == windows - 1]
    x_new = transform.transform(newest)
    y_new = encode_label(newest, dataset.contract.label)

    curve = []
    for k in range(windows - 1):
        rows = frame[window_of == k]
        y = encode_label(rows, dataset.contract.label)
        if len(rows) < 20 or len(np.unique(y)) < 2:
            log.info("Staleness window %d has %d rows; skipped", k, len(rows))
            continue
        model = fit_logistic_regression(transform.transform(rows), y, seed)
        auc = roc_auc(y_new, model.predict_proba(x_new)[:, 1])
        curve.append(
            {
                "window": k,
                "train_start": str(edges[k].date()),
                "train_end": str(edges[k + 1].date()),
                "age_days": float((edges[windows - 1] - edges[k + 1]).days),
                "rows": float(len(rows)),
                "auc": auc,
            }
        )
    log.info(
        "Staleness curve: %d points scored on %d newest rows", len(curve), len(newest)
    )
    return curve


def plot_staleness_curve(
    curve: list[dict[str, Any]], budget_days: float | None
) -> bytes:
    """A PNG of AUC against model age, with the budget marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(curve, key=lambda p: p["age_days"])
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([p["age_days"] for p in points], [p["auc"] for p in points], marker="o")
    if budget_days is not None:
        ax.axvline(
            budget_days,
            color="tab:red",
            linestyle="--",
            label=f"budget {budget_days:.0f} days",
        )
        ax.legend()
    ax.set_xlabel("model age (days)")
    ax.set_ylabel("AUC on the newest window")
    ax.set_title(f"Staleness ({STALENESS_MODEL})")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
