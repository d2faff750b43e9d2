"""
### churn_training

Retrains the churn model and proves, gate by gate, that it is fit for production.
Each task group is a section of the ML Test Score, and each gate writes its rubric
row (points and verdict) to the score store. A gate that rejects the candidate fails
its task, so the candidate is never registered and production keeps serving.

- **Trigger** with Params to train on another dataset config or source.
- **Score**: the *ML Test Score* page, or `churnops report --run <run id>`.
- **Gate failed?** Its task log and score row say what was measured and why.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Asset, Param, TaskGroup, dag, task

# Updated whenever production changes; churn_monitoring runs on it.
PRODUCTION_MODEL = Asset(
    name="churnops_production_model", uri="churnops://registry/production"
)

DEFAULT_ARGS = {
    "owner": "churnops",
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=20),
}


def step(
    task_id: str,
    target: str,
    doc: str,
    *,
    trigger_rule: str = "all_success",
    outlets: list[Asset] | None = None,
    **inputs: Any,
) -> Any:
    """A task that runs the churnops step ``target`` on its upstream results."""

    @task(task_id=task_id, doc_md=doc, trigger_rule=trigger_rule, outlets=outlets or [])
    def run(inputs: dict[str, Any]) -> Any:
        from _support import run_target

        return run_target(target, inputs)

    return run(inputs)


@dag(
    schedule="@weekly",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["churnops", "training"],
    doc_md=__doc__,
    params={
        "dataset": Param(
            "",
            type="string",
            title="Dataset config",
            description="A file such as config/datasets/telco.yaml; empty: the default",
        ),
        "source": Param(
            "",
            type="string",
            title="Source override",
            description="A file://, gs:// or synthetic:// URI instead of the dataset's",
        ),
        "allow_dirty_spec": Param(
            None,
            type=["null", "boolean"],
            title="Allow an uncommitted model spec",
            description="Mark (M1) instead of refusing a spec with uncommitted "
            "changes; empty: gates.model.allow_dirty_spec",
        ),
        "override_reason": Param(
            "",
            type="string",
            title="Override a failed quality check (I4)",
            description="Ship a candidate that failed I4 anyway: why. Recorded with "
            "your user name; every failed check stays in the score row",
        ),
    },
)
def churn_training() -> None:
    data = TaskGroup("features_and_data", tooltip="ML Test Score D1-D7")
    model = TaskGroup("model_development", tooltip="ML Test Score M1-M7")
    infrastructure = TaskGroup("ml_infrastructure", tooltip="ML Test Score I1-I7")

    started = step(
        "start_run",
        "tasks.run_steps:start_run_step",
        "Register the run with its code commit and dataset.",
    )

    with data:
        ingested = step(
            "ingest",
            "tasks.data_steps:ingest_customers_step",
            "Read the source against the data contract; snapshot it with its hash.",
            started=started,
        )
        pseudonymized = step(
            "pseudonymize",
            "tasks.data_steps:pseudonymize_customers_step",
            "D5: keyed pseudonyms for customer ids; direct identifiers dropped.",
            ingested=ingested,
        )
        validated = step(
            "validate",
            "tasks.run_steps:validate_customers_step",
            "D1: the batch against the expectation suite; Data Docs stored.",
            pseudonymized=pseudonymized,
        )
        features = step(
            "build_features",
            "tasks.data_steps:build_features_step",
            "D4, D7: registry check, split, feature transform and its known answers.",
            validated=validated,
        )

    with model:
        spec_checked = step(
            "check_model_spec",
            "tasks.model_steps:check_model_spec_step",
            "M1: the spec is committed; the commit joins the model's lineage.",
            started=started,
        )
        tuned = step(
            "tune",
            "tasks.model_steps:tune_model_step",
            "M3: random search over every declared hyperparameter range.",
            features=features,
        )

    with infrastructure:
        spec_tested = step(
            "unit_test_model_spec",
            "tasks.model_steps:unit_test_model_spec_step",
            "I2: one step learns, loss falls, tiny set overfit, checkpoint restores.",
            features=features,
        )

    with model:
        trained = step(
            "train",
            "tasks.model_steps:train_model_step",
            "Train the candidate; checkpointed each epoch, resumes after a crash.",
            features=features,
            tuned=tuned,
        )
    spec_tested >> trained
    spec_checked >> trained

    with model:
        model_gates = [
            step(
                "check_simpler_model",
                "tasks.model_steps:check_simpler_model_step",
                "M5: logistic regression and a stochastic baseline on the holdout.",
                features=features,
                trained=trained,
            ),
            step(
                "check_slices",
                "tasks.model_steps:check_slices_step",
                "M6: per-slice floor and drop against production.",
                features=features,
                trained=trained,
            ),
            step(
                "check_inclusion",
                "tasks.model_steps:check_inclusion_step",
                "M7: equal opportunity, representation and proxies.",
                features=features,
                trained=trained,
            ),
            step(
                "check_staleness",
                "tasks.model_steps:check_staleness_step",
                "M4: quality against model age; sets the staleness budget.",
                features=features,
            ),
            step(
                "check_metric_correlation",
                "tasks.model_steps:check_metric_correlation_step",
                "M2: offline against online metrics across versions.",
                trained=trained,
            ),
        ]

    with infrastructure:
        infrastructure_gates = [
            step(
                "check_reproducibility",
                "tasks.model_steps:check_reproducibility_step",
                "I1: a second training on the same data and seed.",
                features=features,
                trained=trained,
                tuned=tuned,
            ),
            step(
                "trace_prediction",
                "tasks.model_steps:trace_prediction_step",
                "I5: one customer traced through features and layers.",
                features=features,
                trained=trained,
            ),
            step(
                "validate_candidate",
                "tasks.model_steps:validate_candidate_step",
                "I4: candidate against production on a fresh holdout.",
                features=features,
                trained=trained,
            ),
        ]

    with data:
        data_gates = [
            step(
                "check_feature_value",
                "tasks.run_steps:check_feature_value_step",
                "D2, D3: permutation importance and cost of every feature.",
                features=features,
                trained=trained,
            ),
        ]

    with infrastructure:
        rehearsed = step(
            "integration_test",
            "tasks.run_steps:integration_test_pipeline_step",
            "I3: the whole pipeline rehearsed on a sample of this run, same code.",
            ingested=ingested,
        )

    gates = [*model_gates, *infrastructure_gates, *data_gates, rehearsed]

    with infrastructure:
        registered = step(
            "register",
            "tasks.model_steps:register_model_step",
            "Write the model version with spec, metrics, schema and lineage.",
            features=features,
            trained=trained,
        )
        gates >> registered
        staged = step(
            "stage",
            "tasks.deploy:stage_model_step",
            "I6: load the version in the serving code; known answers over HTTP.",
            registered=registered,
            features=features,
        )
        canaried = step(
            "canary",
            "tasks.deploy:canary_model_step",
            "I6: a slice of live traffic; errors, latency and predictions compared.",
            registered=registered,
            staged=staged,
            features=features,
        )
        promoted = step(
            "promote",
            "tasks.deploy:promote_model_step",
            "Move the production alias to the candidate; record the deployment.",
            outlets=[PRODUCTION_MODEL],
            registered=registered,
            canaried=canaried,
        )
        drilled = step(
            "rollback_drill",
            "tasks.deploy:rollback_drill_step",
            "I7: a timed rollback to the previous version and forward again.",
            promoted=promoted,
        )

    with data:
        lead_time = step(
            "check_feature_lead_time",
            "tasks.run_steps:check_feature_lead_time_step",
            "D6: days from a feature's declaration to a production model using it.",
            features=features,
        )
        registered >> lead_time >> promoted
        privacy = step(
            "scan_privacy",
            "tasks.run_steps:scan_privacy_step",
            "D5: every artifact this run wrote, scanned for raw customer ids.",
            trigger_rule="all_done",
        )
        [drilled, lead_time, *gates] >> privacy

    reported = step(
        "report",
        "tasks.run_steps:report_run_step",
        "Log the run's ML Test Score, whatever happened upstream.",
        trigger_rule="all_done",
    )
    privacy >> reported


churn_training_dag = churn_training()
