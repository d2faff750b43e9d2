"""``churnops``: the ML Test Score and the score store from a terminal.

Exit codes: 0 fine, 1 a ``--fail-under`` bar not met, 2 bad usage or an unreachable
store. This is the one module where output goes to stdout with ``print``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from collections.abc import Sequence

from gates.result import Verdict
from gates.rubric import SECTIONS, TESTS_BY_ID
from gates.scoring import Report, report_for_model, report_for_run
from gates.store import ScoreStore

FORMATS = ("table", "json", "markdown")
# The table's verdict column is 13 wide; JSON and Markdown keep the full words.
SHORT_VERDICTS = {Verdict.INSUFFICIENT.value: "insufficient"}


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def render_table(report: Report) -> str:
    """Fixed-width text for a terminal, 88 columns at most per line."""
    lines = [
        f"ML Test Score ({report.scope})",
        f"Final score: {report.final_score:g} of 7 "
        f"(2016 scale: {report.final_score_2016:g} of 14)",
        report.band,
        *textwrap.wrap(report.verdict_summary(), 88),
        "",
        "  ".join(f"{SECTIONS[s]}: {v:g}" for s, v in report.sections.items()),
        "",
        f"{'test':<4} {'pts':>3}  {'verdict':<13} {'value':>9} {'thresh':>9}  reason",
    ]
    for test in report.tests:
        reason = test.reason if len(test.reason) <= 42 else test.reason[:41] + "…"
        verdict = SHORT_VERDICTS.get(test.verdict, test.verdict)
        lines.append(
            f"{test.id:<4} {test.points:>3g}  {verdict:<13} "
            f"{_cell(test.value):>9} {_cell(test.threshold):>9}  {reason}"
        )
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    """A Markdown page, for a pull request, a wiki or the run's notes."""

    def escape(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        f"# ML Test Score: {report.scope}",
        "",
        f"**Final score: {report.final_score:g} / 7** — {report.band}",
        "",
        report.verdict_summary(),
        "",
        "| Section | Score |",
        "|---|---|",
        *[f"| {SECTIONS[s]} | {v:g} |" for s, v in report.sections.items()],
        "",
        "| Test | Title | Points | Verdict | Value | Threshold | Reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for test in report.tests:
        lines.append(
            f"| {test.id} | {escape(test.title)} | {test.points:g} | {test.verdict} | "
            f"{_cell(test.value)} | {_cell(test.threshold)} | {escape(test.reason)} |"
        )
    return "\n".join(lines) + "\n"


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2)
    if fmt == "markdown":
        return render_markdown(report)
    return render_table(report)


def _store(url: str | None) -> ScoreStore:
    from tasks.config import load_settings

    return ScoreStore.open(url or load_settings().score_store_url)


def _report(args: argparse.Namespace) -> int:
    store = _store(args.db)
    if args.last_run:
        matching = [run for run in store.runs() if run.dag_id == args.last_run]
        if not matching:
            print(f"churnops: no runs of {args.last_run!r} recorded", file=sys.stderr)
            return 2
        args.run, args.dag = matching[-1].run_id, args.last_run
    if args.run:
        report = report_for_run(store, args.run, args.dag)
        if all(test.run_id is None for test in report.tests):
            print(
                f"churnops: no results recorded for run {args.run!r}", file=sys.stderr
            )
            return 2
    else:
        report = report_for_model(store, args.model)
    print(render(report, args.format))
    if args.fail_under is not None and report.final_score < args.fail_under:
        print(
            f"churnops: final score {report.final_score:g} is under the required "
            f"{args.fail_under:g}",
            file=sys.stderr,
        )
        return 1
    return 0


def _record_manual(args: argparse.Namespace) -> int:
    store = _store(args.db)
    # A manual result counts for a model version, like an automated one; by default
    # the one `churnops report` shows.
    version = args.model or store.latest_model_version()
    store.record_manual(
        args.test,
        verdict=Verdict(args.verdict),
        reason=args.reason,
        recorded_by=args.by,
        model_version=version,
        evidence=args.evidence,
    )
    target = f"model {version}" if version else "no model version yet"
    print(
        f"recorded {args.test} by hand ({args.verdict}, 0.5 points) by {args.by} "
        f"for {target}"
    )
    return 0


def _generate(args: argparse.Namespace) -> int:
    from tasks.synthetic import write_customers_parquet

    path = write_customers_parquet(args.out, args.rows, args.seed, drift=args.drift)
    print(f"wrote {args.rows:,} synthetic customers to {path}")
    return 0


def _simulate_traffic(args: argparse.Namespace) -> int:
    import os

    from tasks.config import load_settings
    from tasks.labels import simulate_live_traffic
    from tasks.pseudonymize import resolve_pseudonymization_key

    embedded = os.environ.get("CHURNOPS_EMBEDDED", "") == "1"
    key = resolve_pseudonymization_key(allow_generated_key=embedded)
    summary = simulate_live_traffic(
        load_settings(),
        days=args.days,
        customers_per_day=args.customers_per_day,
        key=key,
        drift=args.drift,
        seed=args.seed,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


# Where a customer's rows can live: run snapshots, the prediction log, late labels.
DELETION_PREFIXES = ("runs/", "predictions/", "labels/")


def _delete_customers(args: argparse.Namespace) -> int:
    import datetime as dt
    import os
    from pathlib import Path

    from tasks.config import load_settings
    from tasks.context import RunContext
    from tasks.data_steps import delete_customers_step

    text = sys.stdin.read() if args.ids == "-" else Path(args.ids).read_text("utf-8")
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        print(f"churnops: no customer ids in {args.ids}", file=sys.stderr)
        return 2
    ctx = RunContext(
        settings=load_settings(),
        dag_id="deletion_requests",
        run_id=f"deletion__{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S')}",
    )
    summary = delete_customers_step(
        ctx,
        ids,
        allow_generated_key=os.environ.get("CHURNOPS_EMBEDDED", "") == "1",
        prefixes=DELETION_PREFIXES,
    )
    print(json.dumps(summary, indent=2))
    return 0 if summary["verdict"] == Verdict.PASS.value else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="churnops", description="The churn pipeline's ML Test Score."
    )
    parser.add_argument(
        "--db", help="score store SQLAlchemy URL (default: from config/churnops.yaml)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    report = commands.add_parser("report", help="print the ML Test Score")
    scope = report.add_mutually_exclusive_group()
    scope.add_argument("--run", help="one DAG run id")
    scope.add_argument("--model", help="a model version (default: the latest)")
    scope.add_argument(
        "--last-run",
        nargs="?",
        const="churn_training",
        metavar="DAG",
        help="the most recent run of DAG (default churn_training)",
    )
    report.add_argument(
        "--dag", help="with --run: the DAG of the run, when run ids repeat across DAGs"
    )
    report.add_argument("--format", choices=FORMATS, default="table")
    report.add_argument(
        "--fail-under",
        type=float,
        metavar="SCORE",
        help="exit 1 when the final score is below SCORE",
    )
    report.set_defaults(handler=_report)

    manual = commands.add_parser(
        "record-manual", help="record a test run by hand and documented (0.5 points)"
    )
    manual.add_argument("test", choices=sorted(TESTS_BY_ID), metavar="TEST")
    manual.add_argument(
        "--verdict",
        required=True,
        choices=[v.value for v in Verdict if v.value != "not run"],
    )
    manual.add_argument("--reason", required=True, help="what was checked and found")
    manual.add_argument("--by", required=True, help="who ran the test")
    manual.add_argument(
        "--model", help="the model version it applies to (default: the latest)"
    )
    manual.add_argument("--evidence", help="a link to the documentation")
    manual.set_defaults(handler=_record_manual)

    generate = commands.add_parser("generate", help="write synthetic customers")
    generate.add_argument("--rows", type=int, default=20_000)
    generate.add_argument("--seed", type=int, default=7)
    generate.add_argument("--drift", action="store_true")
    generate.add_argument("--out", required=True, help="Parquet file to write")
    generate.set_defaults(handler=_generate)

    simulate = commands.add_parser(
        "simulate-traffic",
        help="send days of synthetic customers through the prediction service and "
        "store their late labels",
    )
    simulate.add_argument("--days", type=int, default=7)
    simulate.add_argument("--customers-per-day", type=int, default=150)
    simulate.add_argument("--drift", action="store_true", help="switch drift on")
    simulate.add_argument("--seed", type=int, default=2027)
    simulate.set_defaults(handler=_simulate_traffic)

    delete = commands.add_parser(
        "delete-customers",
        help="honour a deletion request: remove customers from every stored "
        "snapshot, prediction log and label file, and record it",
    )
    delete.add_argument(
        "--ids", required=True, help="a file with one raw customer id a line, or -"
    )
    delete.set_defaults(handler=_delete_customers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except Exception as exc:  # the CLI's boundary: one line, not a traceback
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError | ValueError | KeyError | OSError):
            print(f"churnops: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
