"""Benchmark: churnops ingestion, pseudonymization and validation against plain pandas.

Both sides read the same Parquet file of synthetic customers, hold it to the same
contract, replace the ids by the same keyed HMAC and check the same expectation
suite; churnops does it through ``tasks.ingest``, ``tasks.pseudonymize`` and Great
Expectations (``tasks.validation``), the reference with a few lines of pandas. Each
side runs in its own subprocess, so peak memory (``ru_maxrss``) is its own; library
imports are timed apart from the work. Each side runs ``--repeats`` times and keeps
its fastest time, because the machine is shared.

    .venv/bin/python bench/bench_data.py [--rows 1000000] [--repeats 2]

Prints the figures and the ratio; exits 1 when churnops takes more than
``--max-ratio`` times the pandas time or more than ``--max-rss-mb`` of memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
KEY = b"benchmark-key-0123456789abcdef"


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_churnops(source: Path, suite_path: Path) -> dict[str, Any]:
    """The pipeline's own ingest, pseudonymize and validate functions."""
    started = time.perf_counter()
    import great_expectations  # noqa: F401

    from tasks.config import load_dataset
    from tasks.ingest import ingest_customers
    from tasks.pseudonymize import pseudonymize_customers
    from tasks.validation import validate_customers

    imported = time.perf_counter()
    dataset = load_dataset(PROJECT_ROOT / "config" / "datasets" / "synthetic.yaml")
    contract = dataset.contract
    suite = json.loads(suite_path.read_text(encoding="utf-8"))

    ingested = ingest_customers(f"file://{source}", contract)
    read_done = time.perf_counter()
    masked = pseudonymize_customers(ingested.frame, contract, KEY)
    masked_done = time.perf_counter()
    report = validate_customers(
        masked,
        suite,
        identifier_columns={contract.id_column, *contract.direct_identifiers},
    )
    finished = time.perf_counter()
    return {
        "rows": len(masked),
        "import_s": imported - started,
        "ingest_s": read_done - imported,
        "pseudonymize_s": masked_done - read_done,
        "validate_s": finished - masked_done,
        "work_s": finished - imported,
        "passed": report.success,
        "expectations": report.evaluated,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _pandas_check(frame: Any, expectation: dict[str, Any]) -> bool:
    import pandas as pd

    kind, kwargs = expectation["type"], expectation["kwargs"]
    if kind == "expect_table_columns_to_match_set":
        return set(frame.columns) == set(kwargs["column_set"])
    column = frame[kwargs["column"]]
    if kind == "expect_column_values_to_be_unique":
        return not column.dropna().duplicated().any()
    if kind == "expect_column_values_to_not_be_null":
        return not column.isna().any()
    if kind == "expect_column_values_to_be_in_type_list":
        names = {str(column.dtype), type(column.dtype).__name__}
        return (
            bool(names & set(kwargs["type_list"]))
            or (
                "StringDtype" in kwargs["type_list"]
                and pd.api.types.is_string_dtype(column)
            )
            or (
                column.dtype.kind == "M"
                and any("datetime" in t for t in kwargs["type_list"])
            )
        )
    values = column.dropna()
    if kind == "expect_column_values_to_be_in_set":
        return bool(values.isin(kwargs["value_set"]).all())
    if kind == "expect_column_values_to_be_between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        return bool(
            (low is None or (values >= low).all())
            and (high is None or (values <= high).all())
        )
    raise ValueError(f"no pandas equivalent for {kind}")


def run_pandas(source: Path, suite_path: Path) -> dict[str, Any]:
    """The same reads and checks written directly in pandas."""
    started = time.perf_counter()
    import hmac

    import pandas as pd
    import yaml

    imported = time.perf_counter()
    config = yaml.safe_load(
        (PROJECT_ROOT / "config" / "datasets" / "synthetic.yaml").read_text(
            encoding="utf-8"
        )
    )
    contract = config["contract"]
    suite = json.loads(suite_path.read_text(encoding="utf-8"))

    frame = pd.read_parquet(source)
    missing = set(contract["columns"]) - set(frame.columns)
    assert not missing, missing
    for name, spec in contract["columns"].items():
        if spec["type"] in ("integer", "float"):
            assert pd.api.types.is_numeric_dtype(frame[name]), name
    ids = frame[contract["id_column"]]
    assert ids.notna().all() and not ids.duplicated().any()
    label = frame[contract["label"]["column"]]
    assert label.isin(contract["label"]["classes"]).all() and label.nunique() >= 2
    read_done = time.perf_counter()

    frame = frame.drop(columns=list(contract.get("direct_identifiers") or []))
    frame[contract["id_column"]] = [
        hmac.digest(KEY, str(value).encode("utf-8"), "sha256").hex()[:32]
        for value in ids.to_numpy()
    ]
    masked_done = time.perf_counter()
    outcomes = [_pandas_check(frame, e) for e in suite["expectations"]]
    finished = time.perf_counter()
    return {
        "rows": len(frame),
        "import_s": imported - started,
        "ingest_s": read_done - imported,
        "pseudonymize_s": masked_done - read_done,
        "validate_s": finished - masked_done,
        "work_s": finished - imported,
        "passed": all(outcomes),
        "expectations": len(outcomes),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _prepare(rows: int, folder: Path) -> tuple[Path, Path]:
    """Write the customers and build the suite from a sample of them, once."""
    sys.path.insert(0, str(PROJECT_ROOT))
    from tasks.config import load_dataset
    from tasks.ingest import ingest_customers
    from tasks.pseudonymize import pseudonymize_customers
    from tasks.synthetic import write_customers_parquet
    from tasks.validation import build_expectation_suite

    source = write_customers_parquet(folder / "customers.parquet", rows, seed=7)
    dataset = load_dataset(PROJECT_ROOT / "config" / "datasets" / "synthetic.yaml")
    sample = ingest_customers(
        f"synthetic://{min(rows, 100_000)}?seed=7", dataset.contract
    )
    masked = pseudonymize_customers(sample.frame, dataset.contract, KEY)
    suite = build_expectation_suite(masked, dataset, range_tolerance=0.5)
    suite_path = folder / "suite.json"
    suite_path.write_text(json.dumps(suite), encoding="utf-8")
    return source, suite_path


def _run_side(side: str, source: Path, suite_path: Path) -> dict[str, Any]:
    completed = subprocess.run(
        [
            sys.executable,
            __file__,
            "--side",
            side,
            "--source",
            str(source),
            "--suite",
            str(suite_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=PROJECT_ROOT,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the {side} side failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-ratio", type=float, default=3.0)
    parser.add_argument("--max-rss-mb", type=float, default=2048.0)
    parser.add_argument("--side", choices=("churnops", "pandas"))
    parser.add_argument("--source", type=Path)
    parser.add_argument("--suite", type=Path)
    args = parser.parse_args(argv)

    if args.side:
        run = run_churnops if args.side == "churnops" else run_pandas
        print(json.dumps(run(args.source, args.suite)))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        source, suite_path = _prepare(args.rows, Path(tmp))
        best: dict[str, dict[str, Any]] = {}
        for _ in range(args.repeats):
            for side in ("pandas", "churnops"):
                figures = _run_side(side, source, suite_path)
                if side not in best or figures["work_s"] < best[side]["work_s"]:
                    best[side] = figures

    for side, figures in best.items():
        print(
            f"{side:9s} rows {figures['rows']:,}  work {figures['work_s']:.2f} s "
            f"(ingest {figures['ingest_s']:.2f}, pseudonymize "
            f"{figures['pseudonymize_s']:.2f}, validate {figures['validate_s']:.2f}; "
            f"imports {figures['import_s']:.2f})  {figures['expectations']} checks "
            f"{'pass' if figures['passed'] else 'FAIL'}  peak RSS "
            f"{figures['peak_rss_mb']:.0f} MB"
        )
    ratio = best["churnops"]["work_s"] / best["pandas"]["work_s"]
    rss = best["churnops"]["peak_rss_mb"]
    print(
        f"ratio churnops/pandas: {ratio:.2f} (target <= {args.max_ratio:g}); "
        f"churnops peak RSS {rss:.0f} MB (target < {args.max_rss_mb:g} MB)"
    )
    both_passed = best["churnops"]["passed"] and best["pandas"]["passed"]
    if not both_passed:
        print(
            "the suite did not pass on both sides: the comparison is not like for like"
        )
    return 0 if ratio <= args.max_ratio and rss < args.max_rss_mb and both_passed else 1


if __name__ == "__main__":
    sys.exit(main())
