"""The one feature module: pseudonymized customer rows in, model inputs out.

Training fits a :class:`FeatureTransform` and stores it with the model; serving loads
the same object and calls the same :meth:`FeatureTransform.transform`, so the two can
only disagree if the stored statistics differ. Features are declared in the dataset
config (``kind: numeric`` or ``kind: categorical``); no feature has code of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import DatasetConfig, LabelSpec

OTHER = "__other__"


class FeatureError(ValueError):
    """Rows cannot be turned into model inputs."""


@dataclass(frozen=True)
class NumericStats:
    """Training statistics a numeric feature is standardized with."""

    mean: float
    std: float
    fill: float


@dataclass
class FeatureTransform:
    """Fitted statistics for every model input, in input order.

    Numeric features are standardized with the training mean and standard deviation,
    missing values filled with the training median first. Categorical features are
    one-hot over the values seen in training plus one bucket for anything unseen,
    so serving never fails on a new category and never silently drops it.
    """

    kinds: dict[str, str]
    numeric: dict[str, NumericStats] = field(default_factory=dict)
    vocabularies: dict[str, list[str]] = field(default_factory=dict)

    @property
    def inputs(self) -> list[str]:
        return list(self.kinds)

    def columns_of(self, feature: str) -> list[str]:
        """The model-input column names one feature expands to."""
        if self.kinds[feature] == "numeric":
            return [feature]
        return [f"{feature}={value}" for value in self.vocabularies[feature]] + [
            f"{feature}={OTHER}"
        ]

    @property
    def output_names(self) -> list[str]:
        return [name for feature in self.kinds for name in self.columns_of(feature)]

    def width_of(self, feature: str) -> int:
        return len(self.columns_of(feature))

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Model inputs for ``frame`` as a float32 matrix, one row per customer."""
        missing = [name for name in self.kinds if name not in frame.columns]
        if missing:
            raise FeatureError(
                f"rows lack the model input column(s) {missing}; the feature transform "
                f"was fitted on {self.inputs}"
            )
        blocks = [self._transform_one(name, frame[name]) for name in self.kinds]
        if not blocks:
            return np.zeros((len(frame), 0), dtype=np.float32)
        return np.hstack(blocks).astype(np.float32, copy=False)

    def _transform_one(self, name: str, column: pd.Series) -> np.ndarray:
        if self.kinds[name] == "numeric":
            stats = self.numeric[name]
            values = pd.to_numeric(column, errors="coerce").astype("float64")
            values = values.fillna(stats.fill).to_numpy()
            return ((values - stats.mean) / stats.std).reshape(-1, 1)
        vocabulary = self.vocabularies[name]
        codes = pd.Categorical(column.astype("string"), categories=vocabulary).codes
        codes = np.where(codes < 0, len(vocabulary), codes)
        one_hot = np.zeros((len(column), len(vocabulary) + 1), dtype=np.float32)
        one_hot[np.arange(len(column)), codes] = 1.0
        return one_hot

    def to_dict(self) -> dict[str, Any]:
        # Input order is the column order of the matrix: keep it explicit.
        return {
            "inputs": self.inputs,
            "kinds": self.kinds,
            "numeric": {k: vars(v) for k, v in self.numeric.items()},
            "vocabularies": self.vocabularies,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureTransform:
        return cls(
            kinds={name: data["kinds"][name] for name in data["inputs"]},
            numeric={k: NumericStats(**v) for k, v in data["numeric"].items()},
            vocabularies={k: list(v) for k, v in data["vocabularies"].items()},
        )

    @classmethod
    def from_json(cls, text: str) -> FeatureTransform:
        return cls.from_dict(json.loads(text))


def fit_features(
    frame: pd.DataFrame, dataset: DatasetConfig, inputs: list[str] | None = None
) -> FeatureTransform:
    """Learn the transform of the dataset's model inputs from training rows."""
    names = list(inputs if inputs is not None else dataset.model_inputs)
    unregistered = [name for name in names if name not in dataset.features]
    if unregistered:
        raise FeatureError(
            f"model input(s) {unregistered} are not in the feature registry of "
            f"{dataset.name}; register them under 'features' in the dataset config"
        )
    if frame.empty:
        raise FeatureError("cannot fit features on zero training rows")
    transform = FeatureTransform(kinds={n: dataset.features[n].kind for n in names})
    for name in names:
        if name not in frame.columns:
            raise FeatureError(
                f"training rows lack the model input column {name!r}; "
                f"columns present: {sorted(frame.columns)}"
            )
        column = frame[name]
        if transform.kinds[name] == "numeric":
            values = pd.to_numeric(column, errors="coerce").astype("float64")
            if values.notna().sum() == 0:
                raise FeatureError(f"numeric feature {name!r} has no numeric values")
            std = float(values.std(ddof=0))
            transform.numeric[name] = NumericStats(
                mean=float(values.mean()),
                std=std if std > 0 else 1.0,
                fill=float(values.median()),
            )
        else:
            seen = column.dropna().astype("string").unique()
            transform.vocabularies[name] = sorted(str(v) for v in seen)
    return transform


def encode_label(frame: pd.DataFrame, label: LabelSpec) -> np.ndarray:
    """1 for the positive class, 0 for any other declared class."""
    if label.column not in frame.columns:
        raise FeatureError(f"rows lack the label column {label.column!r}")
    values = frame[label.column].astype("string")
    return (values == label.positive).to_numpy(dtype=np.float32)


# Known-answer checks -------------------------------------------------------------
#
# One per transform kind: a tiny training column, rows to transform, and the output
# worked out by hand. The pipeline runs them (gate D7) before it trusts the module,
# so a declared kind without a check, or a transform that drifts from its arithmetic,
# stops the run.


@dataclass(frozen=True)
class KnownAnswer:
    """A hand-computed transform of a few values, for one feature kind."""

    kind: str
    training: list[Any]
    rows: list[Any]
    expected: list[list[float]]
    working: str


KNOWN_ANSWERS: dict[str, KnownAnswer] = {
    "numeric": KnownAnswer(
        kind="numeric",
        training=[1.0, 2.0, 3.0, None],
        rows=[3.0, None, 0.0],
        # mean 2, population std sqrt(2/3) = 0.8164966, median fill 2.
        expected=[[1.2247449], [0.0], [-2.4494897]],
        working="(x - 2) / 0.8164966; a missing value takes the median 2",
    ),
    "categorical": KnownAnswer(
        kind="categorical",
        training=["b", "a", "b", None],
        rows=["a", "b", "c", None],
        # vocabulary [a, b] + one bucket for anything else, missing included.
        expected=[[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]],
        working="one-hot over the sorted training values [a, b], then 'other'",
    ),
}


@dataclass(frozen=True)
class KnownAnswerOutcome:
    """Whether one kind's transform reproduced its hand-computed answer."""

    kind: str
    passed: bool
    message: str


def _kind_registry(kind: str) -> DatasetConfig:
    from tasks.config import parse_dataset

    return parse_dataset(
        {
            "name": f"known_answer_{kind}",
            "source": "synthetic://1?seed=0",
            "contract": {
                "id_column": "id",
                "label": {"column": "y", "positive": "1", "classes": ["1", "0"]},
                "columns": {
                    "id": {"type": "string"},
                    "y": {"type": "category"},
                    "x": {"type": "float"},
                },
            },
            "features": {
                "x": {"kind": kind, "owner": "churnops", "source": "known answers"}
            },
            "model_inputs": ["x"],
        },
        where=f"known answer for {kind}",
    )


def check_known_answer(
    answer: KnownAnswer, tolerance: float = 1e-5
) -> KnownAnswerOutcome:
    """Fit the kind's transform on the tiny column and compare with the answer."""
    try:
        dataset = _kind_registry(answer.kind)
        training = pd.DataFrame({"x": pd.Series(answer.training, dtype="object")})
        rows = pd.DataFrame({"x": pd.Series(answer.rows, dtype="object")})
        if answer.kind == "numeric":
            training["x"] = pd.to_numeric(training["x"])
            rows["x"] = pd.to_numeric(rows["x"])
        got = fit_features(training, dataset).transform(rows)
    except (FeatureError, ValueError) as exc:
        return KnownAnswerOutcome(answer.kind, False, f"raised {exc}")
    expected = np.asarray(answer.expected, dtype=np.float64)
    if got.shape != expected.shape:
        return KnownAnswerOutcome(
            answer.kind,
            False,
            f"shape {got.shape}, expected {expected.shape} ({answer.working})",
        )
    if not np.allclose(got, expected, atol=tolerance):
        return KnownAnswerOutcome(
            answer.kind,
            False,
            f"got {got.tolist()}, expected {expected.tolist()} ({answer.working})",
        )
    return KnownAnswerOutcome(answer.kind, True, f"matches: {answer.working}")


def check_known_answers(
    kinds: list[str], answers: dict[str, KnownAnswer] | None = None
) -> list[KnownAnswerOutcome]:
    """One outcome per declared kind; a kind without a known answer fails."""
    table = KNOWN_ANSWERS if answers is None else answers
    outcomes = []
    for kind in sorted(set(kinds)):
        if kind not in table:
            outcomes.append(
                KnownAnswerOutcome(
                    kind,
                    False,
                    f"no known-answer check for feature kind {kind!r}; add one to "
                    "tasks.features.KNOWN_ANSWERS",
                )
            )
            continue
        outcomes.append(check_known_answer(table[kind]))
    return outcomes
