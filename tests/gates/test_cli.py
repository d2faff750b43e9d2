"""``churnops report``: three formats, scoping, and the --fail-under exit code."""

from __future__ import annotations

import json

import pytest

from gates.cli import main
from gates.result import GateResult, Verdict
from gates.rubric import RUBRIC
from gates.store import ScoreStore


@pytest.fixture
def scored_db(sqlite_url: str) -> str:
    """A store where every test but monitoring's passed for model v1 in run r1."""
    store = ScoreStore.open(sqlite_url)
    store.start_run("churn_training", "r1", model_version="v1")
    for test in RUBRIC:
        if test.section != "monitoring":
            store.record(
                "churn_training", "r1", GateResult(test.id, Verdict.PASS, "ok")
            )
    return sqlite_url


def test_cli_report_json_has_the_documented_fields(
    scored_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The JSON report carries the score, band, sections and 28 test objects."""
    assert main(["--db", scored_db, "report", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["final_score"] == 0
    assert report["band"].startswith("More of a research project")
    assert report["sections"] == {
        "data": 7,
        "model": 7,
        "infrastructure": 7,
        "monitoring": 0,
    }
    assert len(report["tests"]) == 28
    assert set(report["tests"][0]) >= {
        "id",
        "section",
        "title",
        "points",
        "verdict",
        "value",
        "threshold",
        "reason",
    }
    mo1 = next(t for t in report["tests"] if t["id"] == "Mo1")
    assert (mo1["points"], mo1["verdict"]) == (0, "not run")


def test_cli_report_table_and_markdown_list_every_test(
    scored_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both human formats show all 28 tests and the final score."""
    main(["--db", scored_db, "report", "--format", "table"])
    table = capsys.readouterr().out
    main(["--db", scored_db, "report", "--run", "r1", "--format", "markdown"])
    markdown = capsys.readouterr().out
    for test in RUBRIC:
        assert f"\n{test.id} " in table
        assert f"| {test.id} |" in markdown
    assert "Final score: 0 of 7" in table
    assert max(len(line) for line in table.splitlines()) <= 88
    assert "**Final score: 0 / 7**" in markdown


def test_cli_fail_under_exits_non_zero_below_the_bar(
    scored_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CI job can gate on the score: below the bar exits 1, at it exits 0."""
    assert main(["--db", scored_db, "report", "--fail-under", "1"]) == 1
    assert "under the required 1" in capsys.readouterr().err
    assert main(["--db", scored_db, "report", "--fail-under", "0"]) == 0


def test_cli_report_unknown_run_says_so(
    scored_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Asking for a run that recorded nothing is an error, not an empty report."""
    assert main(["--db", scored_db, "report", "--run", "nope"]) == 2
    assert "no results recorded for run 'nope'" in capsys.readouterr().err


def test_cli_record_manual_then_report_shows_half_point(
    scored_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manual result entered from the CLI appears with 0.5 points."""
    assert (
        main(
            [
                "--db",
                scored_db,
                "record-manual",
                "Mo4",
                "--verdict",
                "pass",
                "--reason",
                "model age checked by hand",
                "--by",
                "alice",
                "--model",
                "v1",
            ]
        )
        == 0
    )
    capsys.readouterr()
    main(["--db", scored_db, "report", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    mo4 = next(t for t in report["tests"] if t["id"] == "Mo4")
    assert (mo4["points"], mo4["recorded_by"]) == (0.5, "alice")
    assert report["sections"]["monitoring"] == 0.5


def test_cli_report_last_run_picks_the_newest_run(
    scored_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--last-run reports the newest run of the DAG, even one with no model version."""
    store = ScoreStore.open(scored_db)
    store.record("churn_training", "r2", GateResult("D1", Verdict.FAIL, "bad batch"))
    assert main(["--db", scored_db, "report", "--last-run", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scope"] == "run r2 of churn_training"
    assert report["final_score"] == 0
    assert main(["--db", scored_db, "report", "--last-run", "nope"]) == 2


def test_cli_record_manual_without_model_counts_for_the_latest(
    scored_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --model, a manual result joins the version the report shows."""
    args = ["--db", scored_db, "record-manual", "Mo6", "--verdict", "pass"]
    args += ["--reason", "latency dashboards reviewed", "--by", "bob"]
    assert main(args) == 0
    assert "for model v1" in capsys.readouterr().out
    main(["--db", scored_db, "report", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    mo6 = next(t for t in report["tests"] if t["id"] == "Mo6")
    assert (mo6["points"], mo6["recorded_by"]) == (0.5, "bob")
