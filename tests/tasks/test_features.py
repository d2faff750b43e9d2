"""The one feature module: every transform, its stored form, its known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks import features
from tasks.features import (
    KNOWN_ANSWERS,
    OTHER,
    FeatureError,
    FeatureTransform,
    KnownAnswer,
    check_known_answer,
    check_known_answers,
    encode_label,
    fit_features,
)
from tests.tasks.conftest_data import tiny_dataset

TRAIN = pd.DataFrame(
    {
        "plan": pd.array(["basic", "pro", "basic", None], dtype="string"),
        "tenure": [1, 3, 5, 7],
        "charges": [10.0, None, 30.0, 20.0],
        "churned": pd.array(["yes", "no", "no", "yes"], dtype="string"),
    }
)


@pytest.fixture
def transform() -> FeatureTransform:
    return fit_features(TRAIN, tiny_dataset())


def test_fit_features_numeric_statistics(transform):
    """Numeric inputs keep the training mean, population std and median fill."""
    tenure = transform.numeric["tenure"]
    assert (tenure.mean, tenure.fill) == (4.0, 4.0)
    assert tenure.std == pytest.approx(np.sqrt(5.0))
    assert transform.numeric["charges"].fill == 20.0


def test_transform_numeric_standardizes_and_fills(transform):
    """(x - mean) / std, with missing values filled by the training median first."""
    rows = pd.DataFrame(
        {"plan": ["pro", "pro"], "tenure": [4, 9], "charges": [None, 30.0]}
    )
    matrix = transform.transform(rows)
    tenure = matrix[:, transform.output_names.index("tenure")]
    charges = matrix[:, transform.output_names.index("charges")]
    np.testing.assert_allclose(tenure, [0.0, 5 / np.sqrt(5.0)], rtol=1e-6)
    np.testing.assert_allclose(charges, [0.0, 10 / np.sqrt(200 / 3)], rtol=1e-6)
    assert matrix.dtype == np.float32


def test_transform_categorical_one_hot_with_other_bucket(transform):
    """Seen values get their column; unseen and missing go to the 'other' bucket."""
    rows = pd.DataFrame(
        {
            "plan": pd.array(["pro", "gold", None], dtype="string"),
            "tenure": [1, 1, 1],
            "charges": [1.0, 1.0, 1.0],
        }
    )
    columns = transform.columns_of("plan")
    assert columns == ["plan=basic", "plan=pro", f"plan={OTHER}"]
    block = transform.transform(rows)[:, : len(columns)]
    np.testing.assert_array_equal(block, [[0, 1, 0], [0, 0, 1], [0, 0, 1]])


def test_transform_width_and_output_names(transform):
    """Width counts the columns a feature expands to, in input order."""
    assert transform.inputs == ["plan", "tenure", "charges"]
    assert [transform.width_of(n) for n in transform.inputs] == [3, 1, 1]
    assert len(transform.output_names) == 5


def test_transform_json_round_trip_gives_same_matrix(transform):
    """Serving loads the stored transform and computes the same inputs."""
    loaded = FeatureTransform.from_json(transform.to_json())
    np.testing.assert_array_equal(loaded.transform(TRAIN), transform.transform(TRAIN))


def test_transform_missing_input_column_raises(transform):
    """Rows without a model input are refused, naming it."""
    with pytest.raises(
        FeatureError, match=r"lack the model input column\(s\) \['tenure'\]"
    ):
        transform.transform(TRAIN.drop(columns=["tenure"]))


def test_fit_features_refuses_unregistered_empty_and_non_numeric():
    """Fitting fails clearly on an unregistered input, no rows, or no numbers."""
    dataset = tiny_dataset()
    with pytest.raises(FeatureError, match="not in the feature registry"):
        fit_features(TRAIN, dataset, inputs=["churned"])
    with pytest.raises(FeatureError, match="zero training rows"):
        fit_features(TRAIN.iloc[:0], dataset)
    with pytest.raises(FeatureError, match="lack the model input column 'charges'"):
        fit_features(TRAIN.drop(columns=["charges"]), dataset)
    with pytest.raises(FeatureError, match="no numeric values"):
        fit_features(TRAIN.assign(tenure=[None] * 4), dataset)


def test_fit_features_constant_column_gets_unit_std():
    """A constant numeric column does not divide by zero."""
    transform = fit_features(TRAIN.assign(tenure=[2, 2, 2, 2]), tiny_dataset())
    assert transform.numeric["tenure"].std == 1.0


def test_encode_label_positive_class_is_one():
    """The positive class is 1, any other declared class 0."""
    labels = encode_label(TRAIN, tiny_dataset().contract.label)
    np.testing.assert_array_equal(labels, [1, 0, 0, 1])
    with pytest.raises(FeatureError, match="label column"):
        encode_label(TRAIN.drop(columns=["churned"]), tiny_dataset().contract.label)


def test_known_answers_cover_every_feature_kind():
    """Every kind the config accepts has a known answer, and each one holds."""
    from tasks.config import FEATURE_KINDS

    assert set(KNOWN_ANSWERS) == set(FEATURE_KINDS)
    outcomes = check_known_answers(list(FEATURE_KINDS))
    assert all(o.passed for o in outcomes), outcomes


def test_known_answer_wrong_expectation_fails():
    """A known answer whose arithmetic does not match the transform fails."""
    wrong = KnownAnswer("numeric", [1.0, 2.0, 3.0], [3.0], [[1.0]], "wrong on purpose")
    outcome = check_known_answer(wrong)
    assert not outcome.passed and "expected [[1.0]]" in outcome.message


def test_known_answer_catches_a_broken_transform(monkeypatch):
    """If the numeric transform stops standardizing, its known answer fails."""
    original = features.FeatureTransform._transform_one

    def unscaled(self, name, column):
        if self.kinds[name] == "numeric":
            return pd.to_numeric(column).fillna(0).to_numpy().reshape(-1, 1)
        return original(self, name, column)

    monkeypatch.setattr(features.FeatureTransform, "_transform_one", unscaled)
    outcomes = {
        o.kind: o.passed for o in check_known_answers(["numeric", "categorical"])
    }
    assert outcomes == {"numeric": False, "categorical": True}


def test_known_answers_kind_without_check_fails():
    """A declared kind with no known answer is reported as untested."""
    outcomes = check_known_answers(["numeric", "hashed"])
    hashed = next(o for o in outcomes if o.kind == "hashed")
    assert not hashed.passed and "no known-answer check" in hashed.message
