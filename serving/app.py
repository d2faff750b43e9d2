"""The prediction service over HTTP: ``/predict``, ``/health``, ``/ready``,
``/metrics`` and ``/reload``.

One :class:`PredictionService` owns the router, the metrics and the prediction log;
:func:`create_app` puts it behind FastAPI. A maintenance thread re-reads the aliases
every ``reload_interval_seconds`` and flushes the log when a batch has waited
``log_flush_seconds``, so an alias move takes effect without a restart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pandas as pd
from fastapi import FastAPI, Header, HTTPException, Query
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from serving.metrics import ServingMetrics
from serving.predlog import PredictionLog, hash_feature_rows
from serving.router import ModelRouter, ServedModel
from serving.settings import ServingSettings
from tasks.config import DatasetConfig
from tasks.pseudonymize import PSEUDONYM_HEX_CHARS
from tasks.storage import ArtifactStore

log = logging.getLogger(__name__)

PSEUDONYM = re.compile(rf"^[0-9a-f]{{{PSEUDONYM_HEX_CHARS}}}$")
DEFAULT_SOURCE = "live"


class ServingError(RuntimeError):
    """A request the service cannot answer; ``status`` is the HTTP status to send."""

    def __init__(self, status: int, detail: dict[str, Any]) -> None:
        super().__init__(detail.get("error", "serving error"))
        self.status = status
        self.detail = detail


class PredictRequest(BaseModel):
    """Customers as rows of the dataset's columns, ids already pseudonymized."""

    customers: list[dict[str, Any]] = Field(min_length=1)


def logged_columns(dataset: DatasetConfig) -> list[str]:
    """Contract columns the log keeps: everything but the label and direct identifiers.

    Undeclared columns a client sends are never logged: they could hold anything.
    """
    contract = dataset.contract
    dropped = {contract.label.column, *contract.direct_identifiers}
    return [name for name in contract.columns if name not in dropped]


class PredictionService:
    """Route, predict, measure and log; the HTTP layer only translates."""

    def __init__(
        self,
        router: ModelRouter,
        settings: ServingSettings,
        *,
        id_column: str,
        logged_columns: Iterable[str],
        prediction_log: PredictionLog | None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.router = router
        self.settings = settings
        self.id_column = id_column
        self.logged_columns = list(logged_columns)
        self.prediction_log = prediction_log
        self.metrics = ServingMetrics(settings.latency_window)
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # Lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self.router.reload()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._maintain, name="churnops-serving-maintenance", daemon=True
        )
        self._thread.start()
        log.info("Prediction service started: %s", self.router.describe()["aliases"])

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.prediction_log is not None:
            self.prediction_log.flush()

    def _maintain(self) -> None:
        last_reload = last_flush = time.monotonic()
        tick = min(1.0, self.settings.reload_interval_seconds)
        while not self._stop.wait(tick):
            now = time.monotonic()
            if now - last_reload >= self.settings.reload_interval_seconds:
                self.router.reload()
                last_reload = now
            if now - last_flush >= self.settings.log_flush_seconds:
                if self.prediction_log is not None:
                    self.prediction_log.flush()
                last_flush = now

    # Predictions -----------------------------------------------------------------

    def _check_customers(self, customers: list[dict[str, Any]]) -> list[str]:
        if len(customers) > self.settings.max_customers_per_request:
            raise ServingError(
                413,
                {
                    "error": f"{len(customers)} customers in one request; send at "
                    f"most {self.settings.max_customers_per_request}"
                },
            )
        ids = []
        for position, row in enumerate(customers):
            customer_id = row.get(self.id_column)
            if not isinstance(customer_id, str) or not customer_id:
                raise ServingError(
                    422,
                    {
                        "error": f"customer {position} has no {self.id_column!r}; "
                        "every row needs its pseudonymized id"
                    },
                )
            # The raw id is not echoed back: it must not reach any log either.
            if self.settings.require_pseudonymized_ids and not PSEUDONYM.match(
                customer_id
            ):
                raise ServingError(
                    422,
                    {
                        "error": f"customer {position}: {self.id_column!r} is not a "
                        f"pseudonym ({PSEUDONYM_HEX_CHARS} lower-case hex characters);"
                        " pseudonymize ids with the pipeline's key before calling"
                    },
                )
            ids.append(customer_id)
        return ids

    def predict(
        self, customers: list[dict[str, Any]], *, source: str = DEFAULT_SOURCE
    ) -> dict[str, Any]:
        """Churn probabilities in request order, each with the version that served."""
        started = time.perf_counter()
        ids = self._check_customers(customers)
        models = self.router.serving_models()
        routes = [self.router.route(customer_id, models) for customer_id in ids]
        if any(alias is None for alias in routes):
            raise ServingError(
                503,
                {
                    "error": f"no model loaded for alias {self.router.primary_alias!r};"
                    " register and promote a version, then POST /reload"
                },
            )

        frame = pd.DataFrame(customers)
        probabilities: list[float | None] = [None] * len(ids)
        feature_hashes: list[str | None] = [None] * len(ids)
        failures: dict[str, str] = {}
        for alias in dict.fromkeys(a for a in routes if a):
            rows = [i for i, a in enumerate(routes) if a == alias]
            outcome = self._predict_group(models[alias], frame.iloc[rows], rows)
            if isinstance(outcome, str):
                failures[alias] = outcome
                continue
            values, hashes = outcome
            for row, probability, digest in zip(rows, values, hashes, strict=True):
                probabilities[row] = probability
                feature_hashes[row] = digest

        latency_ms = (time.perf_counter() - started) * 1000.0
        for alias in dict.fromkeys(a for a in routes if a):
            self.metrics.observe(
                alias,
                latency_ms,
                customers=routes.count(alias),
                error=alias in failures,
            )
        self._log(
            frame,
            ids,
            routes,
            models,
            probabilities,
            feature_hashes,
            failures,
            latency_ms,
            source,
        )
        if failures:
            alias, error = next(iter(failures.items()))
            raise ServingError(
                500,
                {
                    "error": f"model {models[alias].version} ({alias}) failed: {error}",
                    "alias": alias,
                    "model_version": models[alias].version,
                },
            )
        predictions = [
            {
                "customer_id": customer_id,
                "churn_probability": probability,
                "model_version": models[alias].version,
                "alias": alias,
            }
            for customer_id, probability, alias in zip(
                ids, probabilities, routes, strict=True
            )
            if alias
        ]
        return {"predictions": predictions, "latency_ms": round(latency_ms, 3)}

    @staticmethod
    def _predict_group(
        model: ServedModel, frame: pd.DataFrame, rows: list[int]
    ) -> tuple[list[float], list[str | None]] | str:
        """Probabilities and feature hashes, or the error as text.

        A model that can hand back the matrix it was fed (``take_last_features``)
        gets each row's hash logged for the skew check; others log none.
        """
        take_features = getattr(model, "take_last_features", None)
        hashes: list[str | None] = [None] * len(rows)
        try:
            if take_features is not None:
                take_features()  # drop a matrix left by an earlier failed call
            values = model.predict(frame.reset_index(drop=True))
        except Exception as exc:
            log.exception("Model %s failed on %d customers", model.version, len(rows))
            return f"{type(exc).__name__}: {exc}"
        features = take_features() if take_features is not None else None
        if features is not None and len(features) == len(rows):
            hashes = list(hash_feature_rows(features))
        if len(values) != len(rows):
            return f"returned {len(values)} predictions for {len(rows)} customers"
        return [float(v) for v in values], hashes

    def _log(
        self,
        frame: pd.DataFrame,
        ids: list[str],
        routes: list[str | None],
        models: dict[str, ServedModel],
        probabilities: list[float | None],
        feature_hashes: list[str | None],
        failures: dict[str, str],
        latency_ms: float,
        source: str,
    ) -> None:
        if self.prediction_log is None:
            return
        request_id = uuid.uuid4().hex
        moment = self.clock().astimezone(dt.UTC).isoformat()
        columns = [c for c in self.logged_columns if c in frame.columns]
        inputs = frame[columns].to_dict(orient="records")
        self.prediction_log.append(
            {
                "request_id": request_id,
                "at": moment,
                "customer_id": customer_id,
                "inputs": row_inputs,
                "churn_probability": probability,
                "model_version": models[alias].version if alias else None,
                "alias": alias,
                "status": "error" if alias in failures else "ok",
                "latency_ms": round(latency_ms, 3),
                "source": source,
                "feature_hash": digest,
            }
            for customer_id, row_inputs, probability, digest, alias in zip(
                ids, inputs, probabilities, feature_hashes, routes, strict=True
            )
        )

    # Status ----------------------------------------------------------------------

    def versions(self) -> dict[str, str | None]:
        models = self.router.serving_models()
        return {
            alias: models[alias].version if alias in models else None
            for alias in self.router.aliases
        }

    def health(self) -> dict[str, Any]:
        written = self.prediction_log
        return {
            "status": "ok",
            "ready": self.router.ready,
            "versions": self.versions(),
            **self.router.describe(),
            "prediction_log": None
            if written is None
            else {
                "pending_rows": written.pending,
                "written_rows": written.written_rows,
                "dropped_rows": written.dropped_rows,
            },
        }


def create_app(service: PredictionService) -> FastAPI:
    """The HTTP face of ``service``; it starts and stops with the app."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="churnops prediction service", lifespan=lifespan)
    app.state.service = service

    @app.post("/predict")
    def predict(
        request: PredictRequest,
        x_churnops_source: str | None = Header(default=None),
    ) -> dict[str, Any]:
        try:
            return service.predict(
                request.customers, source=x_churnops_source or DEFAULT_SOURCE
            )
        except ServingError as exc:
            raise HTTPException(exc.status, exc.detail) from exc

    @app.get("/health")
    def health() -> dict[str, Any]:
        return service.health()

    @app.get("/ready")
    def ready() -> JSONResponse:
        status = 200 if service.router.ready else 503
        body = {"ready": service.router.ready, "versions": service.versions()}
        return JSONResponse(body, status_code=status)

    @app.get("/metrics", response_model=None)
    def metrics(
        format: str = Query("json", pattern="^(json|prometheus)$"),
    ) -> dict[str, Any] | PlainTextResponse:
        if format == "prometheus":
            return PlainTextResponse(
                service.metrics.prometheus_text(service.versions()),
                media_type="text/plain; version=0.0.4",
            )
        return {"aliases": service.metrics.snapshot(), "versions": service.versions()}

    @app.post("/reload")
    def reload() -> dict[str, Any]:
        service.router.reload()
        return service.health()

    return app


def build_service(
    store: ArtifactStore,
    settings: ServingSettings,
    dataset: DatasetConfig,
    *,
    router: ModelRouter | None = None,
    prediction_log: PredictionLog | bool | None = True,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> PredictionService:
    """A service over ``store`` that serves ``production`` (and the canary).

    ``prediction_log`` True logs under ``settings.log_prefix``; pass a log of your
    own to write elsewhere, or False for none.
    """
    chosen_log: PredictionLog | None
    if prediction_log is True:
        chosen_log = PredictionLog(
            store,
            prefix=settings.log_prefix,
            batch_size=settings.log_batch_size,
            clock=clock,
        )
    elif prediction_log is False:
        chosen_log = None
    else:
        chosen_log = prediction_log
    return PredictionService(
        router or ModelRouter(store, settings.canary_share, clock=clock),
        settings,
        id_column=dataset.contract.id_column,
        logged_columns=logged_columns(dataset),
        prediction_log=chosen_log,
        clock=clock,
    )
