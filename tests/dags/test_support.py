"""The glue between Airflow tasks and steps: inputs, services and retry decisions."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from gates.result import GateFailed, GateResult, Verdict
from tasks.ingest import DataContractError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dags"))
import _support


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A module of fake steps, importable as ``fake_steps``, and a stub context."""
    module = types.ModuleType("fake_steps")

    def takes_features(ctx: object, features: dict[str, Any]) -> dict[str, Any]:
        return {"ctx": ctx, "features": features}

    def takes_key(ctx: object, key: bytes | None = None) -> dict[str, Any]:
        return {"key": key}

    def rejects(ctx: object) -> None:
        raise GateFailed(GateResult("M5", Verdict.FAIL, "worse than the baseline"))

    def bad_contract(ctx: object) -> None:
        raise DataContractError(
            "x.csv: column 'tenure' missing", problem="missing_column"
        )

    def unreachable(ctx: object) -> None:
        raise DataContractError("gs://b/x.csv: not found", problem="source")

    for function in (takes_features, takes_key, rejects, bad_contract, unreachable):
        setattr(module, function.__name__, function)
    monkeypatch.setitem(sys.modules, "fake_steps", module)
    monkeypatch.setattr(_support, "run_context", lambda: "ctx")
    return module


def test_run_target_passes_only_named_inputs(steps: types.ModuleType) -> None:
    """An upstream result the step does not name only orders the tasks."""
    out = _support.run_target(
        "fake_steps:takes_features", {"features": {"train": "k"}, "trained": {}}
    )
    assert out == {"ctx": "ctx", "features": {"train": "k"}}


def test_run_target_hands_in_the_key_from_the_environment(
    steps: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that names ``key`` gets the pseudonymization key from the environment."""
    monkeypatch.setenv(_support.KEY_ENV, "secret-from-env")
    assert _support.run_target("fake_steps:takes_key", {}) == {
        "key": b"secret-from-env"
    }


@pytest.mark.parametrize("step", ["rejects", "bad_contract"])
def test_run_target_verdicts_and_bad_data_are_not_retried(
    steps: types.ModuleType, step: str
) -> None:
    """A recorded rejection or a broken contract fails the task for good."""
    with pytest.raises(AirflowFailException):
        _support.run_target(f"fake_steps:{step}", {})


def test_run_target_unreachable_source_is_retried(steps: types.ModuleType) -> None:
    """An unreachable source may come back, so Airflow's retries apply."""
    with pytest.raises(DataContractError, match="not found"):
        _support.run_target("fake_steps:unreachable", {})


def test_run_context_override_names_the_triggering_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The I4 override carries who triggered the run, whatever the form says."""
    import airflow.sdk

    dag_run = types.SimpleNamespace(
        dag_id="churn_training", run_id="manual__1", triggering_user_name="alice"
    )
    context = {
        "dag_run": dag_run,
        "params": {"override_reason": "ship the fix for billing", "dataset": ""},
    }
    monkeypatch.setattr(airflow.sdk, "get_current_context", lambda: context)
    monkeypatch.delenv("CHURNOPS_EMBEDDED", raising=False)

    ctx = _support.run_context()

    assert ctx.params == {
        "override": {"by": "alice", "reason": "ship the fix for billing"}
    }


def test_pseudonymization_key_from_the_airflow_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the variable, the connection's password is the key; none is None."""
    import airflow.sdk
    from airflow.sdk.exceptions import AirflowNotFoundException

    monkeypatch.delenv(_support.KEY_ENV, raising=False)
    stored = types.SimpleNamespace(password="from-the-connection")
    monkeypatch.setattr(airflow.sdk.Connection, "get", classmethod(lambda c, i: stored))
    assert _support.pseudonymization_key() == b"from-the-connection"

    def missing(cls: object, conn_id: str) -> None:
        raise AirflowNotFoundException(f"The conn_id `{conn_id}` isn't defined")

    monkeypatch.setattr(airflow.sdk.Connection, "get", classmethod(missing))
    assert _support.pseudonymization_key() is None


def test_pseudonymization_key_backend_outage_is_not_a_missing_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A secrets backend that fails raises, so Airflow retries instead of refusing."""
    import airflow.sdk

    monkeypatch.delenv(_support.KEY_ENV, raising=False)

    def down(cls: object, conn_id: str) -> None:
        raise ConnectionError("secrets backend unreachable")

    monkeypatch.setattr(airflow.sdk.Connection, "get", classmethod(down))
    with pytest.raises(ConnectionError):
        _support.pseudonymization_key()
