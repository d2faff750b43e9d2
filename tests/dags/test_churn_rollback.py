"""The manual rollback DAG: a form that refuses bad input, four retried steps."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def rollback_dag() -> object:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR / "churn_rollback.py"))
    assert bag.import_errors == {}
    return bag.dags["churn_rollback"]


def test_churn_rollback_is_manual_with_ordered_retried_steps(
    rollback_dag: object,
) -> None:
    """No schedule; validate, roll back, verify, record in that order, all retried."""
    dag = rollback_dag
    assert type(dag.timetable).__name__ == "NullTimetable"  # type: ignore[attr-defined]
    tasks = {t.task_id: t for t in dag.tasks}  # type: ignore[attr-defined]
    assert set(tasks) == {"validate_request", "roll_back", "verify_serving", "record"}
    assert tasks["roll_back"].upstream_task_ids == {"validate_request"}
    assert tasks["verify_serving"].upstream_task_ids == {"roll_back"}
    assert tasks["record"].upstream_task_ids == {"validate_request", "verify_serving"}
    assert all(t.retries > 0 for t in tasks.values())
    assert all(t.doc_md for t in tasks.values())


def test_churn_rollback_form_refuses_short_reason_and_bad_version(
    rollback_dag: object,
) -> None:
    """The Params form needs a reason of 10+ characters and a well-formed version."""
    params = rollback_dag.params  # type: ignore[attr-defined]
    cases = [
        ({"reason": "conversion dropped", "target_version": ""}, None),
        (
            {
                "reason": "conversion dropped",
                "target_version": "v20261203T154500-1a2b3c4d",
            },
            None,
        ),
        ({"reason": "oops"}, "reason"),
        ({"reason": "conversion dropped", "target_version": "last week"}, "target"),
    ]
    for values, bad in cases:
        form = copy.deepcopy(params)
        if bad is None:
            for name, value in values.items():
                form[name] = value
            form.validate()
            continue
        with pytest.raises(Exception, match=r"(?i)invalid|validat|pattern|short"):
            for name, value in values.items():
                form[name] = value
            form.validate()
