"""Run-level steps: the run record, D1 against production, D5, D6, I3 and the report."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from gates.result import GateFailed, GateResult, Verdict
from gates.store import ScoreStore
from tasks import data_steps, model_steps
from tasks.config import load_settings
from tasks.context import RunContext
from tasks.features import FeatureTransform
from tasks.registry import move_alias, version_key
from tasks.run_steps import (
    integration_test_pipeline_step,
    production_inputs_since,
    report_run_step,
    scan_privacy_step,
    start_run_step,
)

KEY = b"a-test-key-that-is-long-enough"


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    """A run on 1,500 synthetic customers with a tiny search and a 300-row sample."""
    settings = load_settings(
        environ={
            "CHURNOPS_STORAGE_ROOT": str(tmp_path / "artifacts"),
            "CHURNOPS_SCORE_DB_URL": f"sqlite:///{tmp_path / 'scores.db'}",
        }
    )
    gates = {
        **settings.gates,
        "infrastructure": {
            **settings.gates["infrastructure"],
            "integration_sample_rows": 400,
            "integration_search_trials": 1,
            "integration_max_epochs": 1,
        },
    }
    return RunContext(
        settings=dataclasses.replace(settings, gates=gates),
        dag_id="churn_training",
        run_id="test_run",
        params={"source": "synthetic://1500?seed=3", "allow_dirty_spec": True},
    )


def _ingested(ctx: RunContext) -> dict[str, Any]:
    return data_steps.ingest_customers_step(ctx)


def _i3(ctx: RunContext) -> Any:
    [row] = [r for r in ctx.scores.results(run_id=ctx.run_id) if r.test_id == "I3"]
    return row


def test_start_run_step_records_commit_and_dataset(ctx: RunContext) -> None:
    """The run row carries the dataset name and whether the tree was clean."""
    out = start_run_step(ctx)
    [run] = ctx.scores.runs()
    assert run.dataset == out["dataset"] == "synthetic_telco"
    assert run.code_commit == out["commit"]


@pytest.mark.slow
def test_integration_test_pipeline_step_passes_on_a_sample(ctx: RunContext) -> None:
    """The rehearsal runs every step on the sample and records I3 as passed."""
    out = integration_test_pipeline_step(ctx, _ingested(ctx), key=KEY)

    assert out["I3"] == "pass"
    assert out["sample_rows"] <= 400
    assert list(out["step_seconds"]) == [
        "ingest",
        "pseudonymize",
        "validate",
        "build_features",
        "tune",
        "train",
        "register",
        "stage",
    ]
    assert _i3(ctx).verdict == "pass"
    # The rehearsal's own gates went to a scratch store, not this run's.
    assert {r.test_id for r in ctx.scores.results(run_id=ctx.run_id)} <= {"D1", "I3"}


def test_integration_test_pipeline_step_gate_verdicts_on_the_sample_do_not_block(
    ctx: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gate that rejects the tiny rehearsal model is noted, not a broken pipeline."""
    from gates import model as model_gates

    def always_rejects(*args: object, **kwargs: object) -> GateResult:
        return GateResult("M3", Verdict.FAIL, "the search never varied anything")

    monkeypatch.setattr(model_gates, "check_hyperparameter_search", always_rejects)

    out = integration_test_pipeline_step(ctx, _ingested(ctx), key=KEY)

    assert out["I3"] == "pass"
    assert out["sample_gate_verdicts"]["M3"] == "fail"


def test_integration_test_pipeline_step_names_the_broken_step(
    ctx: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that breaks fails I3, and the reason names it."""

    def broken(*args: object, **kwargs: object) -> dict[str, Any]:
        raise RuntimeError("the spec cannot be built")

    monkeypatch.setattr(model_steps, "tune_model_step", broken)
    ingested = _ingested(ctx)

    with pytest.raises(GateFailed, match="broke at step 'tune'"):
        integration_test_pipeline_step(ctx, ingested, key=KEY)

    row = _i3(ctx)
    assert row.verdict == "fail"
    assert row.details["failed_step"] == "tune"
    assert "the spec cannot be built" in row.reason


def _fake_version(ctx: RunContext, version: str, inputs: list[str]) -> None:
    """A registered version with only the documents the registry's index reads."""
    transform = FeatureTransform(kinds=dict.fromkeys(inputs, "numeric"))
    ctx.store.write_text(version_key(version, "transform.json"), transform.to_json())
    ctx.store.write_text(version_key(version, "manifest.json"), "{}")


def test_production_inputs_since_takes_the_first_promotion_per_feature(
    ctx: RunContext,
) -> None:
    """A feature counts from the first production model that read it."""
    first, second = "v20260101T000000-00000001", "v20260301T000000-00000002"
    _fake_version(ctx, first, ["tenure"])
    _fake_version(ctx, second, ["tenure", "Contract"])
    days = iter(
        [dt.datetime(2026, 1, 2, tzinfo=dt.UTC), dt.datetime(2026, 3, 5, tzinfo=dt.UTC)]
    )
    for version in (first, second):
        move_alias(
            ctx.store,
            "production",
            version,
            actor="test",
            reason="release",
            clock=lambda: next(days),
        )

    assert production_inputs_since(ctx) == {
        "tenure": dt.date(2026, 1, 2),
        "Contract": dt.date(2026, 3, 5),
    }


def test_report_run_step_returns_the_headline(ctx: RunContext) -> None:
    """The report step gives the run's final score and the gates that failed."""
    ScoreStore.open(ctx.settings.score_store_url)
    start_run_step(ctx)
    out = report_run_step(ctx)
    assert out["final_score"] == 0
    assert out["failed_gates"] == []


def test_scan_privacy_step_finds_a_raw_id_in_a_task_log(
    ctx: RunContext, tmp_path: Path
) -> None:
    """A task log that quotes a raw customer id fails D5, like any other artifact."""
    ingested = _ingested(ctx)
    leaked = ctx.store.read_bytes(ingested["raw_snapshot"])
    from tasks.ingest import parquet_to_frame

    raw_id = str(parquet_to_frame(leaked)["customerID"].iloc[0])
    logs = tmp_path / "task-logs" / "task_id=validate"
    logs.mkdir(parents=True)
    (logs / "attempt=1.log").write_text(f"bad row for customer {raw_id}\n")

    with pytest.raises(GateFailed, match=r"logs/task_id=validate/attempt=1\.log"):
        scan_privacy_step(ctx, task_log_dir=tmp_path / "task-logs")

    [d5] = [r for r in ctx.scores.results(run_id=ctx.run_id) if r.test_id == "D5"]
    assert d5.verdict == "fail"
    assert ctx.store.exists(ctx.key("logs", "task_id=validate", "attempt=1.log"))


def test_report_run_step_warns_that_a_rejected_candidate_was_not_promoted(
    ctx: RunContext, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed gate and no promotion: the operator reads that production held."""
    start_run_step(ctx)
    ctx.record(GateResult("M5", Verdict.FAIL, "worse than logistic regression"))

    with caplog.at_level("WARNING", logger="tasks.run_steps"):
        out = report_run_step(ctx)

    assert out["failed_gates"] == ["M5"]
    assert out["promoted"] is False
    assert "was not promoted and production still serves no model yet" in caplog.text


def test_scan_privacy_step_reaches_the_registered_model_and_todays_log(
    ctx: RunContext,
) -> None:
    """A raw id inside the run's model version or today's prediction log fails D5."""
    ingested = _ingested(ctx)
    from tasks.ingest import parquet_to_frame

    raw = parquet_to_frame(ctx.store.read_bytes(ingested["raw_snapshot"]))
    raw_id = str(raw["customerID"].iloc[0])
    version = "v20261203T000000-0000000a"
    ctx.scores.start_run(ctx.dag_id, ctx.run_id, model_version=version)
    ctx.store.write_text(version_key(version, "lineage.json"), f'{{"x": "{raw_id}"}}')
    today = ctx.clock().date().isoformat()
    ctx.store.write_text(f"predictions/{today}/p.jsonl", "{}\n")

    with pytest.raises(GateFailed, match=f"models/{version}/lineage.json"):
        scan_privacy_step(ctx)


def test_validate_customers_step_holds_the_batch_to_productions_suite(
    ctx: RunContext,
) -> None:
    """A category production never saw fails D1, though this batch's suite has it."""
    from tasks.run_steps import validate_customers_step

    masked = data_steps.pseudonymize_customers_step(ctx, _ingested(ctx), key=KEY)
    own = validate_customers_step(ctx, masked)
    suite = json.loads(ctx.store.read_text(own["suite"]))
    for expectation in suite["expectations"]:
        kwargs = expectation["kwargs"]
        if kwargs.get("column") == "Contract" and "value_set" in kwargs:
            kwargs["value_set"] = ["Month-to-month", "One year"]
    production = "v20261201T000000-0000000b"
    _fake_version(ctx, production, ["Contract"])
    ctx.store.write_text(
        version_key(production, "expectations.json"), json.dumps(suite)
    )
    move_alias(
        ctx.store, "production", production, actor="t", reason="r", clock=ctx.clock
    )

    with pytest.raises(GateFailed, match="Contract"):
        validate_customers_step(ctx, masked)
    assert [r.verdict for r in ctx.scores.results() if r.test_id == "D1"][-1] == "fail"
