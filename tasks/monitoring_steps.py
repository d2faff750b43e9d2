"""The monitoring steps (Mo1-Mo7), as the ``churn_monitoring`` DAG calls them.

:func:`collect_monitoring_inputs_step` finds the production version and the window
(the last ``window_days`` of the prediction log, rows tagged ``live``, and the labels
arrived by today) and registers the run with that version, so the report of a model
joins its training and monitoring rows. Each check step then reads what it needs,
records its rubric row and returns a small dict; :func:`notify_step` notifies on
failures and warnings and fails the run when a check failed. Stored here:

    monitoring/state.json            what Mo1 saw, for the next run to compare with
    monitoring/performance.json      Mo6 figures of recent runs
    runs/churn_monitoring/<run>/monitoring/*.json   each check's evidence

Without a production model every check records insufficient evidence with the
reason: there is nothing serving to monitor.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from gates import monitoring as gates
from gates.result import GateResult, Verdict, insufficient
from tasks.context import RunContext
from tasks.ingest import read_frame
from tasks.registry import get_version, resolve_alias, version_key
from tasks.storage import ArtifactStore

log = logging.getLogger(__name__)

STATE_KEY = "monitoring/state.json"
PERFORMANCE_KEY = "monitoring/performance.json"
LIVE_SOURCE = "live"
# Fields the service adds to each logged row; every other column is a logged input.
SERVICE_FIELDS = frozenset(
    {
        "request_id",
        "at",
        "customer_id",
        "churn_probability",
        "model_version",
        "alias",
        "status",
        "latency_ms",
        "source",
        "feature_hash",
    }
)
_KINDS = {"mixed-integer-float": "floating", "empty": "unknown"}


class MonitoringAlert(RuntimeError):
    """A monitoring check failed; its row and notification are already recorded."""

    retryable = False


# Plumbing --------------------------------------------------------------------------


def _setting(ctx: RunContext, name: str) -> Any:
    return ctx.gate_setting("monitoring", name)


def _summary(result: GateResult) -> dict[str, Any]:
    return {
        "test": result.test_id,
        "verdict": result.verdict.value,
        "value": result.value,
        "reason": result.reason,
    }


def _read_json(store: ArtifactStore, key: str, default: Any) -> Any:
    return json.loads(store.read_text(key)) if store.exists(key) else default


def _no_model(ctx: RunContext, test_id: str, collected: Mapping[str, Any]) -> bool:
    """Record insufficient evidence when nothing serves; True when it did."""
    if collected.get("model_version"):
        return False
    ctx.record(
        insufficient(
            test_id,
            collected.get("reason") or "no production model to monitor",
        )
    )
    return True


def _input_columns(rows: pd.DataFrame) -> list[str]:
    return [c for c in rows.columns if c not in SERVICE_FIELDS]


def _live_rows(ctx: RunContext, collected: Mapping[str, Any]) -> pd.DataFrame:
    """Logged live rows in the window, oldest first."""
    from serving.predlog import read_prediction_log

    rows = read_prediction_log(
        ctx.store,
        start=dt.date.fromisoformat(collected["window_start"]),
        end=dt.date.fromisoformat(collected["window_end"]),
        prefix=collected["log_prefix"],
    )
    if rows.empty or "source" not in rows.columns:
        return pd.DataFrame(columns=sorted(SERVICE_FIELDS))
    return rows[rows["source"] == LIVE_SOURCE].reset_index(drop=True)


def _served_by(rows: pd.DataFrame, version: str) -> pd.DataFrame:
    if rows.empty:
        return rows
    mask = (rows["model_version"] == version) & (rows["status"] == "ok")
    return rows[mask].reset_index(drop=True)


def _event_dates(ctx: RunContext, frame: pd.DataFrame) -> pd.Series:
    event = ctx.dataset.contract.event_date
    if not event or event not in frame.columns:
        return pd.Series(dtype="datetime64[ns]")
    return pd.to_datetime(frame[event], errors="coerce", utc=True).dt.tz_localize(None)


def _training_run(collected: Mapping[str, Any]) -> str:
    return str(collected["training_run"])


# Collect ---------------------------------------------------------------------------


def collect_monitoring_inputs_step(ctx: RunContext) -> dict[str, Any]:
    """Which version serves, the window of log and labels, and their row counts."""
    from serving.settings import load_serving_settings
    from tasks.labels import read_arrived_labels

    today = ctx.clock().astimezone(dt.UTC).date()
    window_days = int(_setting(ctx, "window_days"))
    window = {
        "today": today.isoformat(),
        "window_start": (today - dt.timedelta(days=window_days - 1)).isoformat(),
        "window_end": today.isoformat(),
        "log_prefix": load_serving_settings().log_prefix,
    }
    version = resolve_alias(ctx.store, "production")
    if version is None:
        ctx.scores.start_run(ctx.dag_id, ctx.run_id, dataset=ctx.dataset.name)
        reason = (
            "no production model yet (the production alias is unset), so there is "
            "nothing serving to monitor; promote a model with churn_training"
        )
        log.info("Monitoring: %s", reason)
        return {**window, "model_version": None, "reason": reason}

    stored = get_version(ctx.store, version)
    ctx.scores.start_run(
        ctx.dag_id,
        ctx.run_id,
        model_version=version,
        code_commit=stored.lineage.get("commit"),
        dataset=stored.lineage.get("dataset") or ctx.dataset.name,
    )
    collected = {
        **window,
        "model_version": version,
        "training_run": stored.lineage.get("run"),
    }
    rows = _live_rows(ctx, collected)
    labels = read_arrived_labels(ctx.store, until=today)
    log.info(
        "Monitoring %s: %d live rows from %s to %s, %d labels arrived",
        version,
        len(rows),
        window["window_start"],
        window["window_end"],
        len(labels),
    )
    return {**collected, "live_rows": len(rows), "labels": len(labels)}


# Mo1 -------------------------------------------------------------------------------


def _observe_upstream(
    ctx: RunContext, rows: pd.DataFrame, today: dt.date
) -> tuple[gates.UpstreamState, list[int], float | None]:
    """The upstream state, the counts of earlier complete days, and the age in days
    of the newest event."""
    from tasks.lineage import installed_packages

    columns = _input_columns(rows)
    schema = {
        c: _KINDS.get(k, k)
        for c in columns
        for k in [pd.api.types.infer_dtype(rows[c], skipna=True)]
    }
    days = rows["at"].dt.date if not rows.empty else pd.Series(dtype=object)
    complete = days[days < today]
    counts = complete.value_counts().sort_index()
    newest = _event_dates(ctx, rows).max() if not rows.empty else None
    age, newest_text = None, None
    if newest is not None and not pd.isna(newest):
        age = float((pd.Timestamp(today) - newest.normalize()).days)
        newest_text = str(newest.date())
    state = gates.UpstreamState(
        rows_per_day=float(counts.iloc[-1]) if len(counts) else None,
        schema=schema,
        newest_event=newest_text,
        packages=installed_packages(),
    )
    return state, [int(c) for c in counts.iloc[:-1]], age


def check_dependency_changes_step(
    ctx: RunContext, collected: Mapping[str, Any]
) -> dict[str, Any]:
    """Mo1: data contract and package set against the last run; notify on change."""
    from serving.app import logged_columns

    if _no_model(ctx, "Mo1", collected):
        return {"test": "Mo1", "verdict": Verdict.INSUFFICIENT.value}
    today = dt.date.fromisoformat(collected["today"])
    rows = _live_rows(ctx, collected)
    current, earlier_days, age = _observe_upstream(ctx, rows, today)

    stored = _read_json(ctx.store, STATE_KEY, {})
    if stored.get("current", {}).get("run_id") == ctx.run_id:
        previous_raw = stored.get("previous")  # a retry compares with the run before
    else:
        previous_raw = stored.get("current")
    previous = gates.UpstreamState.from_dict(previous_raw) if previous_raw else None
    expected: float | None
    if earlier_days:
        expected = float(np.median(earlier_days))
    else:
        expected = previous.rows_per_day if previous else None

    result = gates.check_dependency_changes(
        current,
        previous,
        expected_rows_per_day=expected,
        expected_columns=logged_columns(ctx.dataset),
        days_since_newest_event=age,
        min_volume_ratio=float(_setting(ctx, "min_volume_ratio")),
        max_event_age_days=float(_setting(ctx, "max_event_age_days")),
    )
    ctx.store.write_json(
        STATE_KEY,
        {
            "current": {
                **current.to_dict(),
                "run_id": ctx.run_id,
                "at": ctx.clock().isoformat(),
            },
            "previous": previous_raw,
        },
    )
    for change in result.details["changes"]:
        if change["kind"] == "package":
            message = (
                f"package {change['package']} changed from {change['before']} to "
                f"{change['after']} since the last monitoring run; check that "
                f"{collected['model_version']} still serves as trained"
            )
        else:
            message = (
                "the schema of the serving inputs changed since the last monitoring "
                f"run: {change['before']} -> {change['after']}"
            )
        ctx.scores.notify(
            "Mo1 dependency change", message, dag_id=ctx.dag_id, run_id=ctx.run_id
        )
    evidence = ctx.store.write_json(ctx.key("monitoring", "mo1.json"), result.details)
    result = ctx.record(_with_evidence(result, evidence))
    return {**_summary(result), "changes": len(result.details["changes"])}


def _with_evidence(result: GateResult, evidence: str) -> GateResult:
    return GateResult(**{**vars(result), "evidence": evidence})


# Mo2 -------------------------------------------------------------------------------


def serving_inputs_frame(ctx: RunContext, rows: pd.DataFrame) -> pd.DataFrame:
    """Logged inputs typed as the contract says where JSON lost the type: text
    columns become pandas strings and dates are parsed, unless a value is not text
    or does not parse (then the column stays as logged and the type expectation
    fails, as it should)."""
    frame = rows[_input_columns(rows)].copy()
    for name, spec in ctx.dataset.contract.columns.items():
        if name not in frame.columns:
            continue
        if spec.type in ("string", "category"):
            values = frame[name].dropna()
            if values.map(lambda v: isinstance(v, str)).all():
                frame[name] = frame[name].astype("string")
        elif spec.type == "date":
            parsed = pd.to_datetime(frame[name], errors="coerce", utc=True)
            if parsed.isna().sum() == frame[name].isna().sum():
                frame[name] = parsed.dt.tz_localize(None).astype("datetime64[ns]")
    return frame


def check_serving_invariants_step(
    ctx: RunContext, collected: Mapping[str, Any]
) -> dict[str, Any]:
    """Mo2: the model's own expectation suite (D1) on logged serving inputs.

    The suite's uniqueness rule on the id is left out: a customer is scored again
    on later days, so the log repeats ids by design.
    """
    from serving.app import logged_columns
    from tasks.validation import validate_customers

    if _no_model(ctx, "Mo2", collected):
        return {"test": "Mo2", "verdict": Verdict.INSUFFICIENT.value}
    from tasks.registry import EXPECTATIONS, version_key

    # The suite registered with the version; older versions kept it only in their
    # training run's folder.
    suite_key = version_key(collected["model_version"], EXPECTATIONS)
    if not ctx.store.exists(suite_key):
        suite_key = f"{_training_run(collected)}/validation/suite.json"
    if not ctx.store.exists(suite_key):
        result = ctx.record(
            insufficient(
                "Mo2",
                f"the expectation suite of {collected['model_version']} is not at "
                f"{ctx.store.uri(suite_key)}; its training run stored none",
            )
        )
        return _summary(result)
    suite = json.loads(ctx.store.read_text(suite_key))
    suite = {
        **suite,
        "expectations": [
            e
            for e in suite["expectations"]
            if e["type"] != "expect_column_values_to_be_unique"
        ],
    }
    rows = _live_rows(ctx, collected)
    contract = ctx.dataset.contract

    missing: list[str] = []
    evaluated, failures = 0, []
    if not rows.empty:
        frame = serving_inputs_frame(ctx, rows)
        missing = [c for c in logged_columns(ctx.dataset) if c not in frame.columns]
        report = validate_customers(
            frame,
            suite,
            identifier_columns={contract.id_column, *contract.direct_identifiers},
            require_all_columns=False,
        )
        evaluated, failures = report.evaluated, [vars(f) for f in report.failures]
        ctx.store.write_json(ctx.key("monitoring", "mo2_result.json"), report.result)
    result = gates.check_serving_invariants(
        rows=len(rows),
        evaluated=evaluated,
        failures=failures,
        missing_columns=missing,
        suite=ctx.store.uri(suite_key),
        evidence=ctx.store.uri(ctx.key("monitoring", "mo2_result.json"))
        if not rows.empty
        else None,
    )
    return _summary(ctx.record(result))


# Mo3 -------------------------------------------------------------------------------


def _production_transform(ctx: RunContext, version: str) -> Any:
    from tasks.features import FeatureTransform

    return FeatureTransform.from_json(
        ctx.store.read_text(version_key(version, "transform.json"))
    )


def check_training_serving_skew_step(
    ctx: RunContext, collected: Mapping[str, Any]
) -> dict[str, Any]:
    """Mo3: serving's feature hashes against the training transform recomputed on
    the logged inputs, and PSI per input between training rows and serving inputs."""
    from serving.predlog import hash_feature_rows

    if _no_model(ctx, "Mo3", collected):
        return {"test": "Mo3", "verdict": Verdict.INSUFFICIENT.value}
    version = str(collected["model_version"])
    transform = _production_transform(ctx, version)
    rows = _served_by(_live_rows(ctx, collected), version)

    hashed = (
        rows[rows["feature_hash"].notna()]
        if "feature_hash" in rows.columns
        else rows.iloc[:0]
    )
    differing, examples = 0, []
    if not hashed.empty:
        matrix = transform.transform(serving_inputs_frame(ctx, hashed))
        served = hashed["feature_hash"].astype(str).tolist()
        pairs = zip(served, hash_feature_rows(matrix), strict=True)
        mismatched = [i for i, (a, b) in enumerate(pairs) if a != b]
        differing = len(mismatched)
        examples = [str(hashed["request_id"].iloc[i]) for i in mismatched[:5]]

    psi: dict[str, float] = {}
    train_key = f"{_training_run(collected)}/features/train.parquet"
    if not rows.empty and ctx.store.exists(train_key):
        training = read_frame(ctx.store, train_key)
        bins = int(_setting(ctx, "psi_bins"))
        for feature in transform.inputs:
            if feature in training.columns and feature in rows.columns:
                psi[feature] = gates.population_stability_index(
                    training[feature],
                    rows[feature],
                    numeric=transform.kinds[feature] == "numeric",
                    bins=bins,
                )
    result = gates.check_training_serving_skew(
        compared=len(hashed),
        differing=differing,
        unhashed=len(rows) - len(hashed),
        psi=psi,
        max_skew_share=float(_setting(ctx, "max_skew_share")),
        psi_warn=float(_setting(ctx, "psi_warn")),
        psi_fail=float(_setting(ctx, "psi_fail")),
        examples=examples,
    )
    evidence = ctx.store.write_json(ctx.key("monitoring", "mo3.json"), result.details)
    result = ctx.record(_with_evidence(result, evidence))
    return {**_summary(result), "differing": differing, "compared": len(hashed)}


# Mo4 -------------------------------------------------------------------------------


def check_model_staleness_step(
    ctx: RunContext, collected: Mapping[str, Any]
) -> dict[str, Any]:
    """Mo4: days since the serving model was registered, and how far its newest
    training event lies behind the newest served event, against the M4 budget."""
    if _no_model(ctx, "Mo4", collected):
        return {"test": "Mo4", "verdict": Verdict.INSUFFICIENT.value}
    version = str(collected["model_version"])
    stored = get_version(ctx.store, version)
    budget = stored.metrics.get("staleness_budget_days")
    model_age = (ctx.clock() - stored.registered_at).total_seconds() / 86400.0

    data_age = None
    rows = _live_rows(ctx, collected)
    served = _event_dates(ctx, rows).max() if not rows.empty else None
    trained = None
    for part in ("train", "holdout"):
        key = f"{_training_run(collected)}/features/{part}.parquet"
        if ctx.store.exists(key):
            newest = _event_dates(ctx, read_frame(ctx.store, key)).max()
            if not pd.isna(newest):
                trained = newest if trained is None else max(trained, newest)
    if served is not None and trained is not None and not pd.isna(served):
        data_age = float((served - trained).days)

    result = ctx.record(
        gates.check_model_staleness(
            version=version,
            model_age_days=model_age,
            data_age_days=data_age,
            budget_days=None if budget is None else float(budget),
            warn_share=float(_setting(ctx, "staleness_warn_share")),
        )
    )
    return _summary(result)


# Mo5 -------------------------------------------------------------------------------


def _dead_units(model: Any, matrix: np.ndarray) -> tuple[int, int, dict[str, int]]:
    """ReLU units of Dense layers whose output is zero for every row."""
    from tasks.model_spec import prepare_keras

    keras = prepare_keras()
    layers = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Dense)
        and layer.get_config().get("activation") == "relu"
    ]
    if not layers or len(matrix) == 0:
        return 0, sum(int(layer.units) for layer in layers), {}
    probe = keras.Model(model.inputs[0], [layer.output for layer in layers])
    outputs = probe(matrix, training=False)
    outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
    by_layer = {
        layer.name: int(np.sum(np.max(np.asarray(out), axis=0) <= 0.0))
        for layer, out in zip(layers, outputs, strict=True)
    }
    return (
        sum(by_layer.values()),
        sum(int(layer.units) for layer in layers),
        by_layer,
    )


def _training_record(ctx: RunContext, training_run: str) -> dict[str, Any]:
    return dict(_read_json(ctx.store, f"{training_run}/model/training.json", {}))


def check_numerical_stability_step(
    ctx: RunContext, collected: Mapping[str, Any]
) -> dict[str, Any]:
    """Mo5: NaN or infinity in served predictions, weights and training loss; dead
    ReLU units on recent serving inputs."""
    from tasks.registry import load_model_version

    if _no_model(ctx, "Mo5", collected):
        return {"test": "Mo5", "verdict": Verdict.INSUFFICIENT.value}
    version = str(collected["model_version"])
    rows = _live_rows(ctx, collected)
    ok = rows[rows["status"] == "ok"] if not rows.empty else rows
    probabilities = pd.to_numeric(ok.get("churn_probability"), errors="coerce")
    probabilities = (
        probabilities.to_numpy(dtype=float) if len(ok) else np.zeros(0, dtype=float)
    )
    bad_predictions = int(
        np.sum(~np.isfinite(probabilities) | (probabilities < 0) | (probabilities > 1))
    )

    loaded = load_model_version(ctx.store, version)
    weights = [np.asarray(w) for w in loaded.model.get_weights()]
    n_weights = int(sum(w.size for w in weights))
    bad_weights = int(sum(np.sum(~np.isfinite(w)) for w in weights))
    history = _training_record(ctx, _training_run(collected)).get("history", [])
    losses = [
        float(v)
        for epoch in history
        for k, v in epoch.items()
        if "loss" in k and isinstance(v, int | float)
    ]
    sample = _served_by(rows, version).tail(int(_setting(ctx, "dead_unit_rows")))
    matrix = (
        loaded.transform.transform(serving_inputs_frame(ctx, sample))
        if len(sample)
        else np.zeros((0, len(loaded.transform.output_names)), dtype=np.float32)
    )
    dead, units, by_layer = _dead_units(loaded.model, matrix)

    figures = gates.StabilityFigures(
        predictions=len(probabilities),
        bad_predictions=bad_predictions,
        weights=n_weights,
        bad_weights=bad_weights,
        losses=len(losses),
        bad_losses=sum(not math.isfinite(v) for v in losses),
        units=units,
        dead_units=dead,
        dead_by_layer=by_layer,
    )
    result = ctx.record(
        gates.check_numerical_stability(
            figures, max_dead_unit_share=float(_setting(ctx, "max_dead_unit_share"))
        )
    )
    return _summary(result)


# Mo6 -------------------------------------------------------------------------------


def resident_memory_mb() -> float | None:
    """Resident memory of this process in MB (Linux), else the peak from rusage."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except (ImportError, OSError):
        return None


def probe_serving_performance(
    store: ArtifactStore, version: str, frame: pd.DataFrame, repeats: int
) -> dict[str, float | None]:
    """Load the version as the service does and predict one customer per call:
    the best rows per second over ``repeats`` passes, and the memory after."""
    from serving.router import load_served_model

    model = load_served_model(store, version)
    if frame.empty:
        return {"throughput_rows_per_s": None, "memory_mb": resident_memory_mb()}
    single_rows = [frame.iloc[[i]].reset_index(drop=True) for i in range(len(frame))]
    model.predict(single_rows[0])  # the first call builds the graph
    best = 0.0
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        for row in single_rows:
            model.predict(row)
        best = max(best, len(single_rows) / (time.perf_counter() - started))
    return {"throughput_rows_per_s": best, "memory_mb": resident_memory_mb()}


def check_computing_performance_step(
    ctx: RunContext, collected: Mapping[str, Any]
) -> dict[str, Any]:
    """Mo6: serving latency percentiles (log), throughput and memory (probe) and
    training time per epoch against the median of recent monitoring runs."""
    from serving.metrics import latency_percentiles

    if _no_model(ctx, "Mo6", collected):
        return {"test": "Mo6", "verdict": Verdict.INSUFFICIENT.value}
    version = str(collected["model_version"])
    rows = _served_by(_live_rows(ctx, collected), version)
    latencies = latency_percentiles(
        pd.to_numeric(rows["latency_ms"], errors="coerce").dropna() if len(rows) else []
    )
    probe_rows = serving_inputs_frame(ctx, rows.tail(int(_setting(ctx, "probe_rows"))))
    probe = probe_serving_performance(
        ctx.store, version, probe_rows, int(_setting(ctx, "probe_repeats"))
    )
    training = _training_record(ctx, _training_run(collected))
    epochs = int(training.get("epochs_run") or 0) - int(
        training.get("resumed_from_epoch") or 0
    )
    per_epoch = (
        float(training["seconds"]) / epochs
        if training.get("seconds") and epochs > 0
        else None
    )
    current: dict[str, float | None] = {
        "latency_p50_ms": latencies["p50_ms"],
        "latency_p95_ms": latencies["p95_ms"],
        "latency_p99_ms": latencies["p99_ms"],
        **probe,
        "training_seconds_per_epoch": per_epoch,
    }

    history = [
        h
        for h in _read_json(ctx.store, PERFORMANCE_KEY, [])
        if h.get("run_id") != ctx.run_id
    ]
    recent = history[-int(_setting(ctx, "history_runs")) :]
    result = gates.check_computing_performance(
        current,
        [h["figures"] for h in recent],
        max_ratios={k: float(v) for k, v in _setting(ctx, "max_ratios").items()},
        slack={k: float(v) for k, v in _setting(ctx, "slack").items()},
        max_p95_latency_ms=float(_setting(ctx, "max_p95_latency_ms")),
        min_history=int(_setting(ctx, "min_history")),
    )
    entry = {
        "run_id": ctx.run_id,
        "at": ctx.clock().isoformat(),
        "model_version": version,
        "rows": len(rows),
        "figures": current,
    }
    ctx.store.write_json(PERFORMANCE_KEY, [*history, entry][-100:])
    evidence = ctx.store.write_json(ctx.key("monitoring", "mo6.json"), result.details)
    result = ctx.record(_with_evidence(result, evidence))
    return {**_summary(result), "figures": current}


# Mo7 -------------------------------------------------------------------------------


def _quality(y: np.ndarray, p: np.ndarray, bins: int) -> gates.QualityFigures:
    from gates.model import roc_auc

    return gates.QualityFigures(
        rows=len(y),
        positives=int(np.sum(y)),
        auc=roc_auc(y, p) if len(y) else float("nan"),
        calibration_error=gates.expected_calibration_error(y, p, bins),
    )


def labelled_traffic(
    ctx: RunContext, rows: pd.DataFrame, labels: pd.DataFrame
) -> pd.DataFrame:
    """Served rows joined with their arrived labels on pseudonym and event date."""
    contract = ctx.dataset.contract
    if rows.empty or labels.empty:
        return rows.iloc[:0].assign(y=pd.Series(dtype=float))
    events = _event_dates(ctx, rows).dt.date.astype("string")
    keyed = rows.assign(_event=events.to_numpy())
    joined = keyed.merge(
        labels.rename(columns={"event_date": "_event"}),
        on=["customer_id", "_event"],
        how="inner",
    )
    y = (joined["label"].astype("string") == contract.label.positive).astype(float)
    return joined.assign(y=y.to_numpy())


def _reference_quality(
    ctx: RunContext, training_run: str, stored_auc: float | None, bins: int
) -> tuple[gates.QualityFigures, pd.DataFrame | None, np.ndarray | None]:
    """The version's holdout figures from its training run (AUC from the registry
    when the holdout predictions are gone)."""
    from tasks.features import encode_label

    holdout_key = f"{training_run}/features/holdout.parquet"
    predictions_key = f"{training_run}/model/candidate_holdout.npy"
    if ctx.store.exists(holdout_key) and ctx.store.exists(predictions_key):
        holdout = read_frame(ctx.store, holdout_key)
        p = np.load(io.BytesIO(ctx.store.read_bytes(predictions_key)))
        y = encode_label(holdout, ctx.dataset.contract.label)
        return _quality(y, p, bins), holdout, p
    figures = gates.QualityFigures(0, 0, float(stored_auc or "nan"), float("nan"))
    return figures, None, None


def check_prediction_quality_step(
    ctx: RunContext, collected: Mapping[str, Any]
) -> dict[str, Any]:
    """Mo7: AUC and calibration on labelled live traffic, overall and per slice,
    against the version's holdout; the online AUC is stored for M2."""
    from tasks.baselines import slice_labels
    from tasks.features import encode_label
    from tasks.labels import read_arrived_labels
    from tasks.registry import write_online_metrics

    if _no_model(ctx, "Mo7", collected):
        return {"test": "Mo7", "verdict": Verdict.INSUFFICIENT.value}
    version = str(collected["model_version"])
    bins = int(_setting(ctx, "calibration_bins"))
    today = dt.date.fromisoformat(collected["today"])
    rows = _served_by(_live_rows(ctx, collected), version)
    labels = read_arrived_labels(ctx.store, until=today)
    joined = labelled_traffic(ctx, rows, labels)
    y = joined["y"].to_numpy(dtype=float)
    p = pd.to_numeric(joined.get("churn_probability"), errors="coerce")
    p = p.to_numpy(dtype=float) if len(joined) else np.zeros(0)
    online = _quality(y, p, bins)

    stored = get_version(ctx.store, version)
    reference, holdout, holdout_p = _reference_quality(
        ctx, _training_run(collected), stored.metrics.get("holdout_auc"), bins
    )
    slices: dict[str, tuple[gates.QualityFigures, gates.QualityFigures]] = {}
    if len(joined) and holdout is not None and holdout_p is not None:
        live_groups = slice_labels(serving_inputs_frame(ctx, joined), ctx.dataset)
        holdout_groups = slice_labels(holdout, ctx.dataset)
        holdout_y = encode_label(holdout, ctx.dataset.contract.label)
        for column, groups in live_groups.items():
            for group in sorted(set(groups)):
                mine, theirs = groups == group, holdout_groups[column] == group
                slices[f"{column}={group}"] = (
                    _quality(y[mine], p[mine], bins),
                    _quality(holdout_y[theirs], holdout_p[theirs], bins),
                )
    result = gates.check_prediction_quality(
        online,
        reference,
        slices,
        max_auc_drop=float(_setting(ctx, "max_auc_drop")),
        max_calibration_rise=float(_setting(ctx, "max_calibration_rise")),
        max_slice_auc_drop=float(_setting(ctx, "max_slice_auc_drop")),
        min_rows=int(_setting(ctx, "min_labelled_rows")),
        min_slice_rows=int(_setting(ctx, "min_slice_rows")),
    )
    evidence = ctx.store.write_json(ctx.key("monitoring", "mo7.json"), result.details)
    result = ctx.record(_with_evidence(result, evidence))
    if result.verdict is not Verdict.INSUFFICIENT:
        write_online_metrics(
            ctx.store,
            version,
            {
                "online_auc": online.auc,
                "calibration_error": online.calibration_error,
                "labelled_rows": online.rows,
                "window": [collected["window_start"], collected["window_end"]],
                "measured_at": ctx.clock().isoformat(),
                "run": ctx.run_key,
            },
        )
    return {**_summary(result), "online_auc": online.auc, "labelled": online.rows}


# Notifications ---------------------------------------------------------------------


def notify_step(ctx: RunContext, **checks: Any) -> dict[str, Any]:
    """Notify on each failed or warning check, then fail the run if one failed.

    Mo1's changes were notified by its own step; its warning is not repeated.
    """
    flagged = {
        name: check
        for name, check in checks.items()
        if isinstance(check, Mapping)
        and check.get("verdict") in (Verdict.FAIL.value, Verdict.WARN.value)
    }
    for check in flagged.values():
        if check.get("test") == "Mo1" and check["verdict"] == Verdict.WARN.value:
            continue
        ctx.scores.notify(
            f"{check.get('test')} {check['verdict']}",
            str(check.get("reason") or "see the score store"),
            severity="error" if check["verdict"] == Verdict.FAIL.value else "warning",
            dag_id=ctx.dag_id,
            run_id=ctx.run_id,
        )
    failed = sorted(
        str(c.get("test")) for c in flagged.values() if c["verdict"] == "fail"
    )
    verdicts = {
        str(c.get("test")): c.get("verdict")
        for c in checks.values()
        if isinstance(c, Mapping)
    }
    log.info("Monitoring verdicts: %s", verdicts)
    if failed and bool(_setting(ctx, "fail_run_on_failure")):
        raise MonitoringAlert(
            f"monitoring check(s) {failed} failed; their rows and notifications are "
            "recorded (churnops report, or the ML Test Score page, says why)"
        )
    return {"verdicts": verdicts, "notified": len(flagged)}
