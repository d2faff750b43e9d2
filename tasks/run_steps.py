"""Steps of a training run that join the data, model and release paths.

The data path's gates need a trained model; the release path's D6 check needs the
production history. These steps fetch what each side needs from storage and hand it
over, so neither path has to know the other's artifacts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gates.result import GateResult, Verdict
from tasks.context import RunContext

log = logging.getLogger(__name__)


def start_run_step(ctx: RunContext) -> dict[str, Any]:
    """Register the run with its code commit and dataset before any work starts."""
    from tasks.lineage import read_spec_state

    code = read_spec_state()
    dataset = ctx.dataset
    ctx.scores.start_run(
        ctx.dag_id, ctx.run_id, code_commit=code.commit, dataset=dataset.name
    )
    log.info(
        "Run %s of %s on dataset %s at commit %s%s",
        ctx.run_id,
        ctx.dag_id,
        dataset.name,
        code.commit or "(no git checkout)",
        " with uncommitted changes" if code.dirty else "",
    )
    return {"dataset": dataset.name, "commit": code.commit, "dirty": code.dirty}


def validate_customers_step(
    ctx: RunContext, pseudonymized: Mapping[str, Any]
) -> dict[str, Any]:
    """D1 against the production model's suite, once there is a production model.

    A suite built from this batch's own training rows cannot notice that the batch
    changed: the categories and ranges production was trained on can. The first
    release has nothing to compare with and is held to its own suite and the
    contract's declared rules.
    """
    from tasks.data_steps import validate_customers_step as validate
    from tasks.registry import EXPECTATIONS, resolve_alias, version_key

    production = resolve_alias(ctx.store, "production")
    suite_key = version_key(production, EXPECTATIONS) if production else None
    if suite_key and not ctx.store.exists(suite_key):
        suite_key = None
    log.info(
        "Validating against %s",
        f"the suite of production {production}" if suite_key else "this run's suite",
    )
    return validate(ctx, pseudonymized, suite_key=suite_key)


def candidate_predictor(
    ctx: RunContext, features: Mapping[str, Any], trained: Mapping[str, Any]
) -> Callable[[pd.DataFrame], np.ndarray]:
    """``predict(frame)`` for the trained, not yet registered, candidate."""
    from tasks.features import FeatureTransform
    from tasks.model_spec import prepare_keras
    from tasks.train import predict_probabilities

    keras = prepare_keras()
    transform = FeatureTransform.from_json(ctx.store.read_text(features["transform"]))
    with ctx.store.local_copy(trained["candidate"]) as path:
        model = keras.models.load_model(path, compile=False)

    def predict(frame: pd.DataFrame) -> np.ndarray:
        return predict_probabilities(model, transform.transform(frame))

    return predict


def check_feature_value_step(
    ctx: RunContext, features: Mapping[str, Any], trained: Mapping[str, Any]
) -> dict[str, Any]:
    """D2 and D3 on the trained candidate."""
    from tasks.data_steps import check_feature_value_step as check_value

    return check_value(ctx, features, candidate_predictor(ctx, features, trained))


def production_inputs_since(ctx: RunContext) -> dict[str, dt.date]:
    """For each feature, the day a production model first read it."""
    from tasks.features import FeatureTransform
    from tasks.registry import alias_history, version_key

    first_seen: dict[str, dt.date] = {}
    for move in alias_history(ctx.store, "production"):
        moved_on = dt.datetime.fromisoformat(move["at"]).date()
        schema = ctx.store.read_text(version_key(move["version"], "transform.json"))
        for name in FeatureTransform.from_json(schema).inputs:
            first_seen.setdefault(name, moved_on)
    return first_seen


def check_feature_lead_time_step(
    ctx: RunContext, features: Mapping[str, Any]
) -> dict[str, Any]:
    """D6: how long declared features wait before a production model reads them."""
    from tasks.data_steps import check_feature_lead_time_step as check_lead_time

    return check_lead_time(
        ctx, features, production_inputs_since=production_inputs_since(ctx)
    )


def _sample_rows(frame: pd.DataFrame, label: str, rows: int, seed: int) -> pd.DataFrame:
    """Up to ``rows`` rows with every label class kept in proportion."""
    if len(frame) <= rows:
        return frame
    share = rows / len(frame)
    return frame.groupby(label, group_keys=False, observed=True).sample(
        frac=share, random_state=seed
    )


def _rehearsal_context(ctx: RunContext, scratch: Path, source: str) -> RunContext:
    model = ctx.model_config
    epochs = int(ctx.gate_setting("infrastructure", "integration_max_epochs"))
    search = {
        **model.search,
        "trials": int(ctx.gate_setting("infrastructure", "integration_search_trials")),
        "epochs_per_trial": epochs,
        "parallel_trials": 1,
    }
    training = {
        **model.training,
        "max_epochs": epochs,
    }
    # The rehearsal proves the steps fit together; a gate's verdict on a small sample
    # with a tiny search says nothing about this run's model, so none blocks here.
    gates = {
        section: {**values, "blocking_tests": []}
        for section, values in ctx.settings.gates.items()
    }
    settings = dataclasses.replace(
        ctx.settings,
        storage_root="file://" + str(scratch / "artifacts"),
        score_store_url=f"sqlite:///{scratch / 'scores.db'}",
        gates=gates,
    )
    return RunContext(
        settings=settings,
        dag_id=f"{ctx.dag_id}__rehearsal",
        run_id=ctx.run_id,
        params={**ctx.params, "source": source},
        clock=ctx.clock,
        model_config_override=dataclasses.replace(
            model, search=search, training=training
        ),
    )


def integration_test_pipeline_step(
    ctx: RunContext,
    ingested: Mapping[str, Any],
    key: bytes | None = None,
    allow_generated_key: bool = False,
) -> dict[str, Any]:
    """I3: the whole pipeline, same code, rehearsed on a sample of this run's rows.

    The rehearsal writes to a scratch store and score database, so its gates never
    mix with the real run's; only the I3 verdict is recorded here. It stops at the
    first broken step and names it.
    """
    from tasks import data_steps, deploy, model_steps
    from tasks.ingest import frame_to_parquet, read_frame

    sample_rows = int(ctx.gate_setting("infrastructure", "integration_sample_rows"))
    raw = read_frame(ctx.store, ingested["raw_snapshot"])
    sample = _sample_rows(
        raw, ctx.dataset.contract.label.column, sample_rows, ctx.model_config.seed
    )

    durations: dict[str, float] = {}
    failed: tuple[str, Exception] | None = None
    started = time.monotonic()
    # The sample's gate verdicts go to a scratch store; logged like the real run's,
    # they would read as this run's verdicts, so the rehearsal does not log them.
    store_log = logging.getLogger("gates.store")
    store_level = store_log.level
    store_log.setLevel(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory(prefix="churnops-rehearsal-") as tmp:
            scratch = Path(tmp)
            (scratch / "sample.parquet").write_bytes(frame_to_parquet(sample))
            rehearsal = _rehearsal_context(
                ctx, scratch, f"file://{scratch}/sample.parquet"
            )
            steps: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
                ("ingest", lambda r: data_steps.ingest_customers_step(rehearsal)),
                (
                    "pseudonymize",
                    lambda r: data_steps.pseudonymize_customers_step(
                        rehearsal,
                        r["ingest"],
                        key=key,
                        allow_generated_key=allow_generated_key,
                    ),
                ),
                (
                    "validate",
                    lambda r: data_steps.validate_customers_step(
                        rehearsal, r["pseudonymize"]
                    ),
                ),
                (
                    "build_features",
                    lambda r: data_steps.build_features_step(rehearsal, r["validate"]),
                ),
                (
                    "tune",
                    lambda r: model_steps.tune_model_step(
                        rehearsal, r["build_features"]
                    ),
                ),
                (
                    "train",
                    lambda r: model_steps.train_model_step(
                        rehearsal, r["build_features"]
                    ),
                ),
                (
                    "register",
                    lambda r: model_steps.register_model_step(
                        rehearsal, r["build_features"]
                    ),
                ),
                (
                    "stage",
                    lambda r: deploy.stage_model_step(
                        rehearsal, r["register"], r["build_features"]
                    ),
                ),
            ]
            outputs: dict[str, Any] = {}
            for name, run in steps:
                step_started = time.monotonic()
                try:
                    outputs[name] = run(outputs)
                except Exception as exc:  # any broken step fails the rehearsal
                    failed = (name, exc)
                    log.info("Rehearsal step %s failed: %s", name, exc, exc_info=True)
                    break
                durations[name] = round(time.monotonic() - step_started, 2)
            sample_verdicts = {
                row.test_id: row.verdict for row in rehearsal.scores.results()
            }
    finally:
        store_log.setLevel(store_level)
    elapsed = time.monotonic() - started

    details = {
        "sample_rows": len(sample),
        "step_seconds": durations,
        "sample_gate_verdicts": sample_verdicts,
    }
    if failed is None:
        result = GateResult(
            "I3",
            Verdict.PASS,
            f"the pipeline ran end to end on a {len(sample)}-row sample of this run "
            f"with the same code in {elapsed:.0f} s: {', '.join(durations)}",
            value=round(elapsed, 1),
            details=details,
        )
    else:
        broken_step, error = failed
        result = GateResult(
            "I3",
            Verdict.FAIL,
            f"the rehearsal on a {len(sample)}-row sample broke at step "
            f"{broken_step!r}: {type(error).__name__}: {error}",
            details={**details, "failed_step": broken_step},
        )
    ctx.record(result)
    ctx.stop_if_blocking("infrastructure", result)
    return {"I3": result.verdict.value, "seconds": round(elapsed, 1), **details}


def scan_privacy_step(
    ctx: RunContext, task_log_dir: Path | None = None
) -> dict[str, Any]:
    """D5 over everything the run wrote, its task logs included.

    Task logs are the artifact most likely to leak an identifier by accident (an
    error message quoting a row), so the run's log folder is copied next to its other
    artifacts, where it is kept with them and scanned like them.
    """
    from tasks.data_steps import scan_privacy_step as scan_artifacts

    copied = 0
    if task_log_dir is not None and task_log_dir.is_dir():
        for path in sorted(p for p in task_log_dir.rglob("*") if p.is_file()):
            relative = path.relative_to(task_log_dir).as_posix()
            ctx.store.write_bytes(ctx.key("logs", relative), path.read_bytes())
            copied += 1
    log.info("Copied %d task log file(s) of run %s for the scan", copied, ctx.run_id)

    # Beyond the run's folder: the model version it registered, and the prediction
    # log its canary traffic wrote today.
    from tasks.registry import version_key

    versions = [
        run.model_version
        for run in ctx.scores.runs()
        if (run.dag_id, run.run_id) == (ctx.dag_id, ctx.run_id) and run.model_version
    ]
    extra = [key for v in versions for key in ctx.store.list(version_key(v) + "/")]
    extra += ctx.store.list(f"predictions/{ctx.clock().date().isoformat()}/")
    return {**scan_artifacts(ctx, extra_keys=extra), "task_logs": copied}


def report_run_step(ctx: RunContext) -> dict[str, Any]:
    """Log the run's ML Test Score and whether its candidate reached production."""
    from gates.cli import render_table
    from gates.scoring import report_for_run
    from tasks.registry import resolve_alias

    report = report_for_run(ctx.scores, ctx.run_id, ctx.dag_id)
    log.info("ML Test Score of run %s\n%s", ctx.run_id, render_table(report))
    production = resolve_alias(ctx.store, "production")
    promoted = report.model_version is not None and production == report.model_version
    failed = [test.id for test in report.failures]
    if failed and promoted:
        log.warning(
            "Gates %s failed without blocking; %s was promoted. Read their reasons "
            "above and decide whether to roll back (churn_rollback).",
            ", ".join(failed),
            production,
        )
    elif failed:
        log.warning(
            "Gates %s failed; this run's candidate was not promoted and production "
            "still serves %s. Read each gate's reason above and in its task log.",
            ", ".join(failed),
            production or "no model yet",
        )
    return {
        "final_score": report.final_score,
        "sections": report.sections,
        "failed_gates": failed,
        "model_version": report.model_version,
        "promoted": promoted,
        "production": production,
    }
