"""The paper's rule: section sums, the minimum over sections, bands, half points."""

from __future__ import annotations

import pytest

from gates.result import GateResult, Verdict
from gates.rubric import RUBRIC, SECTIONS
from gates.scoring import band_for, report_for_model, report_for_run
from gates.store import ScoreStore


def _record_all(store: ScoreStore, run: str, sections: dict[str, int]) -> None:
    """Record an automated result for the first N tests of each section."""
    for section, count in sections.items():
        tests = [t for t in RUBRIC if t.section == section][:count]
        for test in tests:
            store.record("churn_training", run, GateResult(test.id, Verdict.PASS, "ok"))


def test_rubric_has_28_tests_in_4_sections_of_7() -> None:
    """The rubric data matches the paper's shape."""
    assert len(RUBRIC) == 28
    for section in SECTIONS:
        assert sum(t.section == section for t in RUBRIC) == 7
    assert len({t.id for t in RUBRIC}) == 28


@pytest.mark.parametrize(
    ("score", "start"),
    [
        (0.0, "More of a research project"),
        (0.5, "Not totally untested"),
        (1.0, "Not totally untested"),
        (1.5, "First pass"),
        (3.0, "Reasonably tested"),
        (4.5, "Strong levels"),
        (5.5, "Exceptional"),
    ],
)
def test_band_for_score_boundaries(score: float, start: str) -> None:
    """Band upper bounds are inclusive, as the paper's intervals are."""
    assert band_for(score).startswith(start)


def test_report_final_score_is_the_weakest_section(sqlite_url: str) -> None:
    """Strong data and model practice cannot hide missing monitoring."""
    store = ScoreStore.open(sqlite_url)
    store.start_run("churn_training", "r1", model_version="v1")
    _record_all(store, "r1", {"data": 7, "model": 6, "infrastructure": 4})

    report = report_for_model(store, "v1")

    assert report.sections == {
        "data": 7.0,
        "model": 6.0,
        "infrastructure": 4.0,
        "monitoring": 0.0,
    }
    assert report.final_score == 0.0
    assert report.weakest_sections == ["monitoring"]
    assert len(report.tests) == 28
    missing = [t for t in report.tests if t.section == "monitoring"]
    assert {t.verdict for t in missing} == {"not run"}


def test_report_counts_failed_gates_as_in_place(sqlite_url: str) -> None:
    """A gate that ran and rejected the model still earns its point."""
    store = ScoreStore.open(sqlite_url)
    store.start_run("churn_training", "r1", model_version="v1")
    for test in RUBRIC:
        verdict = Verdict.FAIL if test.id == "M5" else Verdict.PASS
        store.record("churn_training", "r1", GateResult(test.id, verdict, "checked"))

    report = report_for_run(store, "r1")

    assert report.final_score == 7.0
    assert [t.id for t in report.failures] == ["M5"]


def test_report_mixes_half_points_from_manual_results(sqlite_url: str) -> None:
    """Manual results count half, and the final score follows the minimum."""
    store = ScoreStore.open(sqlite_url)
    store.start_run("churn_training", "r1", model_version="v1")
    _record_all(store, "r1", {"data": 7, "model": 7, "infrastructure": 7})
    for test in [t for t in RUBRIC if t.section == "monitoring"][:3]:
        store.record_manual(
            test.id,
            verdict=Verdict.PASS,
            reason="reviewed",
            recorded_by="bob",
            model_version="v1",
        )

    report = report_for_model(store, "v1")

    assert report.sections["monitoring"] == 1.5
    assert report.final_score == 1.5
    assert report.band.startswith("First pass")
    assert report.final_score_2016 == 3.0


def test_report_for_model_takes_latest_across_runs(sqlite_url: str) -> None:
    """A later run of the same model version replaces an earlier result."""
    store = ScoreStore.open(sqlite_url)
    store.start_run("churn_training", "r1", model_version="v1")
    store.start_run("churn_monitoring", "m1", model_version="v1")
    store.record("churn_training", "r1", GateResult("Mo4", Verdict.PASS, "fresh"))
    store.record("churn_monitoring", "m1", GateResult("Mo4", Verdict.FAIL, "stale"))

    report = report_for_model(store, "v1")

    [mo4] = [t for t in report.tests if t.id == "Mo4"]
    assert (mo4.verdict, mo4.run_id) == ("fail", "m1")


def test_report_verdict_summary_names_open_questions(sqlite_url: str) -> None:
    """Full points with tests that could not conclude still say which ones."""
    store = ScoreStore.open(sqlite_url)
    store.start_run("churn_training", "r1", model_version="v1")
    for test in RUBRIC:
        verdict = Verdict.INSUFFICIENT if test.id in ("M2", "I7") else Verdict.PASS
        store.record("churn_training", "r1", GateResult(test.id, verdict, "checked"))

    report = report_for_model(store, "v1")

    assert report.final_score == 7.0
    assert report.verdict_summary() == (
        "Verdicts: 26 pass; 2 insufficient evidence (M2, I7)"
    )
    assert report.to_dict()["verdicts"] == report.verdict_summary()


def test_report_for_run_separates_dags_sharing_a_run_id(sqlite_url: str) -> None:
    """Scheduled runs of two DAGs can share an id; a run is named with its DAG."""
    from gates.scoring import AmbiguousRun

    store = ScoreStore.open(sqlite_url)
    shared = "scheduled__2026-12-06T00:00:00+00:00"
    store.record("churn_training", shared, GateResult("M5", Verdict.FAIL, "worse"))
    store.record("churn_monitoring", shared, GateResult("Mo4", Verdict.PASS, "fresh"))

    with pytest.raises(AmbiguousRun, match="churn_monitoring', 'churn_training"):
        report_for_run(store, shared)
    training = report_for_run(store, shared, "churn_training")

    assert {t.id for t in training.tests if t.run_id} == {"M5"}
    assert training.scope.endswith("of churn_training")
