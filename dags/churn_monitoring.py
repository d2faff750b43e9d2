"""
### churn_monitoring

Watches the model in production with the *Monitoring* section of the ML Test Score
(Mo1-Mo7): the prediction log of live traffic, the churn labels that arrived late,
and the production model itself. Each check writes its rubric row under the
production model's version, so `churnops report --model <version>` joins training
and monitoring.

- **Runs** daily, and whenever churn_training promotes a new production model (the
  `churnops_production_model` asset).
- **A check failed?** The *notify* task records a notification for each failure or
  warning and then fails the run; the check's row says what was measured and why.
- **No production model yet?** Every check records *insufficient evidence* with the
  reason.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    TaskGroup,
    dag,
    task,
)

# churn_training's promote task emits this asset; its name and URI must match there.
PRODUCTION_MODEL = Asset(
    name="churnops_production_model", uri="churnops://registry/production"
)

DEFAULT_ARGS = {
    "owner": "churnops",
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=20),
}

CHECKS = {
    "check_dependency_changes": (
        "check_dependency_changes_step",
        "Mo1: upstream volume, schema, freshness and packages against the last run.",
    ),
    "check_serving_invariants": (
        "check_serving_invariants_step",
        "Mo2: the model's expectation suite on logged serving inputs.",
    ),
    "check_training_serving_skew": (
        "check_training_serving_skew_step",
        "Mo3: serving features recomputed with the training code; PSI per input.",
    ),
    "check_model_staleness": (
        "check_model_staleness_step",
        "Mo4: age of the serving model against its M4 staleness budget.",
    ),
    "check_numerical_stability": (
        "check_numerical_stability_step",
        "Mo5: NaN or infinity in predictions, weights and loss; dead units.",
    ),
    "check_computing_performance": (
        "check_computing_performance_step",
        "Mo6: latency, throughput, memory and training time against history.",
    ),
    "check_prediction_quality": (
        "check_prediction_quality_step",
        "Mo7: AUC and calibration on labelled live traffic, overall and per slice.",
    ),
}


def step(
    task_id: str,
    target: str,
    doc: str,
    *,
    trigger_rule: str = "all_success",
    **inputs: Any,
) -> Any:
    """A task that runs ``tasks.monitoring_steps:<target>`` on its upstream results."""

    @task(task_id=task_id, doc_md=doc, trigger_rule=trigger_rule)
    def run(inputs: dict[str, Any]) -> Any:
        from _support import run_target

        return run_target(f"tasks.monitoring_steps:{target}", inputs)

    return run(inputs)


@dag(
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("@daily", timezone="UTC"),
        assets=[PRODUCTION_MODEL],
    ),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["churnops", "monitoring"],
    doc_md=__doc__,
)
def churn_monitoring() -> None:
    with TaskGroup("monitoring", tooltip="ML Test Score Mo1-Mo7"):
        collected = step(
            "collect_inputs",
            "collect_monitoring_inputs_step",
            "The production version, the window of live log and arrived labels.",
        )
        checks = {
            task_id: step(task_id, target, doc, collected=collected)
            for task_id, (target, doc) in CHECKS.items()
        }
        step(
            "notify",
            "notify_step",
            "Notify on failed or warning checks; fail the run if one failed.",
            trigger_rule="all_done",
            **checks,
        )


churn_monitoring_dag = churn_monitoring()
