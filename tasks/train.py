"""Deterministic, checkpointed, resumable training of the churn model.

Every epoch ends with a checkpoint under the run in storage: the whole model with its
optimizer state, the early-stopping state, the history and the best weights so far.
A task killed part way and retried by Airflow finds the newest complete checkpoint and
continues from the next epoch. The randomness of an epoch (shuffle order and dropout
masks) is derived from (seed, epoch) alone, never from what ran before in the process,
so a resumed run takes the same steps as an uninterrupted one; with TensorFlow's op
determinism on, the two end with bitwise-identical weights on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gates.infrastructure import SpecCheck
from tasks.model_spec import build_churn_model, prepare_keras, seed_everything
from tasks.storage import ArtifactStore

log = logging.getLogger(__name__)

# An epoch at least this long is logged at INFO, so a long training shows progress.
PROGRESS_EPOCH_SECONDS = 5.0

_STATE_NAME = re.compile(r"epoch-(\d{4})\.json$")
# Seed generator states are [seed, counter]; each epoch starts its counter here.
_EPOCH_COUNTER_STRIDE = 1_000_000
_PREDICT_BATCH = 8192


class TrainingError(RuntimeError):
    """Training could not run or resume as asked."""


class TrainingInterrupted(TrainingError):
    """Training stopped on purpose after an epoch (used to rehearse a crash)."""


@dataclass(frozen=True)
class CheckpointPlace:
    """Where one training writes its per-epoch checkpoints and TensorBoard logs."""

    store: ArtifactStore
    prefix: str

    def key(self, name: str) -> str:
        return f"{self.prefix.rstrip('/')}/{name}"


@dataclass
class TrainingOutcome:
    """A trained model and how it got there."""

    model: Any
    hyperparameters: dict[str, Any]
    seed: int
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    resumed_from_epoch: int | None
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "hyperparameters": self.hyperparameters,
            "seed": self.seed,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "stopped_early": self.stopped_early,
            "resumed_from_epoch": self.resumed_from_epoch,
            "seconds": round(self.seconds, 3),
            "history": self.history,
        }


def predict_probabilities(model: Any, x: np.ndarray) -> np.ndarray:
    """Churn probabilities as a flat float64 array, in one deterministic pass."""
    if len(x) == 0:
        return np.zeros(0)
    out = model.predict(x, batch_size=_PREDICT_BATCH, verbose=0)
    return np.asarray(out, dtype=np.float64).reshape(-1)


def binary_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _reset_epoch_randomness(model: Any, seed: int, epoch: int) -> None:
    """Put every dropout generator at a state fixed by (seed, epoch) alone."""
    generators = [v for v in model.variables if "seed_generator" in v.path]
    for i, variable in enumerate(generators):
        state = np.array([seed + i, epoch * _EPOCH_COUNTER_STRIDE])
        variable.assign(state.astype(variable.dtype))


def _epoch_order(seed: int, epoch: int, n_rows: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def latest_checkpoint(place: CheckpointPlace) -> dict[str, Any] | None:
    """The newest complete checkpoint's state, or None when training never checkpointed.

    A checkpoint counts once its state file exists; that file is written last, so a
    task killed while writing leaves the previous checkpoint as the newest.
    """
    epochs = [
        int(match.group(1))
        for key in place.store.list(place.prefix.rstrip("/") + "/")
        if (match := _STATE_NAME.search(key))
    ]
    if not epochs:
        return None
    state: dict[str, Any] = json.loads(
        place.store.read_text(place.key(f"epoch-{max(epochs):04d}.json"))
    )
    return state


def _save_checkpoint(
    place: CheckpointPlace, model: Any, state: dict[str, Any], improved: bool, tmp: Path
) -> None:
    epoch = int(state["epoch"])
    model_path = tmp / f"epoch-{epoch:04d}.keras"
    model.save(model_path)
    place.store.upload(place.key(model_path.name), model_path)
    if improved:
        best_path = tmp / "best.weights.h5"
        model.save_weights(best_path)
        place.store.upload(place.key(f"best-epoch-{epoch:04d}.weights.h5"), best_path)
    place.store.write_text(place.key(f"epoch-{epoch:04d}.json"), json.dumps(state))
    # Keep the newest checkpoint and the one before (the newest complete one if this
    # write is cut short), and the best weights they name; older files only cost space.
    keep_best = {int(state["best_epoch"]), int(state.get("previous_best_epoch", 0))}
    for key in place.store.list(place.prefix.rstrip("/") + "/"):
        match = re.search(r"(best-)?epoch-(\d{4})\.(keras|weights\.h5)$", key)
        if not match:
            continue
        number = int(match.group(2))
        if (match.group(1) and number not in keep_best) or (
            not match.group(1) and number < epoch - 1
        ):
            place.store.delete(key)


def _write_scalars(writer: Any, epoch: int, values: dict[str, float]) -> None:
    """Scalar events TensorBoard reads, written without the tensorboard package."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    with writer.as_default():
        for name, value in values.items():
            tf.summary.write(
                name,
                tf.constant(value, dtype=tf.float32),
                step=epoch,
                metadata=metadata.SerializeToString(),
            )
    writer.flush()


def train_churn_model(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    hyperparameters: dict[str, Any],
    *,
    seed: int | None,
    max_epochs: int,
    patience: int,
    checkpoints: CheckpointPlace | None = None,
    stop_after_epoch: int | None = None,
) -> TrainingOutcome:
    """Train with early stopping on validation loss, restoring the best weights.

    ``seed`` None draws the seed from the operating system: a deliberately unseeded
    run, which is what the reproducibility gate must catch. ``stop_after_epoch``
    raises :class:`TrainingInterrupted` once that epoch's checkpoint is written.
    """
    keras = prepare_keras()
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**31)  # type: ignore[operator]
    if len(x_train) == 0 or len(x_val) == 0:
        raise TrainingError(
            f"training needs rows in both sets; got {len(x_train)} training and "
            f"{len(x_val)} validation rows"
        )
    started = time.perf_counter()
    seed_everything(seed)
    batch_size = int(hyperparameters["batch_size"])

    state: dict[str, Any] = {
        "epoch": 0,
        "best_val_loss": float("inf"),
        "best_epoch": 0,
        "wait": 0,
        "history": [],
        "stopped_early": False,
    }
    resumed_from: int | None = None
    found = latest_checkpoint(checkpoints) if checkpoints else None
    with tempfile.TemporaryDirectory(prefix="churnops-train-") as tmp_name:
        tmp = Path(tmp_name)
        if found is not None and checkpoints is not None:
            if (
                found.get("seed") != seed
                or found.get("hyperparameters") != hyperparameters
            ):
                raise TrainingError(
                    f"checkpoint under {checkpoints.store.uri(checkpoints.prefix)} was "
                    f"written with seed {found.get('seed')} and hyperparameters "
                    f"{found.get('hyperparameters')}, not {seed} and "
                    f"{hyperparameters}; "
                    "delete it or train under another prefix"
                )
            state = found
            resumed_from = int(found["epoch"])
            with checkpoints.store.local_copy(
                checkpoints.key(f"epoch-{resumed_from:04d}.keras")
            ) as path:
                model = keras.models.load_model(path)
            log.info(
                "Resuming training after epoch %d from %s",
                resumed_from,
                checkpoints.store.uri(checkpoints.prefix),
            )
        else:
            model = build_churn_model(x_train.shape[1], hyperparameters, seed)

        writer = None
        best_weights: list[Any] | None = None
        if checkpoints is not None:
            import tensorflow as tf

            writer = tf.summary.create_file_writer(str(tmp / "tensorboard"))

        while not state["stopped_early"] and state["epoch"] < max_epochs:
            epoch = int(state["epoch"]) + 1
            epoch_started = time.perf_counter()
            _reset_epoch_randomness(model, seed, epoch)
            order = _epoch_order(seed, epoch, len(x_train))
            fit = model.fit(
                x_train[order],
                y_train[order],
                batch_size=batch_size,
                epochs=1,
                shuffle=False,
                verbose=0,
            )
            val_loss = binary_log_loss(y_val, predict_probabilities(model, x_val))
            loss = float(fit.history["loss"][-1])
            improved = val_loss < state["best_val_loss"]
            state["previous_best_epoch"] = state["best_epoch"]
            if improved:
                state.update(best_val_loss=val_loss, best_epoch=epoch, wait=0)
                best_weights = model.get_weights()
            else:
                state["wait"] += 1
            state["epoch"] = epoch
            state["history"].append(
                {"epoch": epoch, "loss": loss, "val_loss": val_loss}
            )
            state["stopped_early"] = state["wait"] >= patience
            if not np.isfinite(loss):
                raise TrainingError(
                    f"training loss became {loss} at epoch {epoch}; lower the learning "
                    f"rate (now {hyperparameters['learning_rate']})"
                )
            if checkpoints is not None:
                state.update(seed=seed, hyperparameters=hyperparameters)
                _save_checkpoint(checkpoints, model, state, improved, tmp)
                _write_scalars(writer, epoch, {"loss": loss, "val_loss": val_loss})
                checkpoints.store.upload(
                    checkpoints.key("tensorboard"), tmp / "tensorboard"
                )
            # Long epochs (a million customers) show progress; short ones stay quiet.
            epoch_seconds = time.perf_counter() - epoch_started
            log.log(
                logging.INFO
                if epoch_seconds >= PROGRESS_EPOCH_SECONDS
                else logging.DEBUG,
                "Epoch %d of at most %d: loss %.5f, val_loss %.5f, %.1f s",
                epoch,
                max_epochs,
                loss,
                val_loss,
                epoch_seconds,
            )
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                raise TrainingInterrupted(
                    f"training stopped after epoch {epoch} as asked"
                )

        if best_weights is not None:
            model.set_weights(best_weights)
        elif checkpoints is not None and state["best_epoch"] > 0:
            with checkpoints.store.local_copy(
                checkpoints.key(f"best-epoch-{state['best_epoch']:04d}.weights.h5")
            ) as path:
                model.load_weights(path)

    outcome = TrainingOutcome(
        model=model,
        hyperparameters=dict(hyperparameters),
        seed=seed,
        epochs_run=int(state["epoch"]),
        best_epoch=int(state["best_epoch"]),
        best_val_loss=float(state["best_val_loss"]),
        stopped_early=bool(state["stopped_early"]),
        resumed_from_epoch=resumed_from,
        seconds=time.perf_counter() - started,
        history=list(state["history"]),
    )
    log.info(
        "Trained %d epochs (best %d, val_loss %.4f) on %d rows in %.1f s%s",
        outcome.epochs_run,
        outcome.best_epoch,
        outcome.best_val_loss,
        len(x_train),
        outcome.seconds,
        f", resumed after epoch {resumed_from}" if resumed_from else "",
    )
    return outcome


def _layer_kernels(model: Any) -> dict[str, np.ndarray]:
    """Every weight of every layer (trainable or frozen), by layer and index."""
    return {
        f"{layer.name}[{i}]": np.array(weight)
        for layer in model.layers
        for i, weight in enumerate(layer.get_weights())
    }


def rehearse_model_spec(
    x: np.ndarray,
    y: np.ndarray,
    hyperparameters: dict[str, Any],
    *,
    seed: int,
    settings: dict[str, Any],
    checkpoints: CheckpointPlace,
    build_model: Callable[[int, dict[str, Any], int], Any] = build_churn_model,
) -> list[SpecCheck]:
    """The model spec's unit tests (I2), on a few rows before the full training.

    One optimizer step must move every weight of every layer; the loss on a batch
    must fall over a few steps; a tiny set (without dropout or L2) must be learnt
    by heart; a checkpoint must reload to identical predictions; and a training
    interrupted after its first epoch must resume to the same weights as one that
    ran through. ``build_model`` is the spec under test.
    """
    prepare_keras()
    rows = min(len(x), int(settings["spec_test_rows"]))
    x, y = x[:rows], y[:rows]
    batch = min(rows, int(hyperparameters["batch_size"]))
    checks: list[SpecCheck] = []

    seed_everything(seed)
    model = build_model(x.shape[1], hyperparameters, seed)
    before = _layer_kernels(model)
    model.train_on_batch(x[:batch], y[:batch])
    after = _layer_kernels(model)
    frozen = [name for name in before if np.array_equal(before[name], after[name])]
    checks.append(
        SpecCheck(
            "one step changes every weight",
            not frozen,
            float(len(frozen)),
            f"unchanged after one step: {frozen}"
            if frozen
            else f"all {len(before)} weight tensors moved",
        )
    )

    steps = int(settings["spec_test_steps"])
    first = float(model.evaluate(x[:batch], y[:batch], verbose=0))
    for _ in range(steps):
        model.train_on_batch(x[:batch], y[:batch])
    last = float(model.evaluate(x[:batch], y[:batch], verbose=0))
    checks.append(
        SpecCheck(
            "loss falls",
            last < first,
            last - first,
            f"batch loss {first:.4f} -> {last:.4f} over {steps} steps",
        )
    )

    # Capacity and gradient flow, not the step size: the first two checks already
    # hold the spec's own learning rate to account.
    tiny = min(rows, int(settings["overfit_rows"]))
    rate = max(
        float(hyperparameters["learning_rate"]),
        float(settings["overfit_min_learning_rate"]),
    )
    bare = {**hyperparameters, "dropout": 0.0, "l2": 0.0, "learning_rate": rate}
    seed_everything(seed)
    tiny_model = build_model(x.shape[1], bare, seed)
    for _ in range(int(settings["overfit_steps"])):
        tiny_model.train_on_batch(x[:tiny], y[:tiny])
    predicted = predict_probabilities(tiny_model, x[:tiny]) >= 0.5
    accuracy = float(np.mean(predicted == (y[:tiny] == 1)))
    wanted = float(settings["overfit_min_accuracy"])
    checks.append(
        SpecCheck(
            "a tiny set is overfit",
            accuracy >= wanted,
            accuracy,
            f"training accuracy {accuracy:.3f} on {tiny} rows after "
            f"{settings['overfit_steps']} steps at learning rate {rate:g} "
            f"(needs {wanted})",
        )
    )

    with tempfile.TemporaryDirectory(prefix="churnops-spec-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        checkpoints.store.upload(checkpoints.key("restore/model.keras"), path)
        keras = prepare_keras()
        with checkpoints.store.local_copy(checkpoints.key("restore/model.keras")) as p:
            restored = keras.models.load_model(p)
    diff = float(
        np.max(
            np.abs(predict_probabilities(model, x) - predict_probabilities(restored, x))
        )
    )
    checks.append(
        SpecCheck(
            "a checkpoint restores identical predictions",
            diff == 0.0,
            diff,
            f"largest prediction difference after reloading: {diff:.3g}",
        )
    )

    half = rows // 2
    args = (x[:half], y[:half], x[half:], y[half:], hyperparameters)
    options: dict[str, Any] = {"seed": seed, "max_epochs": 2, "patience": 2}
    through = train_churn_model(*args, **options)
    place = CheckpointPlace(checkpoints.store, checkpoints.key("resume"))
    with contextlib.suppress(TrainingInterrupted):
        train_churn_model(*args, **options, checkpoints=place, stop_after_epoch=1)
    resumed = train_churn_model(*args, **options, checkpoints=place)
    gap = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(
            through.model.get_weights(), resumed.model.get_weights(), strict=True
        )
    )
    resumed_ok = resumed.resumed_from_epoch == 1 and gap == 0.0
    checks.append(
        SpecCheck(
            "an interrupted training resumes",
            resumed_ok,
            gap,
            f"resumed after epoch {resumed.resumed_from_epoch}; largest weight "
            f"difference from an uninterrupted run: {gap:.3g}",
        )
    )
    log.info(
        "Model spec unit tests: %d of %d passed",
        sum(c.passed for c in checks),
        len(checks),
    )
    return checks
