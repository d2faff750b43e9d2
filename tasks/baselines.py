"""Simple models the network must beat (M5), and the slicing they share with M6/M7.

Two references on the same rows as the candidate: a logistic regression on the same
feature matrix, and a hand-written churn-rate table (the training churn rate of each
group, e.g. contract type by tenure band), which predicts by looking a customer's
group up.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import DatasetConfig, SliceSpec

log = logging.getLogger(__name__)


class BaselineError(ValueError):
    """A simple model cannot be fitted on the rows given."""


def band_values(frame: pd.DataFrame, spec: SliceSpec) -> np.ndarray:
    """Each row's group in a slice: the category, or the name of its numeric band."""
    if spec.column not in frame.columns:
        raise BaselineError(
            f"rows lack the slice column {spec.column!r}; "
            f"columns present: {list(frame.columns)}"
        )
    column = frame[spec.column]
    if not spec.bands:
        return column.astype("string").fillna("<missing>").to_numpy(dtype=object)
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    labels = np.full(len(frame), "<outside bands>", dtype=object)
    for name, (low, high) in spec.bands.items():
        labels[(values >= low) & (values < high)] = name
    return labels


def slice_labels(frame: pd.DataFrame, dataset: DatasetConfig) -> dict[str, np.ndarray]:
    """Group labels for every slice the dataset declares, keyed by column."""
    return {spec.column: band_values(frame, spec) for spec in dataset.slices}


@dataclass
class ChurnRateTable:
    """Predicts the training churn rate of a customer's group.

    Groups with few training rows are pulled towards the overall rate (``prior_rows``
    pseudo-rows of it), and groups never seen in training get the overall rate.
    """

    slices: list[SliceSpec]
    prior_rows: float = 20.0
    overall: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)

    def _keys(self, frame: pd.DataFrame) -> np.ndarray:
        parts = [band_values(frame, spec).astype(str) for spec in self.slices]
        keys = parts[0].astype(object)
        for part in parts[1:]:
            keys = keys + "|" + part
        return keys

    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> ChurnRateTable:
        if len(frame) == 0:
            raise BaselineError("cannot fit a churn-rate table on zero rows")
        self.overall = float(np.mean(y))
        table = pd.DataFrame({"key": self._keys(frame), "y": y})
        grouped = table.groupby("key")["y"].agg(["sum", "count"])
        smoothed = (grouped["sum"] + self.prior_rows * self.overall) / (
            grouped["count"] + self.prior_rows
        )
        self.rates = {str(k): float(v) for k, v in smoothed.items()}
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        keys = self._keys(frame)
        return np.array([self.rates.get(str(k), self.overall) for k in keys])


def churn_rate_slices(
    dataset: DatasetConfig, columns: Sequence[str]
) -> list[SliceSpec]:
    """The slice specs (with bands) of the columns the rate table groups by."""
    declared = {spec.column: spec for spec in dataset.slices}
    return [declared.get(name, SliceSpec(column=name)) for name in columns]


def fit_logistic_regression(x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """A plain L2 logistic regression on the model's own feature matrix."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        raise BaselineError("logistic regression needs both classes in training rows")
    model = LogisticRegression(max_iter=2000, random_state=seed)
    return model.fit(x, y)


def proxy_strength(
    train: pd.DataFrame,
    test: pd.DataFrame,
    features: Sequence[str],
    attribute: str,
) -> dict[str, float]:
    """How well each feature alone predicts a protected attribute (ROC AUC, >= 0.5).

    A numeric feature is scored by its value; a categorical one by the attribute's
    rate per category in ``train``. A multi-valued attribute takes the strongest
    one-against-rest AUC.
    """
    from sklearn.metrics import roc_auc_score

    strengths: dict[str, float] = {}
    target_values = test[attribute].astype("string").to_numpy(dtype=object)
    train_values = train[attribute].astype("string").to_numpy(dtype=object)
    for feature in features:
        best = 0.5
        for value in sorted(set(train_values) - {None}):
            y_train = (train_values == value).astype(float)
            y_test = (target_values == value).astype(float)
            if len(np.unique(y_test)) < 2:
                continue
            numeric = pd.to_numeric(test[feature], errors="coerce")
            if numeric.notna().all() and pd.api.types.is_numeric_dtype(train[feature]):
                score = numeric.to_numpy(dtype=float)
            else:
                rates = (
                    pd.DataFrame({"k": train[feature].astype("string"), "y": y_train})
                    .groupby("k")["y"]
                    .mean()
                )
                score = (
                    test[feature].astype("string").map(rates).fillna(y_train.mean())
                ).to_numpy(dtype=float)
            auc = float(roc_auc_score(y_test, score))
            best = max(best, auc, 1 - auc)
        strengths[feature] = best
    return strengths
