"""The score store: every gate's result, the deployment history and notifications.

SQL through SQLAlchemy, so the embedded SQLite file and a production PostgreSQL hold
the same tables. The schema carries a version and upgrades in place, step by step, so
scores recorded by an older churnops survive an upgrade.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from gates.result import POINTS_MANUAL, GateResult, Verdict
from gates.rubric import rubric_test

log = logging.getLogger(__name__)

MANUAL_DAG_ID = "manual"


class ScoreStoreError(RuntimeError):
    """The score store cannot be read or written as asked."""


metadata = sa.MetaData()

schema_version = sa.Table(
    "churnops_schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

runs = sa.Table(
    "churnops_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("model_version", sa.String(100)),
    sa.Column("code_commit", sa.String(64)),
    sa.Column("dataset", sa.String(250)),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("dag_id", "run_id", name="uq_churnops_runs_dag_run"),
)


def _result_columns(*, with_recorded_by: bool) -> list[sa.Column[Any]]:
    columns: list[sa.Column[Any]] = [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "run_pk", sa.Integer, sa.ForeignKey("churnops_runs.id"), nullable=False
        ),
        sa.Column("test_id", sa.String(8), nullable=False),
        sa.Column("section", sa.String(20), nullable=False),
        sa.Column("points", sa.Float, nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("threshold", sa.Float),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("evidence", sa.Text),
        sa.Column("details", sa.Text),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    ]
    if with_recorded_by:
        # Schema version 2: who recorded a manual result.
        columns.append(sa.Column("recorded_by", sa.String(120)))
    return columns


results = sa.Table(
    "churnops_results", metadata, *_result_columns(with_recorded_by=True)
)

deployments = sa.Table(
    "churnops_deployments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("alias", sa.String(40), nullable=False),
    sa.Column("model_version", sa.String(100), nullable=False),
    sa.Column("previous_version", sa.String(100)),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("actor", sa.String(120), nullable=False),
    sa.Column("dag_id", sa.String(250)),
    sa.Column("run_id", sa.String(250)),
    sa.Column("duration_s", sa.Float),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

notifications = sa.Table(
    "churnops_notifications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.String(80), nullable=False),
    sa.Column("severity", sa.String(20), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("dag_id", sa.String(250)),
    sa.Column("run_id", sa.String(250)),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)


def _migrate_to_1(conn: Connection) -> None:
    """Runs and results, without who recorded them."""
    v1_metadata = sa.MetaData()
    runs.to_metadata(v1_metadata).create(conn)
    sa.Table(
        "churnops_results", v1_metadata, *_result_columns(with_recorded_by=False)
    ).create(conn)


def _migrate_to_2(conn: Connection) -> None:
    """Who recorded a result (manual scores are audited), deployments, notifications."""
    conn.execute(
        sa.text("ALTER TABLE churnops_results ADD COLUMN recorded_by VARCHAR(120)")
    )
    deployments.create(conn)
    notifications.create(conn)


MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_migrate_to_1, _migrate_to_2)
LATEST_VERSION = len(MIGRATIONS)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(moment: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands timestamps back without a zone; everything here is stored in UTC.
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment


@dataclass(frozen=True)
class StoredResult:
    """A gate result as read back from the store, with the run it belongs to."""

    test_id: str
    section: str
    points: float
    verdict: str
    value: float | None
    threshold: float | None
    reason: str
    evidence: str | None
    details: dict[str, Any]
    recorded_at: dt.datetime
    recorded_by: str | None
    dag_id: str
    run_id: str
    model_version: str | None


@dataclass(frozen=True)
class RunRecord:
    dag_id: str
    run_id: str
    model_version: str | None
    code_commit: str | None
    dataset: str | None
    started_at: dt.datetime


class ScoreStore:
    """Read and write rubric results through any SQLAlchemy URL."""

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or sa.create_engine(url, future=True)

    @classmethod
    def open(cls, url: str) -> ScoreStore:
        """Connect and bring the schema up to date."""
        store = cls(url)
        store.migrate()
        return store

    def schema_version(self) -> int:
        if not sa.inspect(self.engine).has_table(schema_version.name):
            return 0
        with self.engine.connect() as conn:
            current = conn.execute(sa.select(sa.func.max(schema_version.c.version)))
            return int(current.scalar() or 0)

    def migrate(self, target: int = LATEST_VERSION) -> int:
        """Apply the migrations between the stored version and ``target``."""
        if not 0 <= target <= LATEST_VERSION:
            raise ScoreStoreError(
                f"schema version {target} does not exist; latest is {LATEST_VERSION}"
            )
        with self.engine.begin() as conn:
            schema_version.create(conn, checkfirst=True)
            current = int(
                conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
                or 0
            )
            if current > LATEST_VERSION:
                raise ScoreStoreError(
                    f"the score store at {self.engine.url.render_as_string()} has "
                    f"schema version {current}, newer than this churnops "
                    f"({LATEST_VERSION}); upgrade churnops"
                )
            for version in range(current + 1, target + 1):
                MIGRATIONS[version - 1](conn)
                conn.execute(
                    schema_version.insert().values(version=version, applied_at=_now())
                )
                log.info("Score store schema upgraded to version %d", version)
        return max(current, target)

    # Runs -----------------------------------------------------------------------

    def start_run(
        self,
        dag_id: str,
        run_id: str,
        *,
        model_version: str | None = None,
        code_commit: str | None = None,
        dataset: str | None = None,
    ) -> None:
        """Register a run, or fill in what an earlier call did not know yet."""
        with self.engine.begin() as conn:
            self._ensure_run(conn, dag_id, run_id)
            values = {
                key: value
                for key, value in (
                    ("model_version", model_version),
                    ("code_commit", code_commit),
                    ("dataset", dataset),
                )
                if value is not None
            }
            if values:
                conn.execute(
                    runs.update()
                    .where(runs.c.dag_id == dag_id, runs.c.run_id == run_id)
                    .values(**values)
                )

    def _ensure_run(self, conn: Connection, dag_id: str, run_id: str) -> int:
        query = sa.select(runs.c.id).where(
            runs.c.dag_id == dag_id, runs.c.run_id == run_id
        )
        found = conn.execute(query).scalar()
        if found is not None:
            return int(found)
        inserted = conn.execute(
            runs.insert().values(dag_id=dag_id, run_id=run_id, started_at=_now())
        )
        key = inserted.inserted_primary_key
        if key is None:
            raise ScoreStoreError(f"the database returned no id for run {run_id!r}")
        return int(key[0])

    def runs(self) -> list[RunRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(runs).order_by(runs.c.id)).mappings().all()
        return [
            RunRecord(
                dag_id=row["dag_id"],
                run_id=row["run_id"],
                model_version=row["model_version"],
                code_commit=row["code_commit"],
                dataset=row["dataset"],
                started_at=_aware(row["started_at"]) or _now(),
            )
            for row in rows
        ]

    # Results --------------------------------------------------------------------

    def record(self, dag_id: str, run_id: str, result: GateResult) -> None:
        """Store one result of a run; a run may record a test more than once."""
        with self.engine.begin() as conn:
            run_pk = self._ensure_run(conn, dag_id, run_id)
            conn.execute(
                results.insert().values(
                    run_pk=run_pk,
                    test_id=result.test_id,
                    section=result.section,
                    points=result.points,
                    verdict=result.verdict.value,
                    value=result.value,
                    threshold=result.threshold,
                    reason=result.reason,
                    evidence=result.evidence,
                    details=json.dumps(result.details, default=str),
                    recorded_at=_now(),
                    recorded_by=result.recorded_by,
                )
            )
        log.info(
            "Gate %s: %s (points %.1f) %s",
            result.test_id,
            result.verdict.value,
            result.points,
            result.reason,
        )

    def record_manual(
        self,
        test_id: str,
        *,
        verdict: Verdict,
        reason: str,
        recorded_by: str,
        model_version: str | None = None,
        evidence: str | None = None,
    ) -> None:
        """Record a test run by hand and documented: half a point, audited by name."""
        if not recorded_by.strip():
            raise ScoreStoreError(
                f"a manual result for {test_id} needs the name of who ran it"
            )
        rubric_test(test_id)
        run_id = f"manual__{_now().strftime('%Y%m%dT%H%M%S.%f')}"
        self.start_run(MANUAL_DAG_ID, run_id, model_version=model_version)
        self.record(
            MANUAL_DAG_ID,
            run_id,
            GateResult(
                test_id,
                verdict,
                reason,
                points=POINTS_MANUAL,
                evidence=evidence,
                recorded_by=recorded_by,
            ),
        )

    def _select_results(self) -> sa.Select[Any]:
        return (
            sa.select(results, runs.c.dag_id, runs.c.run_id, runs.c.model_version)
            .join(runs, runs.c.id == results.c.run_pk)
            .order_by(results.c.id)
        )

    @staticmethod
    def _to_result(row: Any) -> StoredResult:
        return StoredResult(
            test_id=row["test_id"],
            section=row["section"],
            points=float(row["points"]),
            verdict=row["verdict"],
            value=row["value"],
            threshold=row["threshold"],
            reason=row["reason"],
            evidence=row["evidence"],
            details=json.loads(row["details"]) if row["details"] else {},
            recorded_at=_aware(row["recorded_at"]) or _now(),
            recorded_by=row["recorded_by"],
            dag_id=row["dag_id"],
            run_id=row["run_id"],
            model_version=row["model_version"],
        )

    def results(
        self,
        *,
        run_id: str | None = None,
        model_version: str | None = None,
        dag_id: str | None = None,
    ) -> list[StoredResult]:
        """All stored results, oldest first, narrowed to a run or a model version.

        Airflow run ids are unique per DAG only (two DAGs scheduled at the same
        moment share one), so a run is named by ``dag_id`` and ``run_id`` together.
        """
        query = self._select_results()
        if run_id is not None:
            query = query.where(runs.c.run_id == run_id)
        if dag_id is not None:
            query = query.where(runs.c.dag_id == dag_id)
        if model_version is not None:
            query = query.where(runs.c.model_version == model_version)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [self._to_result(row) for row in rows]

    def latest_model_version(self) -> str | None:
        query = (
            sa.select(runs.c.model_version)
            .where(runs.c.model_version.is_not(None))
            .order_by(runs.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    # Deployments and notifications ---------------------------------------------

    def record_deployment(
        self,
        *,
        alias: str,
        model_version: str,
        action: str,
        reason: str,
        actor: str,
        previous_version: str | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
        duration_s: float | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                deployments.insert().values(
                    alias=alias,
                    model_version=model_version,
                    previous_version=previous_version,
                    action=action,
                    reason=reason,
                    actor=actor,
                    dag_id=dag_id,
                    run_id=run_id,
                    duration_s=duration_s,
                    at=_now(),
                )
            )

    def deployments(self, alias: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(deployments).order_by(deployments.c.id)
        if alias is not None:
            query = query.where(deployments.c.alias == alias)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings().all()]

    def notify(
        self,
        topic: str,
        message: str,
        *,
        severity: str = "warning",
        dag_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        """Keep a notification where the dashboard and the CLI can show it."""
        with self.engine.begin() as conn:
            conn.execute(
                notifications.insert().values(
                    topic=topic,
                    severity=severity,
                    message=message,
                    dag_id=dag_id,
                    run_id=run_id,
                    at=_now(),
                )
            )
        # Only a notification someone must act on is a WARNING in the log.
        level = logging.INFO if severity == "info" else logging.WARNING
        log.log(level, "Notification [%s] %s", topic, message)

    def notifications(self) -> list[dict[str, Any]]:
        query = sa.select(notifications).order_by(notifications.c.id)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings().all()]


def latest_per_test(rows: Iterable[StoredResult]) -> dict[str, StoredResult]:
    """The newest result of each test; a "not run" never hides an earlier real result.

    A later run that skipped a test says nothing new about it, so a documented manual
    result or an earlier automated one keeps counting until it is replaced.
    """
    latest: dict[str, StoredResult] = {}
    for row in rows:
        held = latest.get(row.test_id)
        skipped = row.verdict == Verdict.NOT_RUN.value
        if held is None or not skipped or held.verdict == Verdict.NOT_RUN.value:
            latest[row.test_id] = row
    return latest
