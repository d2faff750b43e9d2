"""Benchmark: the model stage (tuning, training and its gates) against its bare fits.

For each table (the IBM Telco CSV and N synthetic customers) the same process runs
twice over the same features:

- **bare**: a plain script doing only the fits the stage needs (the random search,
  the final training, the reproducibility retrain, the logistic regression of M5 and
  the logistic regressions of the staleness windows), no storage and no gates;
- **stage**: the model steps as the DAG calls them (``tasks.model_steps``), with
  storage, checkpoints, every gate and the registration.

Target: the stage takes at most 1.5x the bare fits. Usage::

    .venv/bin/python bench/bench_model.py                 # Telco + 1,000,000 rows
    .venv/bin/python bench/bench_model.py --rows 100000 --skip-telco   # quick run
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tasks.config import PROJECT_ROOT, load_dataset, load_model_config, load_settings

TELCO_CSV = PROJECT_ROOT.parent / "shared" / "data" / "telco_customer_churn.csv"
TARGET_RATIO = 1.5


def _load_table(name: str, rows: int) -> tuple[Any, pd.DataFrame]:
    if name == "telco":
        dataset = load_dataset(PROJECT_ROOT / "config/datasets/telco.yaml")
        frame = pd.read_csv(TELCO_CSV)
        frame["TotalCharges"] = pd.to_numeric(
            frame["TotalCharges"].astype("string").str.strip(), errors="coerce"
        )
        return dataset, frame
    from tasks.synthetic import generate_customers

    dataset = load_dataset(PROJECT_ROOT / "config/datasets/synthetic.yaml")
    return dataset, generate_customers(rows, seed=7, drift=True)


def _model_yaml(tmp: Path, args: argparse.Namespace) -> Path:
    model = yaml.safe_load((PROJECT_ROOT / "config/model.yaml").read_text())
    model["search"].update(trials=args.trials, epochs_per_trial=args.epochs_per_trial)
    model["training"].update(max_epochs=args.max_epochs)
    path = tmp / "model.yaml"
    path.write_text(yaml.safe_dump(model))
    return path


def _timed(times: dict[str, float], name: str, fn: Any, *a: Any, **kw: Any) -> Any:
    started = time.perf_counter()
    try:
        return fn(*a, **kw)
    finally:
        times[name] = time.perf_counter() - started


def run_bare(
    parts: dict[str, pd.DataFrame],
    dataset: Any,
    model_path: Path,
    settings: dict[str, Any],
) -> dict[str, float]:
    """Only the fits: search, training, retrain, logistic regressions."""
    from tasks.baselines import fit_logistic_regression
    from tasks.features import encode_label, fit_features
    from tasks.staleness import measure_staleness_curve
    from tasks.train import predict_probabilities, train_churn_model
    from tasks.tune import search_hyperparameters

    config = load_model_config(model_path)
    times: dict[str, float] = {}
    transform = fit_features(parts["train"], dataset)
    x = {k: transform.transform(v) for k, v in parts.items()}
    y = {k: encode_label(v, dataset.contract.label) for k, v in parts.items()}
    trials = _timed(
        times,
        "tune",
        search_hyperparameters,
        x["train"],
        y["train"],
        x["validation"],
        y["validation"],
        config,
    )
    options = {
        "seed": config.seed,
        "max_epochs": int(config.training["max_epochs"]),
        "patience": int(config.training["patience"]),
    }
    for name in ("train", "reproducibility"):
        outcome = _timed(
            times,
            name,
            train_churn_model,
            x["train"],
            y["train"],
            x["validation"],
            y["validation"],
            trials[0]["hyperparameters"],
            **options,
        )
        predict_probabilities(outcome.model, x["holdout"])
    _timed(
        times,
        "simpler_model",
        fit_logistic_regression,
        x["train"],
        y["train"],
        config.seed,
    )
    if dataset.contract.event_date:
        _timed(
            times,
            "staleness",
            measure_staleness_curve,
            pd.concat(parts.values(), ignore_index=True),
            dataset,
            transform,
            windows=int(settings["staleness_windows"]),
            seed=config.seed,
        )
    return times


def run_stage(
    parts: dict[str, pd.DataFrame], dataset: Any, model_path: Path, tmp: Path
) -> tuple[dict[str, float], dict[str, str]]:
    """The model steps with storage, gates and registration, as the DAG runs them."""
    from gates.result import GateFailed
    from gates.store import ScoreStore
    from tasks import model_steps
    from tasks.context import RunContext
    from tasks.features import fit_features
    from tasks.storage import FileStore

    times: dict[str, float] = {}
    settings = dataclasses.replace(
        load_settings(environ={}),
        storage_root=str(tmp / "artifacts"),
        model_path=model_path,
        dataset_path=dataset.path,
    )
    ctx = RunContext(
        settings=settings,
        dag_id="bench_model",
        run_id=f"bench_{dataset.name}",
        params={"allow_dirty_spec": True},
        store_override=FileStore(tmp / "artifacts"),
        scores_override=ScoreStore.open(f"sqlite:///{tmp / 'scores.db'}"),
    )
    started = time.perf_counter()
    features: dict[str, str] = {}
    for name, frame in parts.items():
        buffer = io.BytesIO()
        frame.to_parquet(buffer)
        features[name] = ctx.key("features", f"{name}.parquet")
        ctx.store.write_bytes(features[name], buffer.getvalue())
    features["transform"] = ctx.key("features", "transform.json")
    ctx.store.write_text(
        features["transform"], fit_features(parts["train"], dataset).to_json()
    )
    times["store_features"] = time.perf_counter() - started
    steps = [
        ("M1", model_steps.check_model_spec_step),
        ("I2", model_steps.unit_test_model_spec_step),
        ("tune", model_steps.tune_model_step),
        ("train", model_steps.train_model_step),
        ("reproducibility", model_steps.check_reproducibility_step),
        ("simpler_model", model_steps.check_simpler_model_step),
        ("M6", model_steps.check_slices_step),
        ("M7", model_steps.check_inclusion_step),
        ("staleness", model_steps.check_staleness_step),
        ("I5", model_steps.trace_prediction_step),
        ("M2", model_steps.check_metric_correlation_step),
        ("I4", model_steps.validate_candidate_step),
        ("register", model_steps.register_model_step),
    ]
    for name, step in steps:
        with contextlib.suppress(GateFailed):
            _timed(times, name, step, ctx, features)
    verdicts = {
        r.test_id: f"{r.verdict}: {r.reason[:140]}"
        for r in ctx.scores.results(run_id=ctx.run_id)
    }
    return times, verdicts


def _warm_up(parts: dict[str, pd.DataFrame], dataset: Any) -> None:
    """Spawn a worker pool once so neither timed run pays the first cold start."""
    from tasks.features import encode_label, fit_features
    from tasks.tune import search_hyperparameters

    config = load_model_config(PROJECT_ROOT / "config/model.yaml")
    config = dataclasses.replace(
        config, search={**config.search, "trials": 2, "epochs_per_trial": 1}
    )
    sample = parts["train"].head(500)
    transform = fit_features(sample, dataset)
    x, y = transform.transform(sample), encode_label(sample, dataset.contract.label)
    search_hyperparameters(x, y, x, y, config)


def bench_table(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from tasks.data_steps import split_customers

    dataset, frame = _load_table(name, args.rows)
    config = load_model_config(PROJECT_ROOT / "config/model.yaml")
    positions = split_customers(frame, dataset, config)
    parts = {k: frame.iloc[v].reset_index(drop=True) for k, v in positions.items()}
    settings = load_settings(environ={}).gate_settings("model")
    with tempfile.TemporaryDirectory(prefix="churnops-bench-") as tmp_name:
        tmp = Path(tmp_name)
        model_path = _model_yaml(tmp, args)
        _warm_up(parts, dataset)
        bare = run_bare(parts, dataset, model_path, settings)
        stage, verdicts = run_stage(parts, dataset, model_path, tmp)
    bare_total, stage_total = sum(bare.values()), sum(stage.values())
    return {
        "table": dataset.name,
        "rows": len(frame),
        "bare_seconds": {k: round(v, 2) for k, v in bare.items()},
        "stage_seconds": {k: round(v, 2) for k, v in stage.items()},
        "bare_total": round(bare_total, 1),
        "stage_total": round(stage_total, 1),
        "ratio": round(stage_total / bare_total, 3),
        "target_ratio": TARGET_RATIO,
        "verdicts": verdicts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows",
        type=int,
        default=1_000_000,
        help="synthetic customers (default 1,000,000)",
    )
    parser.add_argument("--skip-telco", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs-per-trial", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--output", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from tasks.model_spec import prepare_keras

    prepare_keras(1)
    tables = [
        t
        for t, skip in (
            ("telco", args.skip_telco or not TELCO_CSV.exists()),
            ("synthetic", args.skip_synthetic),
        )
        if not skip
    ]
    results = [bench_table(t, args) for t in tables]
    for r in results:
        print(
            f"\n{r['table']} ({r['rows']:,} rows): bare fits {r['bare_total']} s, "
            f"stage {r['stage_total']} s, ratio {r['ratio']} (target <= "
            f"{TARGET_RATIO}): {'met' if r['ratio'] <= TARGET_RATIO else 'MISSED'}"
        )
        for step, seconds in r["stage_seconds"].items():
            bare = r["bare_seconds"].get(step)
            print(
                f"  {step:<16} stage {seconds:>8.2f} s"
                + (f"   bare {bare:>8.2f} s" if bare is not None else "")
            )
        for test, verdict in r["verdicts"].items():
            print(f"  {test}: {verdict}")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return 0 if all(r["ratio"] <= TARGET_RATIO for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
