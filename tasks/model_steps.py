"""The model steps of a training run, as the DAG calls them.

Each step takes the run's :class:`~tasks.context.RunContext` and the dict
``build_features_step`` returned (``train``, ``validation``, ``holdout`` and
``transform`` keys), reads what earlier model steps stored under the run, records its
rubric rows and returns a small JSON-able dict. Layout under the run's prefix::

    model/spec_tests/...            I2 scratch checkpoints
    model/tuning.json               every search trial (M3)
    model/checkpoints/...           per-epoch checkpoints and TensorBoard logs
    model/candidate.keras           the trained candidate
    model/training.json             hyperparameters, seed, history, lineage
    model/candidate_holdout.npy     the candidate's holdout predictions
    model/staleness.{json,png}      the staleness curve (M4)
    model/trace.{json,md}           one prediction traced (I5)
    model/validation.json           metrics of the candidate and production (I4)

Tests listed in ``gates.model.blocking_tests`` stop the run when they fail, after
their row is recorded; the others are recorded and scored only.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gates import infrastructure as infra_gates
from gates import model as model_gates
from gates.result import GateResult, insufficient
from tasks.config import DatasetConfig
from tasks.context import RunContext
from tasks.features import FeatureTransform, encode_label
from tasks.ingest import read_frame
from tasks.registry import (
    get_version,
    list_versions,
    load_model_version,
    load_predictor,
    register_model_version,
    resolve_alias,
)
from tasks.storage import ArtifactStore

log = logging.getLogger(__name__)

__all__ = [
    "check_inclusion_step",
    "check_metric_correlation_step",
    "check_model_spec_step",
    "check_reproducibility_step",
    "check_simpler_model_step",
    "check_slices_step",
    "check_staleness_step",
    "load_predictor",
    "register_model_step",
    "trace_prediction_step",
    "train_model_step",
    "tune_model_step",
    "unit_test_model_spec_step",
    "validate_candidate_step",
]


class ModelStepError(RuntimeError):
    """A model step is missing the inputs an earlier step should have stored."""

    retryable = False


# Shared plumbing -------------------------------------------------------------------


def _settings(ctx: RunContext) -> dict[str, Any]:
    return ctx.settings.gate_settings("model")


def _setting(ctx: RunContext, name: str) -> Any:
    return ctx.gate_setting("model", name)


def _finish(ctx: RunContext, result: GateResult) -> GateResult:
    """Record the result, then stop the run if it failed and the test blocks."""
    ctx.record(result)
    return ctx.stop_if_blocking("model", result)


def _summary(result: GateResult) -> dict[str, Any]:
    return {
        "test": result.test_id,
        "verdict": result.verdict.value,
        "value": result.value,
    }


def _read_json(ctx: RunContext, name: str, producer: str) -> Any:
    key = ctx.key("model", name)
    if not ctx.store.exists(key):
        raise ModelStepError(
            f"{ctx.store.uri(key)} does not exist; run {producer} first in this run"
        )
    return json.loads(ctx.store.read_text(key))


class _Rows:
    """The run's splits, matrices and labels, read once per step."""

    def __init__(self, ctx: RunContext, features: Mapping[str, Any]) -> None:
        missing = [
            k
            for k in ("train", "validation", "holdout", "transform")
            if k not in features
        ]
        if missing:
            raise ModelStepError(
                f"the features dict lacks {missing}; pass what build_features_step "
                f"returned (got keys {sorted(features)})"
            )
        self.dataset: DatasetConfig = ctx.dataset
        self.transform = FeatureTransform.from_json(
            ctx.store.read_text(features["transform"])
        )
        self.frames = {
            part: read_frame(ctx.store, features[part])
            for part in ("train", "validation", "holdout")
        }

    def x(self, part: str) -> np.ndarray:
        return self.transform.transform(self.frames[part])

    def y(self, part: str) -> np.ndarray:
        return encode_label(self.frames[part], self.dataset.contract.label)


def _threads() -> None:
    from tasks.model_spec import prepare_keras

    prepare_keras(1)


def _candidate_predictions(ctx: RunContext) -> np.ndarray:
    key = ctx.key("model", "candidate_holdout.npy")
    if not ctx.store.exists(key):
        raise ModelStepError(
            f"{ctx.store.uri(key)} does not exist; run train_model_step first"
        )
    return np.load(io.BytesIO(ctx.store.read_bytes(key)))


def _production_predictions(
    ctx: RunContext, frame: pd.DataFrame
) -> tuple[str | None, np.ndarray | None]:
    version = resolve_alias(ctx.store, "production")
    if version is None:
        return None, None
    return version, load_predictor(ctx.store, version)(frame)


# I2, M3, training, I1 --------------------------------------------------------------


def unit_test_model_spec_step(
    ctx: RunContext, features: Mapping[str, Any]
) -> dict[str, Any]:
    """I2: the spec's unit tests on a few training rows, at the centre of the space."""
    from tasks.model_spec import central_hyperparameters
    from tasks.train import CheckpointPlace, rehearse_model_spec

    _threads()
    rows = _Rows(ctx, features)
    config = ctx.model_config
    checks = rehearse_model_spec(
        rows.x("train"),
        rows.y("train"),
        central_hyperparameters(config.hyperparameters),
        seed=config.seed,
        settings=_settings(ctx),
        checkpoints=CheckpointPlace(ctx.store, ctx.key("model", "spec_tests")),
    )
    result = _finish(ctx, infra_gates.check_model_spec_tests(checks))
    return {**_summary(result), "checks": {c.name: c.passed for c in checks}}


def tune_model_step(ctx: RunContext, features: Mapping[str, Any]) -> dict[str, Any]:
    """M3: random search over the declared space; every trial stored."""
    from tasks.model_spec import ModelSpecError
    from tasks.tune import search_hyperparameters

    rows = _Rows(ctx, features)
    config = ctx.model_config
    key = ctx.key("model", "tuning.json")
    try:
        trials = search_hyperparameters(
            rows.x("train"),
            rows.y("train"),
            rows.x("validation"),
            rows.y("validation"),
            config,
        )
    except ModelSpecError:
        trials = []
    ctx.store.write_json(
        key,
        {
            "trials": trials,
            "space": {
                name: vars(spec) for name, spec in config.hyperparameters.items()
            },
        },
    )
    result = _finish(
        ctx,
        model_gates.check_hyperparameter_search(
            config, trials, evidence=ctx.store.uri(key)
        ),
    )
    best = trials[0]["hyperparameters"] if trials else None
    return {**_summary(result), "tuning": key, "best_hyperparameters": best}


def _best_hyperparameters(ctx: RunContext) -> dict[str, Any]:
    trials = _read_json(ctx, "tuning.json", "tune_model_step")["trials"]
    if not trials:
        raise ModelStepError("the hyperparameter search stored no trial to train with")
    return dict(trials[0]["hyperparameters"])


def _spec_state(ctx: RunContext) -> Any:
    from tasks.lineage import read_spec_state

    return read_spec_state()


def train_model_step(ctx: RunContext, features: Mapping[str, Any]) -> dict[str, Any]:
    """Train the candidate with the best hyperparameters; resumes after a kill.

    Checkpoints go under ``model/checkpoints`` of this run, so a retry of the task
    (same run) continues from the last finished epoch instead of the first.
    """
    from tasks.lineage import hash_frames
    from tasks.train import CheckpointPlace, predict_probabilities, train_churn_model

    state = _spec_state(ctx)
    allow = bool(ctx.params.get("allow_dirty_spec", _setting(ctx, "allow_dirty_spec")))
    if state.dirty and not allow:
        raise ModelStepError(
            f"refusing to train from uncommitted changes to {list(state.dirty_paths)}; "
            "commit them, or set the run Param allow_dirty_spec for a demo run"
        )
    _threads()
    rows = _Rows(ctx, features)
    config = ctx.model_config
    hyperparameters = _best_hyperparameters(ctx)
    outcome = train_churn_model(
        rows.x("train"),
        rows.y("train"),
        rows.x("validation"),
        rows.y("validation"),
        hyperparameters,
        seed=config.seed,
        max_epochs=int(config.training.get("max_epochs", 40)),
        patience=int(config.training.get("patience", 5)),
        checkpoints=CheckpointPlace(ctx.store, ctx.key("model", "checkpoints")),
        stop_after_epoch=ctx.params.get("stop_training_after_epoch"),
    )

    candidate_key = ctx.key("model", "candidate.keras")
    with tempfile.TemporaryDirectory(prefix="churnops-candidate-") as tmp:
        path = Path(tmp) / "candidate.keras"
        outcome.model.save(path)
        ctx.store.upload(candidate_key, path)
    holdout = predict_probabilities(outcome.model, rows.x("holdout"))
    buffer = io.BytesIO()
    np.save(buffer, holdout)
    ctx.store.write_bytes(ctx.key("model", "candidate_holdout.npy"), buffer.getvalue())
    summary = {
        **outcome.summary(),
        "data_hash": hash_frames(rows.frames),
        "spec_state": state.to_dict(),
        "rows": {k: len(v) for k, v in rows.frames.items()},
        "tensorboard": ctx.store.uri(ctx.key("model", "checkpoints", "tensorboard")),
    }
    ctx.store.write_json(ctx.key("model", "training.json"), summary)
    return {
        "candidate": candidate_key,
        "epochs": outcome.epochs_run,
        "best_epoch": outcome.best_epoch,
        "resumed_from_epoch": outcome.resumed_from_epoch,
        "holdout_auc": model_gates.roc_auc(rows.y("holdout"), holdout),
        "dirty_spec": state.dirty,
    }


def check_reproducibility_step(
    ctx: RunContext, features: Mapping[str, Any]
) -> dict[str, Any]:
    """I1: a second training on the same rows and seed, predictions compared."""
    from tasks.train import predict_probabilities, train_churn_model

    _threads()
    rows = _Rows(ctx, features)
    training = _read_json(ctx, "training.json", "train_model_step")
    config = ctx.model_config
    again = train_churn_model(
        rows.x("train"),
        rows.y("train"),
        rows.x("validation"),
        rows.y("validation"),
        training["hyperparameters"],
        seed=training["seed"],
        max_epochs=int(config.training.get("max_epochs", 40)),
        patience=int(config.training.get("patience", 5)),
    )
    second = predict_probabilities(again.model, rows.x("holdout"))
    result = _finish(
        ctx,
        infra_gates.check_reproducibility(
            _candidate_predictions(ctx),
            second,
            max_diff=float(_setting(ctx, "max_reproducibility_diff")),
            seed=training["seed"],
        ),
    )
    return _summary(result)


# M5, M6, M7 ------------------------------------------------------------------------


def check_simpler_model_step(
    ctx: RunContext, features: Mapping[str, Any]
) -> dict[str, Any]:
    """M5: logistic regression and the churn-rate table on the same holdout."""
    from tasks.baselines import (
        ChurnRateTable,
        churn_rate_slices,
        fit_logistic_regression,
    )

    rows = _Rows(ctx, features)
    y = rows.y("holdout")
    logistic = fit_logistic_regression(
        rows.x("train"), rows.y("train"), ctx.model_config.seed
    )
    groups = [
        g
        for g in _setting(ctx, "churn_rate_groups")
        if g in rows.frames["train"].columns
    ]
    table = ChurnRateTable(churn_rate_slices(rows.dataset, groups)).fit(
        rows.frames["train"], rows.y("train")
    )
    simple = {
        "logistic regression": model_gates.roc_auc(
            y, logistic.predict_proba(rows.x("holdout"))[:, 1]
        ),
        f"churn rate by {' x '.join(groups)}": model_gates.roc_auc(
            y, table.predict(rows.frames["holdout"])
        ),
    }
    candidate = model_gates.roc_auc(y, _candidate_predictions(ctx))
    result = _finish(
        ctx,
        model_gates.check_simpler_model(
            candidate,
            simple,
            margin=float(_setting(ctx, "simple_model_margin")),
            tie_verdict=str(_setting(ctx, "simple_model_tie_verdict")),
        ),
    )
    return {**_summary(result), "candidate_auc": candidate, "simple_auc": simple}


def check_slices_step(ctx: RunContext, features: Mapping[str, Any]) -> dict[str, Any]:
    """M6: AUC per declared slice: a floor, and a drop against production."""
    from tasks.baselines import slice_labels

    rows = _Rows(ctx, features)
    holdout = rows.frames["holdout"]
    version, production = _production_predictions(ctx, holdout)
    result = model_gates.check_slice_quality(
        rows.y("holdout"),
        _candidate_predictions(ctx),
        slice_labels(holdout, rows.dataset),
        production=production,
        floor=float(_setting(ctx, "min_slice_auc")),
        max_drop=float(_setting(ctx, "max_slice_auc_drop")),
        min_rows=int(_setting(ctx, "min_slice_rows")),
    )
    details = {**result.details, "production_version": version}
    result = _finish(ctx, GateResult(**{**vars(result), "details": details}))
    return {**_summary(result), "production_version": version}


def check_inclusion_step(
    ctx: RunContext, features: Mapping[str, Any]
) -> dict[str, Any]:
    """M7: equal opportunity, representation and proxies of protected attributes."""
    from tasks.baselines import proxy_strength

    rows = _Rows(ctx, features)
    holdout = rows.frames["holdout"]
    attributes = list(rows.dataset.protected_attributes)
    absent = [a for a in attributes if a not in holdout.columns]
    if absent:
        result = _finish(
            ctx,
            insufficient(
                "M7",
                f"protected attribute column(s) {absent} are not in the holdout "
                "rows, so inclusion cannot be measured; keep them (not as model "
                "inputs) through pseudonymization",
            ),
        )
        return _summary(result)
    groups = {a: holdout[a].astype("string").to_numpy(dtype=object) for a in attributes}
    proxies = {
        a: proxy_strength(rows.frames["train"], holdout, rows.dataset.model_inputs, a)
        for a in attributes
    }
    result = _finish(
        ctx,
        model_gates.check_inclusion(
            rows.y("holdout"),
            _candidate_predictions(ctx),
            groups,
            proxies,
            decision_threshold=float(_setting(ctx, "decision_threshold")),
            max_gap=float(_setting(ctx, "max_equal_opportunity_gap")),
            min_share=float(_setting(ctx, "min_group_share")),
            max_proxy_auc=float(_setting(ctx, "max_proxy_auc")),
            proxy_verdict=str(_setting(ctx, "proxy_verdict")),
            min_group_positives=int(_setting(ctx, "min_group_positives")),
        ),
    )
    return _summary(result)


# M4, I5 ----------------------------------------------------------------------------


def check_staleness_step(
    ctx: RunContext, features: Mapping[str, Any]
) -> dict[str, Any]:
    """M4: the quality-against-age curve (JSON + PNG) and the staleness budget."""
    from tasks.staleness import (
        STALENESS_MODEL,
        StalenessError,
        measure_staleness_curve,
        plot_staleness_curve,
    )

    rows = _Rows(ctx, features)
    max_drop = float(_setting(ctx, "max_staleness_auc_drop"))
    if not rows.dataset.contract.event_date:
        result = _finish(
            ctx,
            model_gates.check_staleness_curve(
                None,
                max_drop=max_drop,
                no_curve_reason=f"the {rows.dataset.name} contract declares no "
                "event date, so models cannot be aged; no staleness curve and no "
                "budget",
            ),
        )
        return {**_summary(result), "budget_days": None}
    frame = pd.concat(rows.frames.values(), ignore_index=True)
    try:
        curve = measure_staleness_curve(
            frame,
            rows.dataset,
            rows.transform,
            windows=int(_setting(ctx, "staleness_windows")),
            seed=ctx.model_config.seed,
        )
    except StalenessError as exc:
        log.info("No staleness curve: %s", exc)
        curve = []
    budget = model_gates.staleness_budget_days(curve, max_drop)
    json_key = ctx.key("model", "staleness.json")
    ctx.store.write_json(
        json_key,
        {
            "model": STALENESS_MODEL,
            "curve": curve,
            "budget_days": budget,
            "max_auc_drop": max_drop,
        },
    )
    if curve:
        ctx.store.write_bytes(
            ctx.key("model", "staleness.png"), plot_staleness_curve(curve, budget)
        )
    result = _finish(
        ctx,
        model_gates.check_staleness_curve(
            curve,
            max_drop=max_drop,
            evidence=ctx.store.uri(json_key),
            model_name=STALENESS_MODEL,
        ),
    )
    return {**_summary(result), "budget_days": budget, "curve": json_key}


def _load_candidate(ctx: RunContext) -> Any:
    from tasks.model_spec import prepare_keras

    keras = prepare_keras()
    key = ctx.key("model", "candidate.keras")
    if not ctx.store.exists(key):
        raise ModelStepError(f"{ctx.store.uri(key)} does not exist; train first")
    with ctx.store.local_copy(key) as path:
        return keras.models.load_model(path, compile=False)


def trace_prediction_step(
    ctx: RunContext, features: Mapping[str, Any]
) -> dict[str, Any]:
    """I5: one holdout customer traced from raw row to output, stored and rendered."""
    from tasks.explain import render_trace_markdown, trace_prediction

    _threads()
    rows = _Rows(ctx, features)
    model = _load_candidate(ctx)
    max_error = float(_setting(ctx, "max_attribution_error"))
    json_key, md_key = ctx.key("model", "trace.json"), ctx.key("model", "trace.md")
    try:
        trace: dict[str, Any] | None = trace_prediction(
            model,
            rows.transform,
            rows.frames["holdout"].iloc[[0]],
            rows.x("train").mean(axis=0),
            max_error=max_error,
            steps=_setting(ctx, "trace_steps"),
        )
    except (ValueError, KeyError) as exc:
        log.warning("Could not trace a prediction: %s", exc)
        trace = None
    if trace is not None:
        ctx.store.write_json(json_key, trace)
        ctx.store.write_text(md_key, render_trace_markdown(trace))
    result = _finish(
        ctx,
        infra_gates.check_prediction_trace(
            trace,
            max_error=max_error,
            evidence=ctx.store.uri(md_key) if trace is not None else None,
        ),
    )
    return {**_summary(result), "trace": json_key if trace else None}


# M1, M2 ----------------------------------------------------------------------------


def check_model_spec_step(
    ctx: RunContext, features: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """M1: the spec and config are committed; a dirty tree is refused or marked.

    The run Param ``allow_dirty_spec`` (the embedded demo sets it) only marks it.
    """
    state = _spec_state(ctx)
    allow = bool(ctx.params.get("allow_dirty_spec", _setting(ctx, "allow_dirty_spec")))
    result = _finish(ctx, model_gates.check_model_spec(state, allow_dirty=allow))
    if state.commit:
        ctx.scores.start_run(ctx.dag_id, ctx.run_id, code_commit=state.commit)
    return {**_summary(result), "commit": state.commit, "dirty": state.dirty}


def collect_version_metrics(store: ArtifactStore) -> list[model_gates.VersionMetrics]:
    """Offline holdout AUC and (when monitoring wrote it) online AUC per version."""
    collected = []
    for version in list_versions(store):
        stored = get_version(store, version)
        offline = stored.metrics.get("holdout_auc")
        if offline is None:
            continue
        online = (stored.online_metrics or {}).get("online_auc")
        collected.append(
            model_gates.VersionMetrics(
                version, float(offline), None if online is None else float(online)
            )
        )
    return collected


def check_metric_correlation_step(
    ctx: RunContext, features: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """M2: offline against online AUC across the registered versions."""
    result = _finish(
        ctx,
        model_gates.check_metric_correlation(
            collect_version_metrics(ctx.store),
            min_versions=int(_setting(ctx, "min_versions_for_correlation")),
            min_correlation=float(_setting(ctx, "min_offline_online_correlation")),
        ),
    )
    return _summary(result)


# I4 and registration ---------------------------------------------------------------


def known_answer_rows(
    pairs: list[dict[str, Any]], reference: pd.DataFrame
) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """Hand-made customers: declared values over the most common training row."""
    typical = {
        column: (
            reference[column].mode(dropna=True).iloc[0]
            if reference[column].notna().any()
            else None
        )
        for column in reference.columns
    }
    built = []
    for pair in pairs:
        sides = []
        for side in ("higher", "lower"):
            row = {**typical, **pair[side]}
            sides.append(pd.DataFrame([row], columns=list(reference.columns)))
        built.append((str(pair["name"]), sides[0], sides[1]))
    return built


def validate_candidate_step(
    ctx: RunContext, features: Mapping[str, Any]
) -> dict[str, Any]:
    """I4: candidate vs production on the holdout, known answers, audited override.

    The run Param ``override`` ({"by": who, "reason": why}) ships a failing
    candidate as a warning that names the person.
    """
    from tasks.train import binary_log_loss, predict_probabilities

    _threads()
    rows = _Rows(ctx, features)
    holdout, y = rows.frames["holdout"], rows.y("holdout")
    candidate_p = _candidate_predictions(ctx)
    candidate = {
        "auc": model_gates.roc_auc(y, candidate_p),
        "log_loss": binary_log_loss(y, candidate_p),
    }
    version, production_p = _production_predictions(ctx, holdout)
    production = None
    if production_p is not None:
        production = {
            "auc": model_gates.roc_auc(y, production_p),
            "log_loss": binary_log_loss(y, production_p),
        }
    model = _load_candidate(ctx)
    answers = []
    for name, higher, lower in known_answer_rows(
        list(_setting(ctx, "known_answers")), rows.frames["train"]
    ):
        p_high = predict_probabilities(model, rows.transform.transform(higher))[0]
        p_low = predict_probabilities(model, rows.transform.transform(lower))[0]
        answers.append(infra_gates.KnownAnswer(name, float(p_high), float(p_low)))
    result = infra_gates.check_candidate_quality(
        candidate,
        production,
        answers,
        min_auc=float(_setting(ctx, "min_auc")),
        max_auc_drop=float(_setting(ctx, "max_auc_drop")),
        max_log_loss_rise=float(_setting(ctx, "max_log_loss_rise")),
        override=ctx.params.get("override"),
    )
    ctx.store.write_json(
        ctx.key("model", "validation.json"),
        {
            **result.details,
            "production_version": version,
            "verdict": result.verdict,
        },
    )
    result = _finish(ctx, result)
    return {
        **_summary(result),
        "candidate": candidate,
        "production": production,
        "production_version": version,
    }


def register_model_step(ctx: RunContext, features: Mapping[str, Any]) -> dict[str, Any]:
    """Store the candidate as a model version with spec, metrics, schema and lineage."""
    from tasks.lineage import SpecState, build_lineage
    from tasks.model_spec import describe_model
    from tasks.train import binary_log_loss

    _threads()
    rows = _Rows(ctx, features)
    training = _read_json(ctx, "training.json", "train_model_step")
    model = _load_candidate(ctx)
    y, p = rows.y("holdout"), _candidate_predictions(ctx)
    staleness_key = ctx.key("model", "staleness.json")
    staleness = (
        json.loads(ctx.store.read_text(staleness_key))
        if ctx.store.exists(staleness_key)
        else {}
    )
    metrics = {
        "holdout_auc": model_gates.roc_auc(y, p),
        "holdout_log_loss": binary_log_loss(y, p),
        "holdout_rows": len(y),
        "best_val_loss": training["best_val_loss"],
        "epochs": training["epochs_run"],
        "staleness_budget_days": staleness.get("budget_days"),
    }
    lineage = build_lineage(
        data_hash=training["data_hash"],
        spec_state=SpecState(
            **{
                **training["spec_state"],
                "dirty_paths": tuple(training["spec_state"]["dirty_paths"]),
            }
        ),
        seed=int(training["seed"]),
        dataset=rows.dataset.name,
        run=ctx.run_key,
        extra={
            "training": ctx.store.uri(ctx.key("model", "training.json")),
            "tensorboard": training.get("tensorboard"),
        },
    )
    spec = {
        **describe_model(model, training["hyperparameters"]),
        "model_config": str(ctx.model_config.path),
    }
    version = register_model_version(
        ctx.store,
        model,
        rows.transform,
        spec=spec,
        metrics=metrics,
        lineage=lineage,
        clock=ctx.clock,
        expectations=(
            ctx.store.read_text(features["suite"]) if features.get("suite") else None
        ),
    )
    ctx.scores.start_run(
        ctx.dag_id,
        ctx.run_id,
        model_version=version,
        code_commit=lineage["commit"],
        dataset=rows.dataset.name,
    )
    return {"model_version": version, "holdout_auc": metrics["holdout_auc"]}


def load_model(store: ArtifactStore, version: str) -> Any:
    """The registry's loader, re-exported for the DAG and serving."""
    return load_model_version(store, version)
