"""Request counts, errors and latency percentiles per alias, for ``/metrics``."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERCENTILES = (50, 95, 99)


@dataclass
class AliasCounters:
    requests: int = 0
    errors: int = 0
    customers: int = 0
    latencies_ms: deque[float] = field(default_factory=deque)


def latency_percentiles(latencies_ms: Any) -> dict[str, float | None]:
    """p50, p95 and p99 in milliseconds; None for each when nothing was measured."""
    values = np.asarray(list(latencies_ms), dtype=np.float64)
    if values.size == 0:
        return {f"p{p}_ms": None for p in PERCENTILES}
    return {f"p{p}_ms": round(float(np.percentile(values, p)), 3) for p in PERCENTILES}


class ServingMetrics:
    """Counters since start; latency percentiles over the most recent requests.

    A request that served customers from two aliases counts once for each, with its
    whole latency: single-customer requests (the traffic simulator's) stay exact.
    """

    def __init__(self, window: int = 5000) -> None:
        self.window = window
        self._aliases: dict[str, AliasCounters] = {}
        self._lock = threading.Lock()

    def observe(
        self, alias: str, latency_ms: float, *, customers: int, error: bool
    ) -> None:
        with self._lock:
            counters = self._aliases.setdefault(
                alias, AliasCounters(latencies_ms=deque(maxlen=self.window))
            )
            counters.requests += 1
            counters.customers += customers
            counters.errors += int(error)
            counters.latencies_ms.append(latency_ms)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                alias: {
                    "requests": c.requests,
                    "errors": c.errors,
                    "customers": c.customers,
                    "error_rate": c.errors / c.requests if c.requests else 0.0,
                    **latency_percentiles(c.latencies_ms),
                }
                for alias, c in self._aliases.items()
            }

    def prometheus_text(self, versions: dict[str, str | None]) -> str:
        """The snapshot in the Prometheus text exposition format."""
        snapshot = self.snapshot()
        lines = [
            "# HELP churnops_requests_total Prediction requests served per alias.",
            "# TYPE churnops_requests_total counter",
        ]
        lines += [
            f'churnops_requests_total{{alias="{a}"}} {s["requests"]}'
            for a, s in snapshot.items()
        ]
        lines += [
            "# HELP churnops_request_errors_total Requests that failed per alias.",
            "# TYPE churnops_request_errors_total counter",
        ]
        lines += [
            f'churnops_request_errors_total{{alias="{a}"}} {s["errors"]}'
            for a, s in snapshot.items()
        ]
        lines += [
            "# HELP churnops_request_latency_ms Recent request latency percentiles.",
            "# TYPE churnops_request_latency_ms gauge",
        ]
        for alias, stats in snapshot.items():
            for p in PERCENTILES:
                value = stats[f"p{p}_ms"]
                if value is not None:
                    lines.append(
                        f'churnops_request_latency_ms{{alias="{alias}",'
                        f'quantile="0.{p}"}} {value}'
                    )
        lines += [
            "# HELP churnops_model_info The version each alias serves.",
            "# TYPE churnops_model_info gauge",
        ]
        lines += [
            f'churnops_model_info{{alias="{a}",version="{v}"}} 1'
            for a, v in versions.items()
            if v
        ]
        return "\n".join(lines) + "\n"
