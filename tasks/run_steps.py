"""Steps of a training run that join the data, model and release paths.

The data path's gates need a trained model; the release path's D6 check needs the
production history. These steps fetch what each side needs from storage and hand it
over, so neither path has to know the other's artifacts.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

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
    from tasks.registry import alias_history, get_version

    first_seen: dict[str, dt.date] = {}
    for move in alias_history(ctx.store, "production"):
        moved_on = dt.datetime.fromisoformat(move["at"]).date()
        spec = get_version(ctx.store, move["version"]).spec
        for name in spec.get("inputs", []):
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


def report_run_step(ctx: RunContext) -> dict[str, Any]:
    """Log the run's ML Test Score and return its headline figures."""
    from gates.cli import render_table
    from gates.scoring import report_for_run

    report = report_for_run(ctx.scores, ctx.run_id)
    log.info("ML Test Score of run %s\n%s", ctx.run_id, render_table(report))
    failed = [test.id for test in report.blocking_failures]
    if failed:
        log.warning(
            "Gates %s rejected this run's candidate; production was not changed. "
            "Read each gate's reason above and in its task log.",
            ", ".join(failed),
        )
    return {
        "final_score": report.final_score,
        "sections": report.sections,
        "failed_gates": failed,
        "model_version": report.model_version,
    }
