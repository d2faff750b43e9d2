"""The paper's scoring rule, applied alike for the CLI, the dashboard and the API.

Section score = the sum of its seven tests' points; final score = the minimum over the
four sections, because a system is only as ready as its least-tested part.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from gates.result import Verdict
from gates.rubric import RUBRIC, SECTIONS
from gates.store import ScoreStore, StoredResult, latest_per_test

# Upper bound of each band (inclusive) and its meaning, from the 2017 paper.
BANDS: tuple[tuple[float, str], ...] = (
    (0.0, "More of a research project than a productionized system."),
    (1.0, "Not totally untested, but serious holes in reliability are possible."),
    (2.0, "First pass at basic productionization, but more investment may be needed."),
    (3.0, "Reasonably tested, but more of those tests could be automated."),
    (
        5.0,
        "Strong levels of automated testing and monitoring, appropriate for "
        "mission-critical systems.",
    ),
    (float("inf"), "Exceptional levels of automated testing and monitoring."),
)


def band_for(score: float) -> str:
    """The band text of a final score on the 2017 scale (0 to 7)."""
    for upper, text in BANDS:
        if score <= upper:
            return text
    raise AssertionError("the last band is unbounded")


@dataclass(frozen=True)
class TestLine:
    """One rubric test as the report shows it."""

    id: str
    section: str
    title: str
    points: float
    verdict: str
    value: float | None
    threshold: float | None
    reason: str
    evidence: str | None
    run_id: str | None
    recorded_at: str | None
    recorded_by: str | None


@dataclass(frozen=True)
class Report:
    """The ML Test Score of one run or one model version."""

    scope: str
    model_version: str | None
    final_score: float
    band: str
    sections: dict[str, float]
    weakest_sections: list[str]
    tests: list[TestLine]

    @property
    def final_score_2016(self) -> float:
        """The same score on the 2016 scale, which doubled every point and band."""
        return self.final_score * 2

    def verdict_summary(self) -> str:
        """Counts of each verdict, naming the tests that did not reach a pass.

        Points say a test is in place; this line keeps what the tests found next to
        the score, so a full score with open questions never reads as a clean one.
        """
        order = [v.value for v in Verdict]
        counts = {v: [t.id for t in self.tests if t.verdict == v] for v in order}
        parts = []
        for verdict, ids in counts.items():
            if not ids:
                continue
            named = "" if verdict == Verdict.PASS.value else f" ({', '.join(ids)})"
            parts.append(f"{len(ids)} {verdict}{named}")
        return "Verdicts: " + "; ".join(parts)

    @property
    def failures(self) -> list[TestLine]:
        """Tests whose verdict is fail; which of them blocked promotion is a setting
        of each gate section (``blocking_tests``), not part of the score."""
        return [t for t in self.tests if t.verdict == Verdict.FAIL.value]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "model_version": self.model_version,
            "final_score": self.final_score,
            "final_score_2016": self.final_score_2016,
            "band": self.band,
            "sections": self.sections,
            "weakest_sections": self.weakest_sections,
            "verdicts": self.verdict_summary(),
            "tests": [asdict(test) for test in self.tests],
        }


def build_report(
    latest: dict[str, StoredResult], *, scope: str, model_version: str | None = None
) -> Report:
    """Score the latest result of each test; a test with none counts 0, "not run"."""
    lines: list[TestLine] = []
    for test in RUBRIC:
        row = latest.get(test.id)
        lines.append(
            TestLine(
                id=test.id,
                section=test.section,
                title=test.title,
                points=row.points if row else 0.0,
                verdict=row.verdict if row else Verdict.NOT_RUN.value,
                value=row.value if row else None,
                threshold=row.threshold if row else None,
                reason=row.reason if row else "no result recorded",
                evidence=row.evidence if row else None,
                run_id=row.run_id if row else None,
                recorded_at=row.recorded_at.isoformat() if row else None,
                recorded_by=row.recorded_by if row else None,
            )
        )
    sections = {
        section: sum(line.points for line in lines if line.section == section)
        for section in SECTIONS
    }
    final = min(sections.values())
    return Report(
        scope=scope,
        model_version=model_version,
        final_score=final,
        band=band_for(final),
        sections=sections,
        weakest_sections=[s for s, v in sections.items() if v == final],
        tests=lines,
    )


class AmbiguousRun(ValueError):
    """A run id that several DAGs recorded, asked for without naming the DAG."""


def report_for_run(store: ScoreStore, run_id: str, dag_id: str | None = None) -> Report:
    """The score of one DAG run, from the results that run recorded."""
    rows = store.results(run_id=run_id, dag_id=dag_id)
    dags = sorted({row.dag_id for row in rows})
    if len(dags) > 1:
        raise AmbiguousRun(
            f"run id {run_id!r} was recorded by the DAGs {dags}; name the DAG too "
            "(churnops report --run RUN --dag DAG)"
        )
    versions = {row.model_version for row in rows if row.model_version}
    version = sorted(versions)[-1] if versions else None
    scope = f"run {run_id}" if not dags else f"run {run_id} of {dags[0]}"
    return build_report(latest_per_test(rows), scope=scope, model_version=version)


def report_for_model(store: ScoreStore, model_version: str | None = None) -> Report:
    """The score of a model version across every run that tested it.

    Without a version, the model version most recently named by any run. Runs that
    record results before they know the version (a failed ingestion) are included
    only in their run's report.
    """
    version = model_version or store.latest_model_version()
    if version is None:
        # Nothing has named a model yet: score whatever was recorded at all.
        return build_report(latest_per_test(store.results()), scope="all runs")
    rows = store.results(model_version=version)
    return build_report(
        latest_per_test(rows), scope=f"model {version}", model_version=version
    )
