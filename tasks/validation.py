"""Data validation with a Great Expectations suite built from training statistics.

The suite has two sources, marked in each expectation's ``meta.source``: the data
contract (column set, types, declared value sets and bounds, label classes, unique
ids) and the training rows (the categories seen and the observed numeric range,
widened by a tolerance, where the contract declares none). It is plain JSON, stored
with the run and copied with the model, so serving inputs are later validated
against exactly the suite the model was trained with.

Validation results keep no identifier values: for expectations on the id column or
direct identifiers, GX's lists of unexpected values are removed before anything is
stored. Data Docs: GX's site builder needs a file-backed context, so the HTML report
here is rendered by :func:`render_validation_html` from the validation result.
"""

from __future__ import annotations

import html
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from tasks.config import ColumnSpec, DatasetConfig

log = logging.getLogger(__name__)

TYPE_LISTS: dict[str, list[str]] = {
    "integer": ["int64", "Int64", "int32", "Int32"],
    "float": ["float64", "Float64", "float32"],
    "string": ["StringDtype"],
    "category": ["StringDtype"],
    "date": ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"],
    "boolean": ["bool", "boolean", "BooleanDtype"],
}
# Result keys that can hold row values; removed for identifier columns.
VALUE_KEYS = (
    "partial_unexpected_list",
    "partial_unexpected_counts",
    "partial_unexpected_index_list",
    "unexpected_list",
    "unexpected_index_list",
    "unexpected_index_query",
    "details",
)


class DataValidationError(RuntimeError):
    """The suite cannot be built or run (not: the data failed it)."""


@dataclass(frozen=True)
class ExpectationFailure:
    """One failed expectation as a person reads it."""

    expectation: str
    column: str | None
    observed: str
    examples: list[str] = field(default_factory=list)


@dataclass
class ValidationReport:
    """The outcome of validating one batch against the suite."""

    suite_name: str
    success: bool
    evaluated: int
    failures: list[ExpectationFailure]
    result: dict[str, Any]
    seconds: float

    def summary(self) -> str:
        if self.success:
            return f"all {self.evaluated} expectations of {self.suite_name} hold"
        parts = [
            f"{f.expectation} on {f.column or 'the table'} ({f.observed})"
            for f in self.failures[:5]
        ]
        return (
            f"{len(self.failures)} of {self.evaluated} expectations of "
            f"{self.suite_name} fail: " + "; ".join(parts)
        )


def _expectation(kind: str, source: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": kwargs, "meta": {"source": source}}


def _numeric_bounds(
    spec: ColumnSpec, values: pd.Series, tolerance: float
) -> tuple[float | None, float | None, str]:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    low, high = spec.min, spec.max
    source = "contract"
    if (low is None or high is None) and not numbers.empty:
        seen_low, seen_high = float(numbers.min()), float(numbers.max())
        margin = tolerance * max(seen_high - seen_low, abs(seen_high), 1.0)
        if low is None:
            low = seen_low - margin
        if high is None:
            high = seen_high + margin
        source = "contract+training" if spec.min is not None or spec.max else "training"
    return low, high, source


def build_expectation_suite(
    training: pd.DataFrame, dataset: DatasetConfig, *, range_tolerance: float
) -> dict[str, Any]:
    """The suite's JSON: contract rules plus what the training rows show."""
    contract = dataset.contract
    kept = [c for c in contract.columns if c not in contract.direct_identifiers]
    expectations = [
        _expectation(
            "expect_table_columns_to_match_set",
            "contract",
            column_set=kept,
            exact_match=True,
        ),
        _expectation(
            "expect_column_values_to_be_unique", "contract", column=contract.id_column
        ),
    ]
    for name in kept:
        spec = contract.columns[name]
        expectations.append(
            _expectation(
                "expect_column_values_to_be_in_type_list",
                "contract",
                column=name,
                type_list=TYPE_LISTS[spec.type],
            )
        )
        if not spec.nullable:
            expectations.append(
                _expectation(
                    "expect_column_values_to_not_be_null", "contract", column=name
                )
            )
        expectations.extend(
            _value_expectations(training, spec, dataset, range_tolerance)
        )
    return {
        "name": f"{dataset.name}_customers",
        "expectations": expectations,
        "meta": {"dataset": dataset.name, "training_rows": len(training)},
    }


def _value_expectations(
    training: pd.DataFrame, spec: ColumnSpec, dataset: DatasetConfig, tolerance: float
) -> list[dict[str, Any]]:
    name = spec.name
    if name == dataset.contract.label.column:
        return [
            _expectation(
                "expect_column_values_to_be_in_set",
                "contract",
                column=name,
                value_set=list(dataset.contract.label.classes),
            )
        ]
    if spec.values is not None:
        return [
            _expectation(
                "expect_column_values_to_be_in_set",
                "contract",
                column=name,
                value_set=list(spec.values),
            )
        ]
    if spec.type == "category" and name in training.columns:
        seen = sorted(str(v) for v in training[name].dropna().unique())
        return [
            _expectation(
                "expect_column_values_to_be_in_set",
                "training",
                column=name,
                value_set=seen,
            )
        ]
    if spec.type in ("integer", "float") and name in training.columns:
        low, high, source = _numeric_bounds(spec, training[name], tolerance)
        if low is None and high is None:
            return []
        return [
            _expectation(
                "expect_column_values_to_be_between",
                source,
                column=name,
                min_value=low,
                max_value=high,
            )
        ]
    return []


def _prepare_batch(frame: pd.DataFrame) -> pd.DataFrame:
    # GX compares pandas' "string" dtype, not the default "str" of pandas 3.
    converted = {
        name: frame[name].astype("string")
        for name in frame.columns
        if pd.api.types.is_string_dtype(frame[name]) and frame[name].dtype != "string"
    }
    return frame.assign(**converted) if converted else frame


def _scrub(result: dict[str, Any], identifier_columns: set[str]) -> dict[str, Any]:
    for item in result.get("results", []):
        column = item.get("expectation_config", {}).get("kwargs", {}).get("column")
        if column in identifier_columns:
            for key in VALUE_KEYS:
                item.get("result", {}).pop(key, None)
    return result


def _failures(result: dict[str, Any]) -> list[ExpectationFailure]:
    failures = []
    for item in result.get("results", []):
        if item.get("success"):
            continue
        config = item.get("expectation_config", {})
        outcome = item.get("result", {})
        if item.get("exception_info", {}).get("raised_exception"):
            observed = item["exception_info"].get("exception_message", "error")
        elif "unexpected_count" in outcome:
            observed = (
                f"{outcome['unexpected_count']} unexpected of "
                f"{outcome.get('element_count', '?')}"
            )
        else:
            observed = f"observed {outcome.get('observed_value')!r}"
        examples = [str(v) for v in outcome.get("partial_unexpected_list", [])[:5]]
        failures.append(
            ExpectationFailure(
                expectation=config.get("type", "?"),
                column=config.get("kwargs", {}).get("column"),
                observed=observed,
                examples=sorted(set(examples)),
            )
        )
    return failures


def _group_by_column(
    expectations: list[dict[str, Any]],
) -> dict[str | None, list[dict[str, Any]]]:
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for expectation in expectations:
        groups.setdefault(expectation["kwargs"].get("column"), []).append(expectation)
    return groups


def validate_customers(
    frame: pd.DataFrame,
    suite: dict[str, Any],
    *,
    identifier_columns: set[str],
    require_all_columns: bool = True,
    result_format: Literal["BOOLEAN_ONLY", "BASIC", "SUMMARY"] = "SUMMARY",
) -> ValidationReport:
    """Run the suite on a batch with an ephemeral GX context.

    Expectations run column by column, each on a one-column batch: GX's pandas
    engine copies the whole batch for every expectation, which on wide tables costs
    more than the checks themselves. Table-level expectations see the column set
    only (the suite has no row-count rule). ``require_all_columns`` False skips
    expectations on columns the batch does not have (serving inputs carry no
    label) instead of failing them.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    started = time.monotonic()
    expectations = suite["expectations"]
    if not require_all_columns:
        expectations = [
            e for e in expectations if e["kwargs"].get("column") in frame.columns
        ]
    batch = _prepare_batch(frame)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    definition_batch = (
        context.data_sources.add_pandas("churnops")
        .add_dataframe_asset("customers")
        .add_batch_definition_whole_dataframe("batch")
    )

    results: list[dict[str, Any]] = []
    success = True
    for number, (column, group) in enumerate(_group_by_column(expectations).items()):
        try:
            part = context.suites.add(
                gx.ExpectationSuite(
                    name=f"{suite['name']}.{number}", expectations=group
                )
            )
        except Exception as exc:
            raise DataValidationError(
                f"expectation suite {suite.get('name')!r} cannot be loaded: {exc}; "
                "rebuild it from training data"
            ) from exc
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=part.name, data=definition_batch, suite=part)
        )
        if column is None:
            rows = batch.iloc[:0]
        elif column in batch.columns:
            rows = batch[[column]]
        else:
            rows = batch.iloc[:, :0]
        outcome = definition.run(
            batch_parameters={"dataframe": rows}, result_format=result_format
        )
        success = success and bool(outcome.success)
        results.extend(outcome.to_json_dict().get("results", []))

    result = _scrub(
        {
            "suite_name": suite["name"],
            "success": success,
            "results": results,
            "statistics": {"evaluated_expectations": len(results), "rows": len(frame)},
        },
        identifier_columns,
    )
    failures = _failures(result)
    for failure in failures:
        if failure.column in identifier_columns:
            failure.examples.clear()
    report = ValidationReport(
        suite_name=suite["name"],
        success=success,
        evaluated=len(results),
        failures=failures,
        result=result,
        seconds=time.monotonic() - started,
    )
    log.info(
        "Validated %d rows against %d expectations in %.1f s: %s",
        len(frame),
        report.evaluated,
        report.seconds,
        "pass" if report.success else f"{len(failures)} failed",
    )
    return report


def render_validation_html(report: ValidationReport, *, title: str) -> str:
    """A small self-contained HTML page of a validation result (our Data Docs)."""
    rows = []
    for item in report.result.get("results", []):
        config = item.get("expectation_config", {})
        kwargs = dict(config.get("kwargs", {}))
        column = kwargs.pop("column", "")
        outcome = item.get("result", {})
        observed = outcome.get("observed_value", outcome.get("unexpected_count", ""))
        examples = outcome.get("partial_unexpected_list", [])[:5]
        status = "pass" if item.get("success") else "FAIL"
        rows.append(
            "<tr class='{}'><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td></tr>".format(
                status.lower(),
                status,
                html.escape(str(column)),
                html.escape(config.get("type", "")),
                html.escape(json.dumps(kwargs, default=str)[:300]),
                html.escape(str(observed)[:200]),
                html.escape(", ".join(str(e) for e in examples)),
            )
        )
    verdict = "passed" if report.success else "FAILED"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}"
        "tr.fail{background:#fdd}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>Suite <b>{html.escape(report.suite_name)}</b>: {verdict}, "
        f"{report.evaluated} expectations, {len(report.failures)} failed, "
        f"{report.seconds:.1f} s.</p>"
        "<table><tr><th>status</th><th>column</th><th>expectation</th>"
        "<th>arguments</th><th>observed</th><th>unexpected examples</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
