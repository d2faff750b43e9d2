"""The data steps of a training run, as the DAG calls them.

Each step takes the run's :class:`~tasks.context.RunContext` and the small dict the
previous step returned, reads its inputs from storage, records its rubric rows and
returns artifact keys, counts and hashes. Layout under the run's prefix::

    raw/customers.parquet         the source as ingested (raw ids: never scanned out)
    data/customers.parquet        pseudonymized rows, direct identifiers dropped
    validation/suite.json         the GX suite (copied with the model)
    validation/result.json        the validation result, without identifier values
    validation/data_docs.html     the validation report
    features/{train,validation,holdout}.parquet, features/transform.json
    plots/feature_distributions.png, plots/correlation.png
    privacy/scan.json

A step that finds a blocking fault records the failed row first, then raises, so the
score store always says why a run stopped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from gates import data as data_gates
from gates.result import GateFailed, GateResult, Verdict, insufficient
from tasks.config import PROJECT_ROOT, DatasetConfig, ModelConfig
from tasks.context import RunContext
from tasks.features import (
    FeatureTransform,
    check_known_answers,
    encode_label,
    fit_features,
)
from tasks.ingest import (
    DataContractError,
    frame_to_parquet,
    hash_customers,
    ingest_customers,
    read_frame,
)
from tasks.privacy import (
    DeletionReport,
    collect_raw_identifiers,
    count_stored_customers,
    delete_customers,
    deletion_record,
    scan_artifacts,
)
from tasks.pseudonymize import (
    PrivacyError,
    pseudonymize_customers,
    resolve_pseudonymization_key,
)

log = logging.getLogger(__name__)

RAW_ZONE = "raw"
SPLITS = ("train", "validation", "holdout")


def _settings(ctx: RunContext) -> dict[str, Any]:
    return ctx.settings.gate_settings("data")


def _setting(ctx: RunContext, name: str) -> Any:
    return ctx.gate_setting("data", name)


def _blocking(ctx: RunContext, result: GateResult) -> None:
    ctx.stop_if_blocking("data", result)


# Ingestion and privacy ------------------------------------------------------------


def ingest_customers_step(ctx: RunContext) -> dict[str, Any]:
    """Read the dataset's source, hold it to the contract, store the raw snapshot.

    A broken contract records a failed D1 row and raises DataContractError; nothing
    is written, so earlier snapshots and the production model are untouched.
    """
    dataset = ctx.dataset
    source = str(ctx.params.get("source") or dataset.source)

    try:
        ingested = ingest_customers(source, dataset.contract, base=PROJECT_ROOT)
    except DataContractError as exc:
        ctx.record(data_gates.check_contract_failure(exc.problem, exc.column, str(exc)))
        raise

    snapshot = ctx.key(RAW_ZONE, "customers.parquet")
    ctx.store.write_bytes(snapshot, frame_to_parquet(ingested.frame))
    ctx.store.write_json(
        ctx.key(RAW_ZONE, "snapshot.json"),
        {
            "source": ingested.source,
            "rows": len(ingested.frame),
            "data_hash": ingested.data_hash,
            "columns": list(ingested.frame.columns),
        },
    )
    return {
        "raw_snapshot": snapshot,
        "rows": len(ingested.frame),
        "data_hash": ingested.data_hash,
        "source": ingested.source,
    }


def pseudonymize_customers_step(
    ctx: RunContext,
    ingested: Mapping[str, Any],
    *,
    key: bytes | None = None,
    environ: Mapping[str, str] | None = None,
    allow_generated_key: bool = False,
) -> dict[str, Any]:
    """Replace ids by keyed pseudonyms and drop direct identifiers.

    The key comes from ``key`` (the DAG passes the Airflow connection's secret), else
    ``CHURNOPS_PSEUDONYMIZATION_KEY``; without one the run is refused and a failed
    D5 row says why. ``allow_generated_key`` is for the embedded demo only.
    """
    try:
        secret = resolve_pseudonymization_key(
            environ, key=key, allow_generated_key=allow_generated_key
        )
    except PrivacyError as exc:
        ctx.record(
            GateResult("D5", Verdict.FAIL, str(exc), details={"stage": "pseudonymize"})
        )
        raise
    contract = ctx.dataset.contract
    raw = read_frame(ctx.store, ingested["raw_snapshot"])

    frame = pseudonymize_customers(raw, contract, secret)

    snapshot = ctx.key("data", "customers.parquet")
    data_hash = hash_customers(frame)
    ctx.store.write_bytes(snapshot, frame_to_parquet(frame))
    ctx.store.write_json(
        ctx.key("data", "snapshot.json"),
        {
            "rows": len(frame),
            "data_hash": data_hash,
            "raw_data_hash": ingested.get("data_hash"),
            "columns": list(frame.columns),
        },
    )
    return {
        "snapshot": snapshot,
        "rows": len(frame),
        "data_hash": data_hash,
        "dropped_columns": [c for c in contract.direct_identifiers if c in raw.columns],
    }


def scan_privacy_step(
    ctx: RunContext, extra_keys: Iterable[str] = ()
) -> dict[str, Any]:
    """D5: look for raw identifiers in everything the run wrote outside the raw zone.

    ``extra_keys`` adds artifacts written elsewhere (task logs copied to storage,
    prediction logs). The raw identifiers come from the run's raw snapshot.
    """
    contract = ctx.dataset.contract
    raw_prefix = ctx.key(RAW_ZONE) + "/"
    if not ctx.store.exists(raw_prefix + "customers.parquet"):
        result = ctx.record(
            insufficient(
                "D5",
                "no raw snapshot for this run (ingestion did not complete), so there "
                "are no source identifiers to scan for",
            )
        )
        return {"verdict": result.verdict.value, "scanned": 0, "findings": 0}
    raw = read_frame(ctx.store, raw_prefix + "customers.parquet")
    identifiers = collect_raw_identifiers(
        raw,
        [contract.id_column, *contract.direct_identifiers],
        max_values=int(_setting(ctx, "privacy_scan_max_ids")),
        min_chars=int(_setting(ctx, "privacy_min_identifier_chars")),
    )
    keys = [
        k
        for k in ctx.store.list(ctx.run_key + "/")
        if not k.startswith(raw_prefix) and not k.startswith(ctx.key("privacy"))
    ]
    keys += [k for k in extra_keys if k not in keys]

    findings, scanned = scan_artifacts(ctx.store, keys, identifiers)
    unmasked = _unmasked_columns(ctx, raw)

    result = ctx.record(
        data_gates.check_privacy(
            {f.key: f.count for f in findings},
            scanned=scanned,
            identifiers=len(identifiers),
            unmasked_columns=unmasked,
        )
    )
    report = ctx.key("privacy", "scan.json")
    ctx.store.write_json(
        report,
        {"verdict": result.verdict.value, "reason": result.reason, **result.details},
    )
    _blocking(ctx, result)
    return {
        "verdict": result.verdict.value,
        "scanned": scanned,
        "findings": len(findings),
        "report": report,
    }


def _unmasked_columns(ctx: RunContext, raw: pd.DataFrame) -> list[str]:
    contract = ctx.dataset.contract
    snapshot = ctx.key("data", "customers.parquet")
    if not ctx.store.exists(snapshot):
        return []
    frame = read_frame(ctx.store, snapshot)
    unmasked = [c for c in contract.direct_identifiers if c in frame.columns]
    if contract.id_column in frame.columns and len(frame):
        sample = frame[contract.id_column].astype("string").head(1000)
        raw_ids = set(raw[contract.id_column].astype("string"))
        if sample.isin(list(raw_ids)).any():
            unmasked.append(contract.id_column)
    return unmasked


def delete_customers_step(
    ctx: RunContext,
    customer_ids: Iterable[str],
    *,
    key: bytes | None = None,
    environ: Mapping[str, str] | None = None,
    allow_generated_key: bool = False,
    prefixes: Iterable[str] = ("runs/",),
) -> dict[str, Any]:
    """Honour a deletion request: remove the customers from every stored snapshot.

    The request is recorded under ``privacy/deletions/`` with pseudonyms only, and a
    D5 row says whether any of the customers is still stored afterwards.
    """
    secret = resolve_pseudonymization_key(
        environ, key=key, allow_generated_key=allow_generated_key
    )
    ids = sorted({str(c) for c in customer_ids})
    id_column = ctx.dataset.contract.id_column

    removed: dict[str, int] = {}
    pseudonyms: list[str] = []
    for prefix in prefixes:
        report = delete_customers(
            ctx.store, prefix, ids, id_column=id_column, key=secret
        )
        removed.update(report.removed_rows)
        pseudonyms = report.requested_pseudonyms
    remaining = sum(
        count_stored_customers(ctx.store, p, ids, id_column=id_column, key=secret)
        for p in prefixes
    )

    at = ctx.clock()
    record = f"privacy/deletions/{at.strftime('%Y%m%dT%H%M%S%f')}.json"
    ctx.store.write_text(
        record,
        deletion_record(DeletionReport(len(ids), removed, pseudonyms), at),
    )
    result = ctx.record(
        data_gates.check_deletion(len(ids), sum(removed.values()), remaining)
    )
    return {
        "record": record,
        "requested": len(ids),
        "removed_rows": sum(removed.values()),
        "snapshots": len(removed),
        "verdict": result.verdict.value,
    }


# Validation -----------------------------------------------------------------------


def split_customers(
    frame: pd.DataFrame, dataset: DatasetConfig, model: ModelConfig
) -> dict[str, np.ndarray]:
    """Row positions of the train, validation and holdout splits.

    With an event date the holdout is the newest rows, so it measures the model on
    the future it will serve; otherwise all splits are stratified by the label.
    """
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(frame))
    labels = frame[dataset.contract.label.column].astype("string").to_numpy()
    n_holdout = max(1, round(model.holdout_share * len(frame)))
    n_validation = max(1, round(model.validation_share * len(frame)))
    event = dataset.contract.event_date
    if event:
        order = np.argsort(frame[event].to_numpy(), kind="stable")
        holdout = np.sort(order[len(frame) - n_holdout :])
        rest = np.sort(order[: len(frame) - n_holdout])
    else:
        rest, holdout = train_test_split(
            positions,
            test_size=n_holdout,
            random_state=model.seed,
            stratify=labels,
        )
    train, validation = train_test_split(
        rest, test_size=n_validation, random_state=model.seed, stratify=labels[rest]
    )
    return {
        "train": np.sort(train),
        "validation": np.sort(validation),
        "holdout": np.sort(holdout),
    }


def validate_customers_step(
    ctx: RunContext,
    pseudonymized: Mapping[str, Any],
    *,
    suite_key: str | None = None,
) -> dict[str, Any]:
    """D1: validate the batch against the suite, storing the result and Data Docs.

    The run's own suite is always built from its training rows and the contract and
    stored under the run (the model copies it). The batch is validated against the
    suite at ``suite_key`` when given (the production model's), else against the
    run's own. Raises GateFailed after recording when an expectation fails.
    """
    from tasks.validation import (
        build_expectation_suite,
        render_validation_html,
        validate_customers,
    )

    dataset = ctx.dataset
    contract = dataset.contract
    given = json.loads(ctx.store.read_text(suite_key)) if suite_key else None
    frame = read_frame(ctx.store, pseudonymized["snapshot"])
    train = frame.iloc[split_customers(frame, dataset, ctx.model_config)["train"]]
    built = build_expectation_suite(
        train, dataset, range_tolerance=float(_setting(ctx, "range_tolerance"))
    )
    suite_out = ctx.key("validation", "suite.json")
    ctx.store.write_json(suite_out, built)
    suite = given or built

    identifiers = {contract.id_column, *contract.direct_identifiers}
    report = validate_customers(frame, suite, identifier_columns=identifiers)

    ctx.store.write_json(ctx.key("validation", "result.json"), report.result)
    docs = ctx.store.write_text(
        ctx.key("validation", "data_docs.html"),
        render_validation_html(report, title=f"{dataset.name}: {ctx.run_id}"),
    )
    result = ctx.record(
        data_gates.check_data_expectations(
            report.success,
            report.evaluated,
            [vars(f) for f in report.failures],
            report.summary(),
            evidence=docs,
        )
    )
    _blocking(ctx, result)
    return {
        "snapshot": pseudonymized["snapshot"],
        "suite": suite_out,
        "data_docs": docs,
        "expectations": report.evaluated,
        "rows": len(frame),
        "data_hash": pseudonymized.get("data_hash"),
    }


# Features -------------------------------------------------------------------------


def _previous_training(ctx: RunContext) -> tuple[str, pd.DataFrame | None]:
    pointer = f"datasets/{ctx.dataset.name}/latest_training.json"
    if not ctx.store.exists(pointer):
        return pointer, None
    previous = json.loads(ctx.store.read_text(pointer))
    if previous.get("run_key") == ctx.run_key or not ctx.store.exists(
        previous["train"]
    ):
        return pointer, None
    return pointer, read_frame(ctx.store, previous["train"])


def build_features_step(
    ctx: RunContext, validated: Mapping[str, Any]
) -> dict[str, Any]:
    """D4 and D7, then split the rows and fit the feature transform on training rows.

    Stores the splits (pseudonymized rows), the transform and the plots; raises
    GateFailed after recording when D4 or D7 fails.
    """
    from tasks.plots import plot_correlation_matrix, plot_feature_distributions

    dataset = ctx.dataset
    registry = ctx.record(data_gates.check_feature_registry(dataset))
    _blocking(ctx, registry)
    kinds = [dataset.features[name].kind for name in dataset.model_inputs]
    known = ctx.record(data_gates.check_feature_code(check_known_answers(kinds)))
    _blocking(ctx, known)
    frame = read_frame(ctx.store, validated["snapshot"])

    positions = split_customers(frame, dataset, ctx.model_config)
    splits = {
        name: frame.iloc[rows].reset_index(drop=True)
        for name, rows in positions.items()
    }
    transform = fit_features(splits["train"], dataset)

    keys = {name: ctx.key("features", f"{name}.parquet") for name in SPLITS}
    for name in SPLITS:
        ctx.store.write_bytes(keys[name], frame_to_parquet(splits[name]))
    transform_key = ctx.key("features", "transform.json")
    ctx.store.write_text(transform_key, transform.to_json())
    pointer, previous = _previous_training(ctx)
    inputs = list(dataset.model_inputs)
    plots = {
        "feature_distributions": ctx.store.write_bytes(
            ctx.key("plots", "feature_distributions.png"),
            plot_feature_distributions(splits["train"], previous, dataset, inputs),
        ),
        "correlation": ctx.store.write_bytes(
            ctx.key("plots", "correlation.png"),
            plot_correlation_matrix(splits["train"], dataset, inputs),
        ),
    }
    ctx.store.write_json(pointer, {"run_key": ctx.run_key, "train": keys["train"]})
    log.info(
        "Built features: %s rows, %d model input columns",
        {k: len(v) for k, v in splits.items()},
        len(transform.output_names),
    )
    return {
        **keys,
        "transform": transform_key,
        "plots": plots,
        "rows": {k: len(v) for k, v in splits.items()},
        "width": len(transform.output_names),
        "suite": validated.get("suite"),
        "data_hash": validated.get("data_hash"),
    }


# Feature value and lead time ------------------------------------------------------


def check_feature_value_step(
    ctx: RunContext,
    features: Mapping[str, Any],
    predict: Callable[[pd.DataFrame], np.ndarray],
) -> dict[str, Any]:
    """D2 and D3 for a trained candidate, given its ``predict(frame)`` on raw rows."""
    dataset = ctx.dataset
    validation = read_frame(ctx.store, features["validation"])
    transform = FeatureTransform.from_json(ctx.store.read_text(features["transform"]))
    labels = encode_label(validation, dataset.contract.label)

    baseline, importances = data_gates.measure_permutation_importance(
        predict,
        validation,
        labels,
        transform.inputs,
        repeats=int(_setting(ctx, "permutation_repeats")),
        seed=ctx.model_config.seed,
    )
    costs = data_gates.measure_feature_costs(transform, validation, dataset)

    evidence = features.get("plots", {}).get("correlation")
    d2 = data_gates.check_feature_importance(
        importances,
        baseline_auc=baseline,
        min_importance=float(_setting(ctx, "min_permutation_importance")),
    )
    d2 = ctx.record(dataclasses.replace(d2, evidence=evidence))
    d3 = ctx.record(
        data_gates.check_feature_cost(
            costs,
            {i.feature: i.mean for i in importances},
            max_width_share=float(_setting(ctx, "max_feature_width_share")),
            max_cost_per_importance=float(_setting(ctx, "max_cost_per_importance")),
            width_cost=float(_setting(ctx, "width_cost_per_column")),
            latency_cost=float(_setting(ctx, "latency_cost_per_microsecond")),
        )
    )
    report = ctx.key("features", "value.json")
    ctx.store.write_json(report, {"D2": d2.details, "D3": d3.details})
    _blocking(ctx, d2)
    _blocking(ctx, d3)
    return {
        "D2": d2.verdict.value,
        "D3": d3.verdict.value,
        "report": report,
        "baseline_auc": baseline,
    }


def prove_features_flow(
    frame: pd.DataFrame,
    dataset: DatasetConfig,
    new_features: Iterable[str],
    *,
    seed: int,
) -> dict[str, bool]:
    """Fit features and a quick logistic regression on a sample; see each new feature
    reach the model's inputs with a non-zero weight."""
    from sklearn.linear_model import LogisticRegression

    transform = fit_features(frame, dataset)
    matrix = transform.transform(frame)
    labels = encode_label(frame, dataset.contract.label)
    model = LogisticRegression(max_iter=200, random_state=seed).fit(matrix, labels)
    names = transform.output_names
    flowed = {}
    for feature in new_features:
        columns = [
            i
            for i, n in enumerate(names)
            if n == feature or n.startswith(f"{feature}=")
        ]
        flowed[feature] = bool(columns) and bool(np.any(model.coef_[0, columns] != 0))
    return flowed


def check_feature_lead_time_step(
    ctx: RunContext,
    features: Mapping[str, Any],
    *,
    production_inputs_since: Mapping[str, dt.date] | None = None,
) -> dict[str, Any]:
    """D6: lead time from declaration to production, and a sample run of new features.

    ``production_inputs_since`` maps each input of the production model to the date
    a production model first used it (empty before the first promotion); inputs not
    in it are new, counted until today, and proven to flow on a sample of rows.
    """
    dataset = ctx.dataset
    in_production = dict(production_inputs_since or {})
    today = ctx.clock().date()
    started = [r.started_at.date() for r in ctx.scores.runs() if r.dag_id == ctx.dag_id]
    tracking_since = min(started) if started else today

    leads = data_gates.measure_feature_lead_times(
        dataset, in_production, today=today, tracking_since=tracking_since
    )
    new = [name for name in dataset.model_inputs if name not in in_production]
    train = read_frame(ctx.store, features["train"])
    sample_rows = int(_setting(ctx, "sample_flow_rows"))
    sample = train.sample(
        min(sample_rows, len(train)), random_state=ctx.model_config.seed
    )
    flowed = prove_features_flow(sample, dataset, new, seed=ctx.model_config.seed)

    result = ctx.record(
        data_gates.check_feature_lead_time(
            leads,
            budget_days=int(_setting(ctx, "feature_lead_time_budget_days")),
            flowed=flowed,
        )
    )
    _blocking(ctx, result)
    return {
        "D6": result.verdict.value,
        "new_features": new,
        "longest_lead_days": result.value,
    }


__all__ = [
    "DataContractError",
    "GateFailed",
    "build_features_step",
    "check_feature_lead_time_step",
    "check_feature_value_step",
    "delete_customers_step",
    "ingest_customers_step",
    "prove_features_flow",
    "pseudonymize_customers_step",
    "scan_privacy_step",
    "split_customers",
    "validate_customers_step",
]
