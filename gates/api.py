"""The ML Test Score over HTTP: a JSON API and a server-rendered dashboard page.

Plain FastAPI with no Airflow import, so it runs under uvicorn on its own as well as
mounted inside the Airflow API server by ``plugins/churnops_plugin.py``. Who may read
it is decided by the ``auth_dependency`` the caller hands in; without one every request
is let through, which is only right for tests and a loopback-only process.

The page is one HTML document with inline CSS and no JavaScript: nothing to build,
nothing fetched from a CDN (the machines it runs on may have no internet), and plain
GET forms for the scope, which work inside the iframe the Airflow UI shows it in.
Every link is relative to the page, so the app works under any mount prefix.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from gates.scoring import Report
    from gates.store import RunRecord, ScoreStore

log = logging.getLogger(__name__)

# Section scores are sums of seven tests' points, so a bar is full at 7.
SECTION_MAX_POINTS = 7.0
# How many runs the page's run selector offers, newest first; the API lists all.
RUNS_IN_SELECTOR = 200
# How many deployments and notifications the page shows, newest first.
RECENT_EVENTS_SHOWN = 8

Authenticate = Callable[[Request], Awaitable[str]]


class AuthenticationRequired(Exception):
    """The request carries no valid identity; API calls get 401, pages a login."""

    def __init__(self, reason: str, *, login_url: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.login_url = login_url


class ReportNotFound(LookupError):
    """The run or model version asked for has no results in the score store."""


class ReportScopeError(ValueError):
    """The request names its scope in a way that has no single answer."""


class _LoginRedirect(Exception):
    def __init__(self, login_url: str) -> None:
        super().__init__(login_url)
        self.login_url = login_url


class _StoreHolder:
    """Open the score store on first use, so importing the app touches no database."""

    def __init__(self, url: str | None) -> None:
        self._url = url
        self._store: ScoreStore | None = None
        self._lock = threading.Lock()

    def get(self) -> ScoreStore:
        with self._lock:
            if self._store is None:
                from gates.store import ScoreStore

                url = self._url
                if url is None:
                    from tasks.config import load_settings

                    url = load_settings().score_store_url
                self._store = ScoreStore.open(url)
                log.info(
                    "Dashboard reads the score store at %s",
                    self._store.engine.url.render_as_string(hide_password=True),
                )
            return self._store


def select_report(
    store: ScoreStore, *, run: str | None = None, model: str | None = None
) -> Report:
    # ``run`` is a run id, or ``DAG/RUN`` where run ids repeat across DAGs (neither
    # Airflow DAG ids nor run ids may contain a slash, so the split is unambiguous).
    """The report of one run, one model version, or by default the latest model.

    Raises :class:`ReportNotFound` when a named run or version has no results, rather
    than showing a score of zero that looks like a real, very bad, result.
    """
    from gates.scoring import AmbiguousRun, report_for_model, report_for_run

    if run and model:
        raise ReportScopeError(
            f"ask for a run or a model version, not both (got run={run!r}, "
            f"model={model!r})"
        )
    if run:
        dag, _, run_id = run.rpartition("/")
        try:
            report = report_for_run(store, run_id, dag or None)
        except AmbiguousRun as exc:
            raise ReportScopeError(f"{exc}; in the API, run=DAG/RUN") from exc
        what = f"run {run!r}"
    else:
        report = report_for_model(store, model or None)
        what = f"model version {model!r}"
    if (run or model) and all(test.run_id is None for test in report.tests):
        raise ReportNotFound(
            f"no results recorded for {what}; GET api/runs lists the runs and "
            "model versions the score store knows"
        )
    return report


async def _identify(request: Request) -> str | None:
    authenticate: Authenticate | None = request.app.state.authenticate
    if authenticate is None:
        return None
    return await authenticate(request)


async def _api_user(request: Request) -> str | None:
    try:
        return await _identify(request)
    except AuthenticationRequired as exc:
        raise HTTPException(
            status_code=401, detail=exc.reason, headers={"WWW-Authenticate": "Bearer"}
        ) from exc


async def _page_user(request: Request) -> str | None:
    try:
        return await _identify(request)
    except AuthenticationRequired as exc:
        if exc.login_url:
            raise _LoginRedirect(exc.login_url) from exc
        raise HTTPException(status_code=401, detail=exc.reason) from exc


ApiUser = Annotated[str | None, Depends(_api_user)]
PageUser = Annotated[str | None, Depends(_page_user)]
RunParam = Annotated[
    str | None, Query(description="one DAG run: RUN, or DAG/RUN where ids repeat")
]
ModelParam = Annotated[str | None, Query(description="a model version")]
AliasParam = Annotated[str | None, Query(description="a registry alias")]


def create_app(
    store_url: str | None = None, *, auth_dependency: Authenticate | None = None
) -> FastAPI:
    """Build the dashboard and API app.

    ``store_url`` is a SQLAlchemy URL; without one it is read from the settings on
    the first request (``CHURNOPS_SCORE_DB_URL`` wins). ``auth_dependency`` is awaited
    with every request and returns the user's name, or raises
    :class:`AuthenticationRequired` (an HTTPException for other refusals, such as 403).
    """
    holder = _StoreHolder(store_url)
    app = FastAPI(
        title="churnops ML Test Score",
        description="The ML Test Score of the churn pipeline, from the score store.",
        docs_url=None,
        redoc_url=None,
    )

    app.state.authenticate = auth_dependency
    app.state.store_holder = holder

    @app.exception_handler(_LoginRedirect)
    async def _redirect_to_login(request: Request, exc: _LoginRedirect) -> Response:
        return RedirectResponse(exc.login_url, status_code=303)

    @app.exception_handler(ReportNotFound)
    async def _not_found(request: Request, exc: ReportNotFound) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ReportScopeError)
    async def _bad_scope(request: Request, exc: ReportScopeError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(SQLAlchemyError)
    async def _store_down(request: Request, exc: SQLAlchemyError) -> Response:
        return JSONResponse({"detail": _store_down_message(exc)}, status_code=503)

    @app.get("/api/report")
    def get_report(
        user: ApiUser, run: RunParam = None, model: ModelParam = None
    ) -> dict[str, Any]:
        """The same JSON as ``churnops report --format json``."""
        return select_report(holder.get(), run=run, model=model).to_dict()

    @app.get("/api/runs")
    def get_runs(user: ApiUser) -> list[dict[str, Any]]:
        """Every run the score store knows, oldest first."""
        return [_run_json(run) for run in holder.get().runs()]

    @app.get("/api/deployments")
    def get_deployments(
        user: ApiUser, alias: AliasParam = None
    ) -> list[dict[str, Any]]:
        """The deployment history (promotions, rollbacks), oldest first."""
        return _rows_json(holder.get().deployments(alias))

    @app.get("/api/notifications")
    def get_notifications(user: ApiUser) -> list[dict[str, Any]]:
        """Notifications the pipeline raised for a person, oldest first."""
        return _rows_json(holder.get().notifications())

    @app.get("/", response_class=HTMLResponse)
    def get_dashboard(
        user: PageUser, run: RunParam = None, model: ModelParam = None
    ) -> HTMLResponse:
        """The dashboard page."""
        try:
            store = holder.get()
            report = select_report(store, run=run, model=model)
        except ReportNotFound as exc:
            return HTMLResponse(_error_page(str(exc)), status_code=404)
        except ReportScopeError as exc:
            return HTMLResponse(_error_page(str(exc)), status_code=400)
        except SQLAlchemyError as exc:
            message = _store_down_message(exc)
            return HTMLResponse(_error_page(message), status_code=503)
        page = render_dashboard(
            report,
            runs=store.runs(),
            deployments=store.deployments(),
            notifications=store.notifications(),
            selected_run=run,
            selected_model=model or report.model_version,
            user=user,
        )
        return HTMLResponse(page)

    return app


def _store_down_message(exc: Exception) -> str:
    log.warning("Score store unreadable: %s", exc)
    return (
        "the score store cannot be read; check score_store_url in "
        f"config/churnops.yaml or CHURNOPS_SCORE_DB_URL ({type(exc).__name__})"
    )


def _aware(moment: Any) -> Any:
    # SQLite hands timestamps back without a zone; the store writes them in UTC.
    if isinstance(moment, dt.datetime) and moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment


def _rows_json(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        jsonable_encoder({key: _aware(value) for key, value in row.items()})
        for row in rows
    ]


def _run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "model_version": run.model_version,
        "code_commit": run.code_commit,
        "dataset": run.dataset,
        "started_at": _aware(run.started_at).isoformat(),
    }


# The page -------------------------------------------------------------------------

_VERDICT_CLASSES = {
    "pass": "v-pass",
    "fail": "v-fail",
    "warn": "v-warn",
    "insufficient evidence": "v-insufficient",
    "not run": "v-notrun",
}

_STYLE = """
:root { color-scheme: light dark; --fg: #1d2430; --muted: #5b6575; --line: #d9dee6;
  --panel: #f5f7fa; --bar: #3b6fd8; --pass: #1f7a3a; --fail: #b3261e;
  --warn: #9a6700; --insufficient: #4f5d95; --notrun: #6b7280; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e9ef; --muted: #a3acba;
  --line: #3a4250; --panel: #222833; --bar: #6f9cf0; --pass: #5cc27a;
  --fail: #f08078; --warn: #e0b050; --insufficient: #a3b0e8; --notrun: #9aa3af; } }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg); margin: 0; padding: 20px 28px; }
h1 { font-size: 20px; margin: 0 0 2px; } h2 { font-size: 15px; margin: 24px 0 8px; }
.muted { color: var(--muted); }
.top { display: flex; flex-wrap: wrap; gap: 28px; align-items: stretch;
  margin-top: 14px; }
.score { background: var(--panel); border-radius: 8px; padding: 14px 20px;
  min-width: 240px; max-width: 360px; }
.score .big { font-size: 56px; font-weight: 700; line-height: 1; }
.score .big small { font-size: 20px; font-weight: 400; color: var(--muted); }
.sections { flex: 1; min-width: 320px; max-width: 560px; }
.bar-row { display: grid; grid-template-columns: 150px 1fr 52px; gap: 10px;
  align-items: center; margin: 8px 0; }
.bar { background: var(--panel); border: 1px solid var(--line); border-radius: 4px;
  height: 16px; overflow: hidden; }
.bar span { display: block; height: 100%; background: var(--bar); }
.bar-row.weakest .label { font-weight: 700; }
form { display: inline-flex; gap: 6px; align-items: center; margin-right: 18px; }
select, button { font: inherit; padding: 2px 6px; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: left;
  vertical-align: top; }
th { font-weight: 600; background: var(--panel); }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.verdict { font-weight: 600; white-space: nowrap; }
.v-pass { color: var(--pass); } .v-fail { color: var(--fail); }
.v-warn { color: var(--warn); } .v-insufficient { color: var(--insufficient); }
.v-notrun { color: var(--notrun); }
tr.section-head th { background: none; padding-top: 14px; font-size: 13px;
  color: var(--muted); border-bottom: 2px solid var(--line); }
code { font-size: 12px; word-break: break-all; }
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _evidence_cell(uri: str | None) -> str:
    """A link a browser can open; other URIs (file://, s3://) shown as text."""
    if not uri:
        return ""
    if uri.startswith(("https://", "http://")):
        return f'<a href="{_e(uri)}" target="_blank" rel="noopener">open</a>'
    if uri.startswith("gs://"):
        bucket_and_key = uri.removeprefix("gs://")
        console = f"https://storage.cloud.google.com/{bucket_and_key}"
        name = bucket_and_key.rsplit("/", 1)[-1]
        return (
            f'<a href="{_e(console)}" title="{_e(uri)}" target="_blank" '
            f'rel="noopener">{_e(name)}</a>'
        )
    return f"<code>{_e(uri)}</code>"


def _selectors(
    runs: list[RunRecord], selected_run: str | None, selected_model: str | None
) -> str:
    newest_first = list(reversed(runs))
    versions = list(dict.fromkeys(r.model_version for r in newest_first))
    model_options = "".join(
        f'<option value="{_e(v)}"{" selected" if v == selected_model else ""}>'
        f"{_e(v)}</option>"
        for v in versions
        if v
    )

    def chosen(run: RunRecord) -> str:
        named = selected_run in (f"{run.dag_id}/{run.run_id}", run.run_id)
        return " selected" if named else ""

    run_options = "".join(
        f'<option value="{_e(r.dag_id)}/{_e(r.run_id)}"{chosen(r)}>'
        f"{_e(r.dag_id)} / {_e(r.run_id)}</option>"
        for r in newest_first[:RUNS_IN_SELECTOR]
    )
    placeholder = (
        "" if selected_run else '<option value="" selected>choose a run</option>'
    )
    return (
        '<form method="get" action="./">'
        '<label for="model">Model version</label>'
        f'<select id="model" name="model"><option value="">latest</option>'
        f"{model_options}</select><button>Show</button></form>"
        '<form method="get" action="./">'
        '<label for="run">Run</label>'
        f'<select id="run" name="run">{placeholder}{run_options}</select>'
        "<button>Show</button></form>"
    )


def _section_bars(report: Report) -> str:
    from gates.rubric import SECTIONS

    rows = []
    for section, points in report.sections.items():
        width = max(0.0, min(1.0, points / SECTION_MAX_POINTS)) * 100
        weakest = " weakest" if section in report.weakest_sections else ""
        rows.append(
            f'<div class="bar-row{weakest}" data-section="{_e(section)}">'
            f'<span class="label">{_e(SECTIONS[section])}</span>'
            f'<div class="bar" role="img" aria-label="{points:g} of 7">'
            f'<span style="width:{width:.1f}%"></span></div>'
            f'<span class="num">{points:g} / 7</span></div>'
        )
    return "".join(rows)


def _test_rows(report: Report) -> str:
    from gates.rubric import SECTIONS

    rows = []
    previous_section = None
    for test in report.tests:
        if test.section != previous_section:
            points = report.sections[test.section]
            rows.append(
                f'<tr class="section-head"><th colspan="8">'
                f"{_e(SECTIONS[test.section])} · {points:g} / 7</th></tr>"
            )
        previous_section = test.section
        verdict_class = _VERDICT_CLASSES.get(test.verdict, "v-notrun")
        rows.append(
            f'<tr id="test-{_e(test.id)}">'
            f"<td><strong>{_e(test.id)}</strong></td>"
            f"<td>{_e(test.title)}</td>"
            f'<td class="num">{test.points:g}</td>'
            f'<td class="verdict {verdict_class}">{_e(test.verdict)}</td>'
            f'<td class="num">{_e(_number(test.value))}</td>'
            f'<td class="num">{_e(_number(test.threshold))}</td>'
            f"<td>{_e(test.reason)}</td>"
            f"<td>{_evidence_cell(test.evidence)}</td></tr>"
        )
    return "".join(rows)


def _event_list(title: str, rows: list[dict[str, Any]], fields: list[str]) -> str:
    if not rows:
        return ""
    recent = list(reversed(rows))[:RECENT_EVENTS_SHOWN]
    head = "".join(f"<th>{_e(name)}</th>" for name in fields)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{_e(_when(row.get(name)) if name == 'at' else row.get(name))}</td>"
            for name in fields
        )
        + "</tr>"
        for row in recent
    )
    return f"<h2>{_e(title)}</h2><table><tr>{head}</tr>{body}</table>"


def _when(moment: Any) -> str:
    if isinstance(moment, dt.datetime):
        return _aware(moment).strftime("%Y-%m-%d %H:%M UTC")
    return "" if moment is None else str(moment)


def render_dashboard(
    report: Report,
    *,
    runs: list[RunRecord],
    deployments: list[dict[str, Any]],
    notifications: list[dict[str, Any]],
    selected_run: str | None = None,
    selected_model: str | None = None,
    user: str | None = None,
) -> str:
    """The dashboard as one HTML document; every stored text is escaped."""
    query = urlencode(
        {k: v for k, v in (("run", selected_run), ("model", selected_model)) if v}
    )
    json_link = "api/report" + (f"?{query}" if query else "")
    signed_in = f" · signed in as {_e(user)}" if user else ""
    failures = len(report.failures)
    failure_note = (
        f'<p class="v-fail"><strong>{failures} failed test'
        f"{'s' if failures != 1 else ''}</strong></p>"
        if failures
        else ""
    )
    deployment_list = _event_list(
        "Recent deployments",
        deployments,
        ["at", "alias", "action", "model_version", "previous_version", "actor"],
    )
    notification_list = _event_list(
        "Recent notifications", notifications, ["at", "severity", "topic", "message"]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ML Test Score · {_e(report.scope)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>ML Test Score</h1>
<div class="muted">{_e(report.scope)}{signed_in} ·
<a href="{_e(json_link)}">JSON</a></div>
<div class="top">
<div class="score" id="final-score">
<div class="big" data-score="{report.final_score:g}">{report.final_score:g}
<small>/ 7</small></div>
<p>{_e(report.band)}</p>
<p class="verdicts">{_e(report.verdict_summary())}</p>
<p class="muted">2016 scale: {report.final_score_2016:g} / 14. The final score is
the lowest of the four section sums.</p>{failure_note}
</div>
<div class="sections">{_section_bars(report)}</div>
</div>
<h2>Scope</h2>
{_selectors(runs, selected_run, selected_model)}
<h2>The 28 tests</h2>
<table id="tests"><thead><tr><th>Test</th><th>Title</th><th>Points</th>
<th>Verdict</th><th>Value</th><th>Threshold</th><th>Reason</th><th>Evidence</th>
</tr></thead><tbody>{_test_rows(report)}</tbody></table>
{deployment_list}
{notification_list}
</body></html>
"""


def _error_page(message: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>ML Test Score</title><style>{_STYLE}</style></head>"
        f"<body><h1>ML Test Score</h1><p class='v-fail'>{_e(message)}</p>"
        "<p><a href='./'>Back to the latest model's score</a></p></body></html>"
    )
