"""The prediction log: every served customer, appended to storage in batches.

Rows are JSON Lines under ``<prefix>/<YYYY-MM-DD>/<HHMMSS.ffffff>-<id>.jsonl`` (the
date is UTC), one file per batch, so a reader never sees a half-written file and
writers never append to the same object. A row carries the pseudonymized customer id,
the logged input columns, the probability (None on error), the version and alias that
served it, the request latency, the traffic source, and a hash of the feature vector
the model was fed (``feature_hash``), so monitoring can recompute the features with
the training code and count examples where serving computed something else. Raw ids
never arrive here: the service refuses requests whose ids are not pseudonyms.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from tasks.storage import ArtifactStore

log = logging.getLogger(__name__)

# Rows kept in memory while storage refuses writes, before the oldest are dropped.
MAX_PENDING_ROWS = 200_000
# Feature values are rounded to this many decimals before hashing, so a hash changes
# when a transform does, not when float32 noise differs in the last bit.
FEATURE_HASH_DECIMALS = 5


def hash_feature_rows(matrix: np.ndarray) -> list[str]:
    """A short stable hash of each row of a model-input matrix.

    Serving logs it and monitoring recomputes it from the logged inputs with the
    training transform: equal hashes mean equal features, without logging the vector.
    """
    rounded = np.round(np.asarray(matrix, dtype=np.float64), FEATURE_HASH_DECIMALS)
    rounded = np.ascontiguousarray(rounded + 0.0)  # -0.0 and 0.0 hash alike
    digest = hashlib.blake2b
    return [digest(row.tobytes(), digest_size=8).hexdigest() for row in rounded]


def _plain(value: Any) -> Any:
    # JSON has no NaN: a missing input is logged as null, as it arrived.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _plain(value.item())
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


class PredictionLog:
    """Buffer served rows and write them to storage when a batch fills or ages."""

    def __init__(
        self,
        store: ArtifactStore,
        *,
        prefix: str = "predictions",
        batch_size: int = 500,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.batch_size = batch_size
        self.clock = clock
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.written_files: list[str] = []
        self.written_rows = 0
        self.dropped_rows = 0

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            self._rows.extend(
                {key: _plain(value) for key, value in row.items()} for row in rows
            )
            full = len(self._rows) >= self.batch_size
        if full:
            self.flush()

    @property
    def pending(self) -> int:
        return len(self._rows)

    def flush(self) -> str | None:
        """Write what is buffered as one file; returns its key, None if empty."""
        with self._flush_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return None
            moment = self.clock().astimezone(dt.UTC)
            key = (
                f"{self.prefix}/{moment:%Y-%m-%d}/"
                f"{moment:%H%M%S.%f}-{uuid.uuid4().hex[:8]}.jsonl"
            )
            text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
            try:
                self.store.write_text(key, text)
            except Exception as exc:
                self._keep_unwritten(rows, exc)
                return None
            self.written_files.append(key)
            self.written_rows += len(rows)
            log.info("Prediction log: wrote %d rows to %s", len(rows), key)
            return key

    def _keep_unwritten(self, rows: list[dict[str, Any]], exc: Exception) -> None:
        with self._lock:
            self._rows = rows + self._rows
            overflow = len(self._rows) - MAX_PENDING_ROWS
            if overflow > 0:
                del self._rows[:overflow]
                self.dropped_rows += overflow
        log.warning(
            "Prediction log: cannot write %d rows to %s (%s); keeping them in memory "
            "and retrying. Check the storage root's permissions and space",
            len(rows),
            self.store.uri(self.prefix),
            exc,
        )


def read_prediction_log(
    store: ArtifactStore,
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
    prefix: str = "predictions",
) -> pd.DataFrame:
    """Logged rows from ``start`` to ``end`` (UTC dates, both included), in order.

    Input columns are flattened next to the service's own fields; an empty frame
    when nothing was logged in the window.
    """
    rows: list[dict[str, Any]] = []
    for key in store.list(prefix.strip("/") + "/"):
        parts = key.split("/")
        if len(parts) < 3 or not key.endswith(".jsonl"):
            continue
        day = dt.date.fromisoformat(parts[-2])
        if (start and day < start) or (end and day > end):
            continue
        for line in store.read_text(key).splitlines():
            record = json.loads(line)
            inputs = record.pop("inputs", {}) or {}
            rows.append({**inputs, **record})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["at"] = pd.to_datetime(frame["at"], utc=True)
        frame = frame.sort_values("at", kind="stable").reset_index(drop=True)
    return frame
