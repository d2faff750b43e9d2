"""Glue between Airflow tasks and churnops steps, imported only inside task bodies.

Airflow parses DAG files often, so DAG files import nothing heavy: a task body imports
this module, which imports the step it runs. A step is a plain function
``step(ctx, **inputs)`` from ``tasks`` or ``gates``; the glue builds its RunContext
from the Airflow context, hands in the upstream results and runtime services the step
names as parameters (an upstream result it does not name only orders the tasks), and
turns a recorded rejection into a failure that is not retried.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KEY_ENV = "CHURNOPS_PSEUDONYMIZATION_KEY"
KEY_CONNECTION = "churnops_pseudonymization"


def run_context() -> Any:
    """A RunContext for the task that is running now."""
    from airflow.sdk import get_current_context

    from tasks.config import load_settings
    from tasks.context import RunContext

    context = get_current_context()
    dag_run = context["dag_run"]
    params = {k: v for k, v in dict(context["params"]).items() if v not in ("", None)}
    if params.get("override_reason"):
        # The override is audited: who comes from Airflow, never from the form.
        actor = getattr(dag_run, "triggering_user_name", None) or "airflow"
        params["override"] = {"by": actor, "reason": params.pop("override_reason")}
    if embedded():
        # The demo runs from whatever checkout it is in; M1 marks a dirty spec instead.
        params["allow_dirty_spec"] = True
    return RunContext(
        settings=load_settings(),
        dag_id=dag_run.dag_id,
        run_id=dag_run.run_id,
        params=params,
    )


def pseudonymization_key() -> bytes | None:
    """The HMAC key: the environment first, then the Airflow connection's password.

    Never logged. None when neither is set; the data step then refuses to run unless
    the embedded demo allows a generated local key.
    """
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV].encode("utf-8")
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        connection = Connection.get(KEY_CONNECTION)
    except AirflowNotFoundException:
        # Not configured. Any other error (a secrets backend that is down) is raised
        # and retried, rather than mistaken for a missing key.
        return None
    password = connection.password or ""
    return password.encode("utf-8") or None


def embedded() -> bool:
    """True in the embedded demo, where a local key and a dirty tree are tolerated."""
    return os.environ.get("CHURNOPS_EMBEDDED", "") == "1"


def task_log_dir() -> Path | None:
    """This run's folder of task logs, where Airflow writes them locally."""
    from airflow.configuration import conf
    from airflow.sdk import get_current_context

    dag_run = get_current_context()["dag_run"]
    base = Path(conf.get("logging", "base_log_folder"))
    folder = base / f"dag_id={dag_run.dag_id}" / f"run_id={dag_run.run_id}"
    return folder if folder.is_dir() else None


# Runtime services a step may ask for by naming a parameter.
SERVICES = {
    "key": pseudonymization_key,
    "allow_generated_key": embedded,
    "embedded": embedded,
    "task_log_dir": task_log_dir,
}


def run_target(target: str, inputs: dict[str, Any]) -> Any:
    """Run ``module:function`` with a fresh RunContext and the upstream results."""
    from airflow.sdk.exceptions import AirflowFailException

    from gates.result import GateFailed

    module_name, _, function_name = target.partition(":")
    step = getattr(importlib.import_module(module_name), function_name)
    accepted = inspect.signature(step).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    inputs = {k: v for k, v in inputs.items() if takes_any or k in accepted}
    services = {name: make() for name, make in SERVICES.items() if name in accepted}

    started = time.monotonic()
    log.info("%s: starting", function_name)
    try:
        result = step(run_context(), **inputs, **services)
    except GateFailed as exc:
        # Already recorded; retrying a deterministic verdict would only repeat it.
        raise AirflowFailException(str(exc)) from exc
    except Exception as exc:
        if getattr(exc, "retryable", True) is False:
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        raise
    log.info("%s: done in %.1f s", function_name, time.monotonic() - started)
    return result
