"""Late labels, and a simulated stretch of live traffic that produces them.

A churn label is only known some time after the customer was scored: the outcome
of a customer served on day ``d`` arrives on ``d + label_delay_days``. Labels are
stored under ``labels/<arrival date>/`` keyed by the pseudonymized customer id and
the event date (a customer is scored again on later days), so monitoring can join
them with the prediction log while never holding a raw id.

:func:`simulate_live_traffic` plays N days of synthetic customers through the real
prediction service, tagged ``live``, and writes their true outcomes (known from the
generator) as labels that arrive later. With ``drift`` the customers come from the
generator's drifted regime, which the skew (Mo3) and quality (Mo7) checks must see.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd

from serving.router import ModelLoader, ModelRouter, load_served_model
from serving.settings import ServingSettings, load_serving_settings
from tasks.config import ConfigError, DatasetConfig, Settings
from tasks.pseudonymize import pseudonymize_customers
from tasks.storage import ArtifactStore, open_store
from tasks.traffic import TrafficError, customer_records, send_traffic

log = logging.getLogger(__name__)

LABELS_PREFIX = "labels"
LIVE_SOURCE = "live"
LABEL_COLUMNS = ("customer_id", "event_date", "label", "arrives_on")
# Rows drawn per wanted customer: the generator spreads them over two days and only
# the second (the drifted one, when drift is on) is kept.
_OVERDRAW = 4


class LabelError(RuntimeError):
    """Labels cannot be written or read as asked."""


def label_delay_days(settings: Settings) -> int:
    """Days between a customer's event and its label (``gates.monitoring``)."""
    value = settings.gate_settings("monitoring").get("label_delay_days")
    if value is None:
        raise ConfigError(
            "gates.monitoring.label_delay_days is not set in the settings file; add "
            "it (see config/churnops.yaml for the default)"
        )
    return int(value)


# Labels in storage -----------------------------------------------------------------


def build_labels(
    customers: pd.DataFrame, dataset: DatasetConfig, delay_days: int
) -> pd.DataFrame:
    """One label row per pseudonymized customer: id, event date, label, arrival."""
    contract = dataset.contract
    if not contract.event_date:
        raise LabelError(
            f"dataset {dataset.name!r} declares no event date, so a label's arrival "
            "cannot be dated; declare contract.event_date"
        )
    events = pd.to_datetime(customers[contract.event_date]).dt.normalize()
    return pd.DataFrame(
        {
            "customer_id": customers[contract.id_column].astype("string"),
            "event_date": events.dt.date.astype("string"),
            "label": customers[contract.label.column].astype("string"),
            "arrives_on": (events + pd.Timedelta(days=delay_days)).dt.date.astype(
                "string"
            ),
        }
    ).reset_index(drop=True)


def write_labels(store: ArtifactStore, labels: pd.DataFrame) -> list[str]:
    """Store labels under ``labels/<arrival date>/``; rewriting the same rows is a
    no-op (the key is a hash of the content)."""
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise LabelError(f"label rows lack {missing}; build them with build_labels")
    keys = []
    for arrival, rows in labels.groupby("arrives_on", sort=True):
        buffer = io.BytesIO()
        rows[list(LABEL_COLUMNS)].reset_index(drop=True).to_parquet(buffer)
        content = buffer.getvalue()
        digest = hashlib.sha256(
            pd.util.hash_pandas_object(rows[list(LABEL_COLUMNS)], index=False)
            .to_numpy()
            .tobytes()
        ).hexdigest()[:12]
        key = f"{LABELS_PREFIX}/{arrival}/labels-{digest}.parquet"
        store.write_bytes(key, content)
        keys.append(key)
    return keys


def read_arrived_labels(
    store: ArtifactStore, *, until: dt.date, since: dt.date | None = None
) -> pd.DataFrame:
    """Labels whose arrival date is on or before ``until`` (and after ``since``)."""
    frames = []
    for key in store.list(LABELS_PREFIX + "/"):
        parts = key.split("/")
        if len(parts) != 3 or not key.endswith(".parquet"):
            continue
        try:
            arrival = dt.date.fromisoformat(parts[1])
        except ValueError:
            continue
        if arrival > until or (since is not None and arrival < since):
            continue
        frames.append(pd.read_parquet(io.BytesIO(store.read_bytes(key))))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="string") for c in LABEL_COLUMNS})
    labels = pd.concat(frames, ignore_index=True)
    return labels.drop_duplicates(["customer_id", "event_date"], keep="last")


# Simulated live traffic ------------------------------------------------------------


def simulate_day_customers(
    dataset: DatasetConfig, day: dt.date, n_rows: int, seed: int, *, drift: bool
) -> pd.DataFrame:
    """Synthetic customers whose event is ``day``, with their true churn label.

    The generator drifts the later half of its window; drawing over two days and
    keeping the second gives customers entirely from the drifted regime.
    """
    from tasks.synthetic import generate_customers

    drawn = generate_customers(
        n_rows * _OVERDRAW + 20,
        seed,
        drift=drift,
        start=day - dt.timedelta(days=1),
        span_days=2,
    )
    event = dataset.contract.event_date or "event_date"
    frame = drawn[pd.to_datetime(drawn[event]).dt.date == day].head(n_rows)
    if len(frame) < n_rows:
        raise TrafficError(
            f"the generator gave {len(frame)} customers for {day}, not {n_rows}; "
            "ask for fewer customers per day"
        )
    missing = [c for c in dataset.contract.columns if c not in frame.columns]
    if missing:
        raise TrafficError(
            f"the synthetic generator does not produce {missing} of dataset "
            f"{dataset.name!r}; live traffic can only be simulated for its columns"
        )
    return frame.reset_index(drop=True)


class _DayClock:
    """The service's clock during a simulation: the simulated day, ticking in real
    time from midnight, so each day's log rows land in that day's folder."""

    def __init__(self) -> None:
        self.day = dt.date.today()
        self.started = time.monotonic()

    def start(self, day: dt.date) -> None:
        self.day, self.started = day, time.monotonic()

    def __call__(self) -> dt.datetime:
        midnight = dt.datetime.combine(self.day, dt.time(), tzinfo=dt.UTC)
        return midnight + dt.timedelta(seconds=time.monotonic() - self.started)


@contextlib.contextmanager
def _live_service(
    store: ArtifactStore,
    dataset: DatasetConfig,
    serving: ServingSettings,
    day_clock: _DayClock,
    load_model: ModelLoader | None,
) -> Iterator[tuple[str, Callable[[], None]]]:
    """The configured service, or one started here whose log follows ``day_clock``.

    Yields the URL and a function that writes the service's buffered log rows
    (a no-op for a service running elsewhere: it flushes on its own schedule).
    """
    if serving.url:
        from tasks.deploy import reload_service

        reload_service(serving.url)
        yield serving.url.rstrip("/"), lambda: None
        return
    from serving.app import build_service, create_app
    from serving.runner import serve_in_thread

    router = ModelRouter(
        store,
        serving.canary_share,
        load=load_model or load_served_model,
        clock=day_clock,
    )
    service = build_service(store, serving, dataset, router=router, clock=day_clock)

    def flush_log() -> None:
        if service.prediction_log is not None:
            service.prediction_log.flush()

    with serve_in_thread(create_app(service), host=serving.host) as running:
        yield running.url, flush_log


def simulate_live_traffic(
    settings: Settings,
    *,
    days: int,
    customers_per_day: int,
    key: bytes,
    drift: bool = False,
    seed: int = 2027,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    end: dt.date | None = None,
    store: ArtifactStore | None = None,
    serving: ServingSettings | None = None,
    load_model: ModelLoader | None = None,
) -> dict[str, Any]:
    """Send ``days`` days of live customers (ending ``end``, default yesterday)
    through the prediction service and store each label for its arrival date.

    The service is ``serving.url`` when set, else one started here on loopback; a
    service started here logs each day's rows under that day. Labels of the last
    ``label_delay_days`` days arrive after ``end``: monitoring sees them later.
    ``load_model`` replaces the registry's loader in a service started here (tests
    use it to serve a faulty version).
    """
    if days < 1 or customers_per_day < 1:
        raise TrafficError(
            f"days ({days}) and customers_per_day ({customers_per_day}) must be >= 1"
        )
    store = store or open_store(settings.storage_root)
    dataset = settings.dataset()
    serving = serving or load_serving_settings()
    delay = label_delay_days(settings)
    last_day = end or clock().date() - dt.timedelta(days=1)
    day_list = [last_day - dt.timedelta(days=n) for n in range(days - 1, -1, -1)]
    day_clock = _DayClock()

    started = time.monotonic()
    per_day: list[dict[str, Any]] = []
    label_keys: list[str] = []
    with _live_service(store, dataset, serving, day_clock, load_model) as (
        url,
        flush_log,
    ):
        for day in day_list:
            raw = simulate_day_customers(
                dataset,
                day,
                customers_per_day,
                seed * 1_000_003 + day.toordinal(),
                drift=drift,
            )
            customers = pseudonymize_customers(raw, dataset.contract, key)
            day_clock.start(day)
            report = send_traffic(
                url,
                customer_records(
                    customers.drop(columns=[dataset.contract.label.column])
                ),
                id_column=dataset.contract.id_column,
                source=LIVE_SOURCE,
            )
            flush_log()
            label_keys += write_labels(store, build_labels(customers, dataset, delay))
            failed = sum(e.failed for e in report.exchanges)
            per_day.append(
                {
                    "day": day.isoformat(),
                    "requests": len(report.exchanges),
                    "errors": failed,
                    "labels_arrive_on": (day + dt.timedelta(days=delay)).isoformat(),
                }
            )

    summary = {
        "days": per_day,
        "requests": sum(d["requests"] for d in per_day),
        "errors": sum(d["errors"] for d in per_day),
        "label_files": len(label_keys),
        "label_delay_days": delay,
        "drift": drift,
        "service": url if serving.url else "loopback service started for the run",
        "seconds": round(time.monotonic() - started, 1),
    }
    log.info(
        "Simulated %d days of live traffic (%d requests, %d errors, drift %s) in "
        "%.1f s; labels arrive %d days after each event",
        days,
        summary["requests"],
        summary["errors"],
        drift,
        summary["seconds"],
        delay,
    )
    return summary
