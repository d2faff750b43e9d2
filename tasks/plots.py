"""Plots stored with each run: feature distributions against the previous training
data, and the correlation matrix of the model inputs.

matplotlib is imported inside each function with the Agg backend, so importing this
module costs nothing and no display is ever needed. Plots show distributions only,
never identifier values.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import DatasetConfig


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    _pyplot().close(figure)
    return buffer.getvalue()


def plot_feature_distributions(
    current: pd.DataFrame,
    previous: pd.DataFrame | None,
    dataset: DatasetConfig,
    inputs: list[str],
) -> bytes:
    """One small panel per model input: this run's training rows over the last run's."""
    plt = _pyplot()
    columns = 4
    rows = max(1, math.ceil(len(inputs) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows))
    flat = np.atleast_1d(axes).ravel()
    for ax, name in zip(flat, inputs, strict=False):
        kind = dataset.features[name].kind
        frames = [("this run", current)]
        if previous is not None and name in previous.columns:
            frames.append(("previous training", previous))
        if kind == "numeric":
            for label, frame in frames:
                values = pd.to_numeric(frame[name], errors="coerce").dropna()
                ax.hist(values, bins=30, density=True, alpha=0.5, label=label)
        else:
            shares = (
                pd.DataFrame(
                    {
                        label: frame[name].astype("string").value_counts(normalize=True)
                        for label, frame in frames
                    }
                )
                .fillna(0.0)
                .head(15)
            )
            shares.plot.bar(ax=ax, legend=False)
            ax.tick_params(axis="x", labelsize=6, labelrotation=45)
        ax.set_title(name, fontsize=9)
    for ax in flat[len(inputs) :]:
        ax.axis("off")
    if len(flat):
        flat[0].legend(fontsize=7)
    figure.suptitle(
        "Feature distributions: this run against the previous training data"
    )
    figure.tight_layout()
    return _png(figure)


def plot_correlation_matrix(
    frame: pd.DataFrame, dataset: DatasetConfig, inputs: list[str]
) -> bytes:
    """Pairwise correlation of the inputs and the label (categories as codes)."""
    plt = _pyplot()
    label = dataset.contract.label
    encoded = {}
    for name in [*inputs, label.column]:
        if name not in frame.columns:
            continue
        column = frame[name]
        if name == label.column:
            encoded[name] = (column.astype("string") == label.positive).astype(float)
        elif dataset.features[name].kind == "numeric":
            encoded[name] = pd.to_numeric(column, errors="coerce").astype(float)
        else:
            encoded[name] = pd.Series(
                pd.Categorical(column.astype("string")).codes, index=frame.index
            ).astype(float)
    matrix = pd.DataFrame(encoded).corr().fillna(0.0)
    size = max(4.0, 0.45 * len(matrix))
    figure, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix.to_numpy(), cmap="coolwarm", vmin=-1, vmax=1)
    ax.set_xticks(range(len(matrix)), matrix.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(len(matrix)), matrix.columns, fontsize=7)
    figure.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title("Correlation of model inputs and label (training rows)")
    figure.tight_layout()
    return _png(figure)
