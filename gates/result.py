"""What a gate reports: points (is the test in place?) apart from the verdict."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

from gates.rubric import rubric_test

# The paper's scale: automated and repeated, documented by hand, or absent.
POINTS_AUTOMATED = 1.0
POINTS_MANUAL = 0.5
POINTS_NONE = 0.0
VALID_POINTS = (POINTS_NONE, POINTS_MANUAL, POINTS_AUTOMATED)


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    INSUFFICIENT = "insufficient evidence"
    NOT_RUN = "not run"


class GateFailed(RuntimeError):
    """A blocking gate rejected the model; its result has already been recorded."""

    def __init__(self, result: GateResult) -> None:
        super().__init__(f"gate {result.test_id} failed: {result.reason}")
        self.result = result


@dataclass(frozen=True)
class GateResult:
    """One rubric test's outcome for one run.

    ``value`` and ``threshold`` are the measured figure and the bar it was held to,
    when the check has one; ``details`` is free-form evidence kept in the store as
    JSON; ``evidence`` is a URI of a stored artifact (a report, a plot).
    """

    test_id: str
    verdict: Verdict
    reason: str
    points: float = POINTS_AUTOMATED
    value: float | None = None
    threshold: float | None = None
    evidence: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    recorded_by: str | None = None

    def __post_init__(self) -> None:
        rubric_test(self.test_id)
        if self.points not in VALID_POINTS:
            raise ValueError(
                f"points for {self.test_id} must be one of {VALID_POINTS}, "
                f"got {self.points!r}"
            )
        if not isinstance(self.verdict, Verdict):
            object.__setattr__(self, "verdict", Verdict(self.verdict))
        if not self.reason.strip():
            raise ValueError(f"result for {self.test_id} needs a reason a person reads")
        for name in ("value", "threshold"):
            number = getattr(self, name)
            if number is not None and not math.isfinite(float(number)):
                # NaN cannot be compared or stored portably; keep it in the reason.
                object.__setattr__(self, name, None)

    @property
    def section(self) -> str:
        return rubric_test(self.test_id).section

    @property
    def blocks_promotion(self) -> bool:
        return self.verdict is Verdict.FAIL

    def raise_if_failed(self) -> GateResult:
        """Raise :class:`GateFailed` when this result must stop the pipeline."""
        if self.blocks_promotion:
            raise GateFailed(self)
        return self


def not_run(test_id: str, reason: str) -> GateResult:
    """A test this installation does not perform yet: zero points, said plainly."""
    return GateResult(test_id, Verdict.NOT_RUN, reason, points=POINTS_NONE)


def insufficient(test_id: str, reason: str, **kwargs: Any) -> GateResult:
    """The check ran automatically but could not reach a verdict yet."""
    return GateResult(test_id, Verdict.INSUFFICIENT, reason, **kwargs)
