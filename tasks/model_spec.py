"""The churn model spec: a small Keras MLP whose every knob comes from config.

The network ends in a linear ``logit`` layer followed by a sigmoid, so the debug trace
(I5) can attribute the logit exactly and the gates can read probabilities. TensorFlow
and Keras are imported inside functions: DAG files import this module at parse time.
"""

from __future__ import annotations

import logging
import math
import os
import random
from typing import Any

import numpy as np

from tasks.config import HyperparameterSpec, ModelConfig

log = logging.getLogger(__name__)

LOGIT_LAYER = "logit"
OUTPUT_LAYER = "churn_probability"
# The hyperparameters the spec reads; config must give each one a range.
SPEC_HYPERPARAMETERS = (
    "hidden_units",
    "hidden_layers",
    "dropout",
    "learning_rate",
    "l2",
    "batch_size",
)


class ModelSpecError(ValueError):
    """Hyperparameters or a search space the model spec cannot be built from."""


def prepare_keras(threads: int | None = None, *, deterministic: bool = True) -> Any:
    """Import Keras on the TensorFlow backend, quiet, deterministic and thread-capped.

    Thread counts can only be set before TensorFlow starts its runtime; a later call
    keeps whatever the first one set.
    """
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            log.debug("TensorFlow already started; thread counts left as they were")
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    return keras


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, TensorFlow and Keras' global generators together."""
    keras = prepare_keras()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    keras.utils.set_random_seed(seed)


def check_search_space(config: ModelConfig) -> None:
    """Fail unless every hyperparameter the spec reads has a usable range."""
    space = config.hyperparameters
    missing = [name for name in SPEC_HYPERPARAMETERS if name not in space]
    if missing:
        raise ModelSpecError(
            f"the model spec reads hyperparameter(s) {missing} but "
            f"{config.path or 'the model config'} gives them no range; add them under "
            "'hyperparameters' as {type: int|float, low, high} or {type: choice, "
            "values: [...]}"
        )
    for spec in space.values():
        problem = _range_problem(spec)
        if problem:
            raise ModelSpecError(
                f"hyperparameter {spec.name!r} in {config.path or 'the model config'}: "
                f"{problem}"
            )


def _range_problem(spec: HyperparameterSpec) -> str | None:
    if spec.type == "choice":
        if not spec.values:
            return "type choice needs a non-empty 'values' list"
        return None
    if spec.type not in ("int", "float"):
        return f"type {spec.type!r} is not int, float or choice"
    if spec.low is None or spec.high is None:
        return "needs both 'low' and 'high'"
    if not spec.low <= spec.high:
        return f"low {spec.low} is above high {spec.high}"
    if spec.log and spec.low <= 0:
        return f"a log-scaled range needs low > 0, got {spec.low}"
    return None


def sample_hyperparameters(
    space: dict[str, HyperparameterSpec], rng: np.random.Generator
) -> dict[str, Any]:
    """One random draw from the declared space (log-uniform where ``log`` is set)."""
    sample: dict[str, Any] = {}
    for name, spec in space.items():
        if spec.type == "choice":
            assert spec.values is not None
            sample[name] = spec.values[int(rng.integers(len(spec.values)))]
            continue
        assert spec.low is not None and spec.high is not None
        low, high = float(spec.low), float(spec.high)
        if spec.log:
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            value = rng.uniform(low, high)
        if spec.type == "int":
            sample[name] = int(min(max(round(value), math.ceil(low)), math.floor(high)))
        else:
            sample[name] = float(value)
    return sample


def central_hyperparameters(space: dict[str, HyperparameterSpec]) -> dict[str, Any]:
    """The middle of every range: a sane default before any search has run."""
    centre: dict[str, Any] = {}
    for name, spec in space.items():
        if spec.type == "choice":
            assert spec.values is not None
            centre[name] = spec.values[len(spec.values) // 2]
            continue
        assert spec.low is not None and spec.high is not None
        low, high = float(spec.low), float(spec.high)
        value = math.sqrt(low * high) if spec.log else (low + high) / 2
        centre[name] = round(value) if spec.type == "int" else value
    return centre


def build_churn_model(n_inputs: int, hyperparameters: dict[str, Any], seed: int) -> Any:
    """A compiled MLP: dense ReLU blocks with dropout and L2, a logit, a sigmoid.

    Every initializer and dropout layer gets its own seed derived from ``seed``, so two
    builds with the same seed start from identical weights.
    """
    keras = prepare_keras()
    missing = [name for name in SPEC_HYPERPARAMETERS if name not in hyperparameters]
    if missing:
        raise ModelSpecError(f"hyperparameters lack {missing}; got {hyperparameters}")
    units = int(hyperparameters["hidden_units"])
    layers = int(hyperparameters["hidden_layers"])
    dropout = float(hyperparameters["dropout"])
    l2 = float(hyperparameters["l2"])
    if units < 1 or layers < 0 or not 0 <= dropout < 1 or l2 < 0:
        raise ModelSpecError(
            f"hyperparameters out of range: hidden_units={units} (>= 1), "
            f"hidden_layers={layers} (>= 0), dropout={dropout} (in [0, 1)), "
            f"l2={l2} (>= 0)"
        )

    inputs = keras.Input(shape=(n_inputs,), name="features")
    x = inputs
    for i in range(layers):
        x = keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 10 * i),
            kernel_regularizer=keras.regularizers.L2(l2) if l2 > 0 else None,
            name=f"hidden_{i + 1}",
        )(x)
        if dropout > 0:
            x = keras.layers.Dropout(
                dropout, seed=seed + 10 * i + 1, name=f"dropout_{i + 1}"
            )(x)
    logit = keras.layers.Dense(
        1,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 997),
        name=LOGIT_LAYER,
    )(x)
    output = keras.layers.Activation("sigmoid", name=OUTPUT_LAYER)(logit)
    model = keras.Model(inputs, output, name="churn_mlp")
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=float(hyperparameters["learning_rate"])
        ),
        loss=keras.losses.BinaryCrossentropy(),
    )
    return model


def describe_model(model: Any, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """The spec as stored with a model version: layers, sizes and hyperparameters."""
    return {
        "architecture": model.name,
        "hyperparameters": hyperparameters,
        "parameters": int(model.count_params()),
        "layers": [
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "output_shape": list(layer.output.shape[1:]),
            }
            for layer in model.layers
        ],
    }
