"""The score store on SQLite and PostgreSQL: round trips, upgrades, audit fields."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from gates.result import GateResult, Verdict, not_run
from gates.store import LATEST_VERSION, ScoreStore, ScoreStoreError, latest_per_test


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


def test_store_round_trip_keeps_every_field(store_url: str) -> None:
    """A recorded result reads back with points, verdict, figures and its run."""
    store = ScoreStore.open(store_url)
    store.start_run("churn_training", "manual__1", code_commit="abc123")
    store.record(
        "churn_training",
        "manual__1",
        GateResult(
            "M5",
            Verdict.FAIL,
            "candidate AUC 0.80 is below logistic regression 0.85",
            value=0.80,
            threshold=0.85,
            evidence="file:///tmp/m5.json",
            details={"baseline": 0.85},
        ),
    )
    store.start_run("churn_training", "manual__1", model_version="v1")

    [row] = store.results(run_id="manual__1")
    assert (row.test_id, row.section, row.points, row.verdict) == (
        "M5",
        "model",
        1.0,
        "fail",
    )
    assert (row.value, row.threshold) == (0.80, 0.85)
    assert row.details == {"baseline": 0.85}
    assert row.evidence == "file:///tmp/m5.json"
    assert row.model_version == "v1"
    assert row.recorded_at.tzinfo is not None
    [run] = store.runs()
    assert (run.code_commit, run.model_version) == ("abc123", "v1")


def test_store_manual_result_is_half_a_point_with_its_author(store_url: str) -> None:
    """A result documented by hand scores 0.5 and keeps who recorded it."""
    store = ScoreStore.open(store_url)
    store.record_manual(
        "Mo6",
        verdict=Verdict.PASS,
        reason="latency dashboards reviewed",
        recorded_by="alice",
        model_version="v1",
    )
    [row] = store.results(model_version="v1")
    assert (row.points, row.recorded_by, row.dag_id) == (0.5, "alice", "manual")


def test_store_manual_result_without_author_is_refused(sqlite_url: str) -> None:
    """Manual scores are audited: no name, no record."""
    store = ScoreStore.open(sqlite_url)
    with pytest.raises(ScoreStoreError, match="needs the name of who ran it"):
        store.record_manual("Mo6", verdict=Verdict.PASS, reason="x", recorded_by=" ")


def test_store_upgrade_from_version_1_keeps_scores(store_url: str) -> None:
    """An older schema upgrades in place and the scores it held survive."""
    old = ScoreStore(store_url)
    assert old.migrate(target=1) == 1
    with old.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO churnops_runs (dag_id, run_id, started_at) "
                "VALUES ('churn_training', 'old_run', CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO churnops_results (run_pk, test_id, section, points, "
                "verdict, reason, recorded_at) VALUES (1, 'D1', 'data', 1.0, 'pass', "
                "'schema held', CURRENT_TIMESTAMP)"
            )
        )

    upgraded = ScoreStore.open(store_url)

    assert upgraded.schema_version() == LATEST_VERSION
    [row] = upgraded.results(run_id="old_run")
    assert (row.test_id, row.reason, row.recorded_by) == ("D1", "schema held", None)
    upgraded.record_deployment(
        alias="production", model_version="v2", action="promote", reason="r", actor="a"
    )
    assert upgraded.deployments()[0]["model_version"] == "v2"


def test_store_newer_schema_is_refused(sqlite_url: str) -> None:
    """A database written by a newer churnops is not silently downgraded."""
    store = ScoreStore.open(sqlite_url)
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO churnops_schema_version (version, applied_at) "
                f"VALUES ({LATEST_VERSION + 1}, CURRENT_TIMESTAMP)"
            )
        )
    with pytest.raises(ScoreStoreError, match="newer than this churnops"):
        store.migrate()


def test_store_notifications_and_deployments_are_kept_in_order(sqlite_url: str) -> None:
    """Deployment history and notifications read back oldest first."""
    store = ScoreStore.open(sqlite_url)
    store.record_deployment(
        alias="production",
        model_version="v1",
        action="promote",
        reason="r",
        actor="dag",
    )
    store.record_deployment(
        alias="production",
        model_version="v0",
        previous_version="v1",
        action="rollback",
        reason="AUC dropped",
        actor="oncall",
    )
    store.notify("dependency", "half the expected rows arrived")
    assert [d["action"] for d in store.deployments("production")] == [
        "promote",
        "rollback",
    ]
    assert store.notifications()[0]["message"] == "half the expected rows arrived"


def test_latest_per_test_not_run_never_hides_a_real_result(sqlite_url: str) -> None:
    """A later "not run" leaves an earlier real result; a later real one wins."""
    store = ScoreStore.open(sqlite_url)
    store.start_run("d", "r1", model_version="v1")
    store.start_run("d", "r2", model_version="v1")
    store.record("d", "r1", GateResult("D1", Verdict.PASS, "first"))
    store.record("d", "r2", not_run("D1", "skipped"))
    store.record("d", "r2", not_run("D2", "skipped"))
    store.record("d", "r2", GateResult("D3", Verdict.PASS, "old"))
    store.record("d", "r2", GateResult("D3", Verdict.FAIL, "new"))

    latest = latest_per_test(store.results(model_version="v1"))

    assert latest["D1"].reason == "first"
    assert latest["D2"].verdict == "not run"
    assert latest["D3"].reason == "new"


def test_store_unknown_test_id_is_refused() -> None:
    """Results must name one of the 28 rubric tests."""
    with pytest.raises(KeyError, match="unknown rubric test 'X9'"):
        GateResult("X9", Verdict.PASS, "x")
