"""
### churn_rollback

Puts production back on an earlier model version in one step, by hand.

- **Trigger** with the form: the *target version* (empty: the version production
  served before the current one) and the *reason*, which goes into the deployment
  history with your user name.
- **What happens**: the request is checked (the version must be registered and
  differ from the one serving), the `production` alias moves atomically, the
  prediction service is asked to reload and must answer with the target version
  within the rollback budget, then the rollback is recorded as I7 with its timing
  and a notification.
- **Nothing moves** when the check fails: the task log says why.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Asset, Param, dag, task

# The same asset churn_training's promotion updates: monitoring follows production.
PRODUCTION_MODEL = Asset(
    name="churnops_production_model", uri="churnops://registry/production"
)

DEFAULT_ARGS = {
    "owner": "churnops",
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=10),
}


@dag(
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["churnops", "deployment"],
    doc_md=__doc__,
    params={
        "target_version": Param(
            "",
            type="string",
            title="Target version",
            description="A registered version such as v20261203T154500-1a2b3c4d; "
            "empty: the previous production version",
            pattern=r"^$|^v\d{8}T\d{6}-[0-9a-f]{8}$",
        ),
        "reason": Param(
            type="string",
            title="Reason",
            description="Why production must go back; kept in the deployment history",
            minLength=10,
        ),
    },
)
def churn_rollback() -> None:
    @task
    def validate_request() -> dict[str, Any]:
        """Resolve the target version and refuse anything unsafe; nothing moves."""
        from _support import run_target
        from airflow.sdk import get_current_context

        dag_run = get_current_context()["dag_run"]
        actor = getattr(dag_run, "triggering_user_name", None) or "airflow"
        return run_target("tasks.deploy:validate_rollback_step", {"actor": actor})

    @task(outlets=[PRODUCTION_MODEL])
    def roll_back(request: dict[str, Any]) -> dict[str, Any]:
        """Move `production` to the target; a retry after success changes nothing."""
        from _support import run_target

        return run_target("tasks.deploy:rollback_production_step", {"request": request})

    @task
    def verify_serving(rolled_back: dict[str, Any]) -> dict[str, Any]:
        """The service reloads and answers a probe with the target version."""
        from _support import run_target

        return run_target(
            "tasks.deploy:verify_serving_step", {"rolled_back": rolled_back}
        )

    @task
    def record(request: dict[str, Any], verified: dict[str, Any]) -> dict[str, Any]:
        """I7 with the measured seconds, the report and a notification."""
        from _support import run_target

        return run_target(
            "tasks.deploy:record_rollback_step",
            {"request": request, "verified": verified},
        )

    request = validate_request()
    record(request, verify_serving(roll_back(request)))


churn_rollback_dag = churn_rollback()
