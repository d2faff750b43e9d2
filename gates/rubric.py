"""The 28 tests of the ML Test Score (Breck et al., 2017), as automated here.

This is the one place the rubric is written down; the store, the report, the dashboard
and the gates all read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

SECTIONS: dict[str, str] = {
    "data": "Features and data",
    "model": "Model development",
    "infrastructure": "ML infrastructure",
    "monitoring": "Monitoring",
}


@dataclass(frozen=True)
class RubricTest:
    """One test of the rubric and the automated check that scores it here."""

    id: str
    section: str
    title: str
    check: str


RUBRIC: tuple[RubricTest, ...] = (
    RubricTest(
        "D1",
        "data",
        "Feature expectations are captured in a schema",
        "Great Expectations suite from training statistics plus declared "
        "domain rules, versioned with the model; every batch validated",
    ),
    RubricTest(
        "D2",
        "data",
        "All features are beneficial",
        "permutation importance of every input feature on validation data",
    ),
    RubricTest(
        "D3",
        "data",
        "No feature's cost is too much",
        "serving latency, model width and acquisition cost per feature "
        "against its importance",
    ),
    RubricTest(
        "D4",
        "data",
        "Features adhere to meta-level requirements",
        "model inputs must be registered, active and allowed in the feature registry",
    ),
    RubricTest(
        "D5",
        "data",
        "The data pipeline has appropriate privacy controls",
        "keyed pseudonymization, direct identifiers dropped, every artifact "
        "scanned for raw identifiers, deletion requests honoured",
    ),
    RubricTest(
        "D6",
        "data",
        "New features can be added quickly",
        "declared features; lead time from declaration to a production model; "
        "a sample run proves a new feature flows end to end",
    ),
    RubricTest(
        "D7",
        "data",
        "All input feature code is tested",
        "one feature module for training and serving; a known-answer check "
        "per transform run by the pipeline",
    ),
    RubricTest(
        "M1",
        "model",
        "Model specs are reviewed and submitted",
        "spec in version control; the commit is recorded and a dirty tree "
        "is marked or refused",
    ),
    RubricTest(
        "M2",
        "model",
        "Offline and online metrics correlate",
        "offline metric per model version against its online metric from "
        "served traffic with delayed labels",
    ),
    RubricTest(
        "M3",
        "model",
        "All hyperparameters have been tuned",
        "random search over a declared range for every hyperparameter",
    ),
    RubricTest(
        "M4",
        "model",
        "The impact of model staleness is known",
        "models from older windows scored on the newest data: a quality "
        "against age curve that sets the staleness budget",
    ),
    RubricTest(
        "M5",
        "model",
        "A simpler model is not better",
        "logistic regression and a stochastic baseline on the same holdout",
    ),
    RubricTest(
        "M6",
        "model",
        "Model quality is sufficient on important data slices",
        "per-slice floor and allowed drop against the production model",
    ),
    RubricTest(
        "M7",
        "model",
        "The model is tested for considerations of inclusion",
        "equal opportunity gap, group representation and proxy features for "
        "declared protected attributes",
    ),
    RubricTest(
        "I1",
        "infrastructure",
        "Training is reproducible",
        "two trainings on the same data and seed give the same predictions",
    ),
    RubricTest(
        "I2",
        "infrastructure",
        "Model specs are unit tested",
        "one step changes weights, loss falls, a tiny set is overfit, a "
        "checkpoint restores, training resumes after a crash",
    ),
    RubricTest(
        "I3",
        "infrastructure",
        "The ML pipeline is integration tested",
        "an automated end-to-end run on a sample for the same code version",
    ),
    RubricTest(
        "I4",
        "infrastructure",
        "Model quality is validated before serving",
        "candidate against production on a fresh holdout, plus known-answer "
        "examples; audited manual override",
    ),
    RubricTest(
        "I5",
        "infrastructure",
        "The model is debuggable",
        "a trace of one example through features and layers with attributions "
        "that add up to the output",
    ),
    RubricTest(
        "I6",
        "infrastructure",
        "Models are canaried before serving",
        "staging load in the serving code, then a slice of live traffic "
        "compared with production",
    ),
    RubricTest(
        "I7",
        "infrastructure",
        "Serving models can be rolled back",
        "a timed rollback drill each release; one-step manual rollback; a "
        "deployment history",
    ),
    RubricTest(
        "Mo1",
        "monitoring",
        "Dependency changes result in notification",
        "upstream data contract and installed packages compared with the last "
        "run; a notification on change",
    ),
    RubricTest(
        "Mo2",
        "monitoring",
        "Data invariants hold for inputs",
        "the D1 suite on logged serving inputs",
    ),
    RubricTest(
        "Mo3",
        "monitoring",
        "Training and serving are not skewed",
        "serving features recomputed with the training code, plus "
        "distribution distance",
    ),
    RubricTest(
        "Mo4",
        "monitoring",
        "Models are not too stale",
        "age of the serving model against the budget from M4",
    ),
    RubricTest(
        "Mo5",
        "monitoring",
        "Models are numerically stable",
        "NaN or infinity in loss, weights or predictions; dead units",
    ),
    RubricTest(
        "Mo6",
        "monitoring",
        "Computing performance has not regressed",
        "training time, serving latency, throughput and memory against recent history",
    ),
    RubricTest(
        "Mo7",
        "monitoring",
        "Prediction quality has not regressed",
        "quality and calibration on recent labelled traffic, overall and per slice",
    ),
)

TESTS_BY_ID: dict[str, RubricTest] = {test.id: test for test in RUBRIC}


def rubric_test(test_id: str) -> RubricTest:
    """Look a test up by id, with an error that lists the valid ids."""
    try:
        return TESTS_BY_ID[test_id]
    except KeyError:
        raise KeyError(
            f"unknown rubric test {test_id!r}; expected one of {', '.join(TESTS_BY_ID)}"
        ) from None
