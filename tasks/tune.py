"""Random search over the hyperparameter space declared in ``config/model.yaml`` (M3).

Trials run in worker processes (spawned, so none inherits a half-started TensorFlow),
each with one TensorFlow thread, ``parallel_trials`` at a time: on two cores two
trials finish in about the time of one. The rows reach the workers as one ``.npz``
file, not pickled per trial.
"""

from __future__ import annotations

import logging
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from tasks.config import ModelConfig
from tasks.model_spec import check_search_space, sample_hyperparameters

log = logging.getLogger(__name__)

# Redraws of one hyperparameter before accepting that its range has a single value.
MAX_REDRAWS = 50


def draw_trials(config: ModelConfig) -> list[dict[str, Any]]:
    """The search's hyperparameter samples, fixed by the model seed."""
    check_search_space(config)
    rng = np.random.default_rng([config.seed, 1])
    count = int(config.search.get("trials", 0))
    trials = [sample_hyperparameters(config.hyperparameters, rng) for _ in range(count)]
    # Pure chance can leave a small choice (1 to 3 layers, three batch sizes) at one
    # value over a short search; redraw it in later trials until it varies, so every
    # declared range is explored whenever the search has two trials or more.
    for name in config.hyperparameters:
        single = {name: config.hyperparameters[name]}
        for trial in trials[1:]:
            if len({repr(t[name]) for t in trials}) > 1:
                break
            for _ in range(MAX_REDRAWS):
                trial[name] = sample_hyperparameters(single, rng)[name]
                if repr(trial[name]) != repr(trials[0][name]):
                    break
    return trials


def _start_worker() -> None:
    from tasks.model_spec import prepare_keras

    prepare_keras(1)


def run_trial(
    data_path: str, trial: int, hyperparameters: dict[str, Any], options: dict[str, Any]
) -> dict[str, Any]:
    """Train one sample briefly and score it on validation rows."""
    from gates.model import roc_auc
    from tasks.model_spec import prepare_keras
    from tasks.train import predict_probabilities, train_churn_model

    prepare_keras(1)
    started = time.perf_counter()
    with np.load(data_path) as data:
        arrays = {name: data[name] for name in data.files}
    outcome = train_churn_model(
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_val"],
        arrays["y_val"],
        hyperparameters,
        seed=int(options["seed"]) + trial,
        max_epochs=int(options["epochs"]),
        patience=int(options["patience"]),
    )
    p_val = predict_probabilities(outcome.model, arrays["x_val"])
    return {
        "trial": trial,
        "hyperparameters": hyperparameters,
        "val_auc": roc_auc(arrays["y_val"], p_val),
        "val_loss": outcome.best_val_loss,
        "epochs": outcome.epochs_run,
        "seconds": round(time.perf_counter() - started, 3),
    }


def search_hyperparameters(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: ModelConfig,
) -> list[dict[str, Any]]:
    """Run every trial and return their results, best validation AUC first."""
    samples = draw_trials(config)
    search = config.search
    max_rows = int(search.get("max_rows", len(x_train)))
    if len(x_train) > max_rows:
        keep = np.random.default_rng([config.seed, 2]).choice(
            len(x_train), max_rows, replace=False
        )
        keep.sort()
        x_train, y_train = x_train[keep], y_train[keep]
    options = {
        "seed": config.seed,
        "epochs": int(search.get("epochs_per_trial", 8)),
        "patience": int(search.get("patience", 3)),
    }
    workers = max(1, min(int(search.get("parallel_trials", 1)), len(samples)))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="churnops-tune-") as tmp:
        data_path = str(Path(tmp) / "rows.npz")
        np.savez(data_path, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
        if workers == 1:
            results = [
                run_trial(data_path, i, hp, options) for i, hp in enumerate(samples)
            ]
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                workers, mp_context=context, initializer=_start_worker
            ) as pool:
                futures = [
                    pool.submit(run_trial, data_path, i, hp, options)
                    for i, hp in enumerate(samples)
                ]
                results = [future.result() for future in futures]
    results.sort(key=lambda r: -np.nan_to_num(r["val_auc"], nan=-1.0))
    log.info(
        "Searched %d hyperparameter samples on %d rows with %d workers in %.1f s; "
        "best validation AUC %.4f",
        len(results),
        len(x_train),
        workers,
        time.perf_counter() - started,
        results[0]["val_auc"] if results else float("nan"),
    )
    return results
