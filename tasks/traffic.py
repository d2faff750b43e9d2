"""Simulated live traffic: pseudonymized customers sent to the prediction service.

The release path needs traffic that looks like production's: customers drawn from
the synthetic generator, their ids pseudonymized with the pipeline's own key, sent one
customer per request so each request's latency belongs to exactly one model.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pandas as pd

from tasks.config import DatasetConfig
from tasks.pseudonymize import pseudonymize_customers

log = logging.getLogger(__name__)

UNROUTED = "unrouted"
SOURCE_HEADER = "X-Churnops-Source"


class TrafficError(RuntimeError):
    """Traffic cannot be generated or sent as asked."""


def customer_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON objects the service accepts: dates as ISO text, NaN as null."""
    records: list[dict[str, Any]] = json.loads(
        frame.to_json(orient="records", date_format="iso")
    )
    return records


def simulate_customers(
    dataset: DatasetConfig,
    n_rows: int,
    seed: int,
    key: bytes,
    *,
    drift: bool = False,
) -> pd.DataFrame:
    """Fresh synthetic customers as the service sees them: pseudonymized, unlabelled.

    Only a dataset whose contract the synthetic generator fills can be simulated;
    others replay their holdout rows instead.
    """
    from tasks.synthetic import generate_customers

    frame = generate_customers(n_rows, seed, drift=drift)
    contract = dataset.contract
    missing = [name for name in contract.columns if name not in frame.columns]
    if missing:
        raise TrafficError(
            f"the synthetic generator does not produce {missing} of dataset "
            f"{dataset.name!r}; replay its holdout rows as traffic instead"
        )
    customers = pseudonymize_customers(frame, contract, key)
    return customers.drop(columns=[contract.label.column])


@dataclass(frozen=True)
class Exchange:
    """One request and what came back."""

    customer_id: str
    alias: str
    model_version: str | None
    status: int
    latency_ms: float
    probability: float | None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status != 200 or self.probability is None


@dataclass(frozen=True)
class AliasTraffic:
    """What one alias did with its share of the traffic."""

    alias: str
    versions: tuple[str, ...]
    requests: int
    errors: int
    latencies_ms: np.ndarray
    probabilities: np.ndarray

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def latency_ms(self, percentile: float) -> float | None:
        if self.latencies_ms.size == 0:
            return None
        return float(np.percentile(self.latencies_ms, percentile))

    def summary(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "versions": list(self.versions),
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            **{
                f"p{p}_ms": None if v is None else round(v, 3)
                for p in (50, 95, 99)
                for v in [self.latency_ms(p)]
            },
            "mean_probability": float(self.probabilities.mean())
            if self.probabilities.size
            else None,
        }


@dataclass
class TrafficReport:
    """Every exchange of one traffic run, grouped by the alias that answered."""

    exchanges: list[Exchange] = field(default_factory=list)
    seconds: float = 0.0

    def for_alias(self, alias: str) -> AliasTraffic | None:
        mine = [e for e in self.exchanges if e.alias == alias]
        if not mine:
            return None
        return AliasTraffic(
            alias=alias,
            versions=tuple(sorted({e.model_version for e in mine if e.model_version})),
            requests=len(mine),
            errors=sum(e.failed for e in mine),
            latencies_ms=np.array([e.latency_ms for e in mine], dtype=np.float64),
            probabilities=np.array(
                [e.probability for e in mine if e.probability is not None],
                dtype=np.float64,
            ),
        )

    def summary(self) -> dict[str, Any]:
        aliases = sorted({e.alias for e in self.exchanges})
        return {
            "requests": len(self.exchanges),
            "seconds": round(self.seconds, 3),
            "aliases": {
                alias: traffic.summary()
                for alias in aliases
                if (traffic := self.for_alias(alias)) is not None
            },
        }


def _exchange(
    client: httpx.Client, record: dict[str, Any], customer_id: str, source: str
) -> Exchange:
    started = time.perf_counter()
    try:
        response = client.post(
            "/predict", json={"customers": [record]}, headers={SOURCE_HEADER: source}
        )
    except httpx.HTTPError as exc:
        elapsed = (time.perf_counter() - started) * 1000.0
        return Exchange(customer_id, UNROUTED, None, 0, elapsed, None, str(exc))
    elapsed = (time.perf_counter() - started) * 1000.0
    body = response.json() if response.content else {}
    if response.status_code == 200:
        served = body["predictions"][0]
        return Exchange(
            customer_id,
            served["alias"],
            served["model_version"],
            200,
            elapsed,
            float(served["churn_probability"]),
        )
    detail = body.get("detail") if isinstance(body, dict) else None
    detail = detail if isinstance(detail, dict) else {"error": str(detail)}
    return Exchange(
        customer_id,
        detail.get("alias") or UNROUTED,
        detail.get("model_version"),
        response.status_code,
        elapsed,
        None,
        detail.get("error"),
    )


def send_traffic(
    base_url: str,
    records: Sequence[dict[str, Any]],
    *,
    id_column: str,
    source: str,
    timeout_seconds: float = 10.0,
) -> TrafficReport:
    """Send each customer in its own request, in order.

    Failures are recorded, not raised: a failing model is what callers look for.
    """
    report = TrafficReport()
    started = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=timeout_seconds) as client:
        for record in records:
            report.exchanges.append(
                _exchange(client, record, str(record.get(id_column)), source)
            )
    report.seconds = time.monotonic() - started
    log.info(
        "Sent %d requests to %s in %.1f s: %s",
        len(records),
        base_url,
        report.seconds,
        {a: s["requests"] for a, s in report.summary()["aliases"].items()},
    )
    return report
