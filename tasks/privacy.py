"""Privacy checks on what a run wrote: raw identifiers anywhere, and deletion requests.

The scan takes the raw identifiers from the source (ids and direct identifiers) and
looks for them in every artifact: Parquet files are read and their text columns
compared, everything else (JSON, HTML, logs, plots) is read as text and split into
tokens. A finding names the artifact and how many identifiers it holds, never the
identifiers themselves, because findings are stored in the score store.

A value is found only as a whole token (delimited by anything but letters, digits,
``-`` and ``_``), so an id that happens to be a substring of a longer word is not
reported; identifiers shorter than the configured minimum are not searched at all.
Compressed binary artifacts (PNG plots) are scanned for their text chunks only.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from tasks.pseudonymize import pseudonymize_ids
from tasks.storage import ArtifactStore

log = logging.getLogger(__name__)

TOKEN = re.compile(r"[A-Za-z0-9_\-]+(?:[.@+][A-Za-z0-9_\-]+)*")
SUBTOKEN = re.compile(r"[A-Za-z0-9_\-]+")


@dataclass(frozen=True)
class PrivacyFinding:
    """Raw identifiers found in one artifact: where and how many, never which."""

    key: str
    count: int


@dataclass
class DeletionReport:
    """What a deletion request removed, per artifact; ids appear only pseudonymized."""

    requested: int
    removed_rows: dict[str, int] = field(default_factory=dict)
    requested_pseudonyms: list[str] = field(default_factory=list)

    @property
    def total_removed(self) -> int:
        return sum(self.removed_rows.values())


def collect_raw_identifiers(
    frame: pd.DataFrame,
    columns: Iterable[str],
    *,
    max_values: int,
    min_chars: int,
    seed: int = 0,
) -> set[str]:
    """Identifier values to search for, sampled to at most ``max_values``."""
    values: set[str] = set()
    present = [c for c in columns if c in frame.columns]
    rows = (
        frame
        if len(frame) <= max_values
        else frame.sample(max_values, random_state=seed)
    )
    for column in present:
        text = rows[column].dropna().astype("string").str.strip()
        values.update(str(v) for v in text[text.str.len() >= min_chars].unique())
    return values


def _scan_frame(frame: pd.DataFrame, identifiers: set[str]) -> int:
    count = 0
    wanted = list(identifiers)
    for column in frame.columns:
        values = frame[column]
        if values.dtype.kind in "OSUT" or pd.api.types.is_string_dtype(values):
            count += int(values.astype("string").isin(wanted).sum())
    count += sum(1 for name in frame.columns if str(name) in identifiers)
    return count


def _scan_text(text: str, identifiers: set[str]) -> int:
    count = 0
    for token in TOKEN.findall(text):
        if token in identifiers:
            count += 1
            continue
        count += sum(1 for part in SUBTOKEN.findall(token) if part in identifiers)
    return count


def scan_artifact(
    key: str, data: bytes, identifiers: set[str]
) -> PrivacyFinding | None:
    """Raw identifiers in one artifact, or None when it holds none."""
    if not identifiers:
        return None
    count = 0
    if key.endswith(".parquet"):
        count += _scan_frame(pd.read_parquet(io.BytesIO(data)), identifiers)
    else:
        count += _scan_text(data.decode("utf-8", errors="replace"), identifiers)
    return PrivacyFinding(key, count) if count else None


def scan_artifacts(
    store: ArtifactStore, keys: Iterable[str], identifiers: set[str]
) -> tuple[list[PrivacyFinding], int]:
    """Findings over the given artifacts and how many artifacts were scanned."""
    findings = []
    scanned = 0
    for key in keys:
        finding = scan_artifact(key, store.read_bytes(key), identifiers)
        scanned += 1
        if finding is not None:
            findings.append(finding)
    return findings, scanned


def _matches(frame: pd.DataFrame, id_column: str, wanted: set[str]) -> pd.Series:
    return frame[id_column].astype("string").isin(list(wanted)).fillna(False)


def _parquet_with_ids(
    store: ArtifactStore, prefix: str, id_column: str
) -> Iterable[tuple[str, pd.DataFrame]]:
    for artifact in store.list(prefix):
        if not artifact.endswith(".parquet"):
            continue
        frame = pd.read_parquet(io.BytesIO(store.read_bytes(artifact)))
        if id_column in frame.columns:
            yield artifact, frame


# Prediction logs are JSON Lines keyed by the pseudonym under this field.
LOG_ID_FIELDS = ("customer_id",)


def _split_jsonl(
    data: bytes, fields: tuple[str, ...], wanted: set[str]
) -> tuple[list[bytes], int]:
    """The lines to keep, byte for byte, and how many lines named a wanted id."""
    kept: list[bytes] = []
    removed = 0
    for line in data.splitlines(keepends=True):
        row = json.loads(line) if line.strip() else {}
        if any(str(row.get(name)) in wanted for name in fields if name in row):
            removed += 1
        else:
            kept.append(line)
    return kept, removed


def _jsonl_keys(store: ArtifactStore, prefix: str) -> list[str]:
    return [k for k in store.list(prefix) if k.endswith(".jsonl")]


def count_stored_customers(
    store: ArtifactStore,
    prefix: str,
    customer_ids: Iterable[str],
    *,
    id_column: str,
    key: bytes,
) -> int:
    """Rows of the given customers (raw or pseudonymized) still stored under prefix."""
    raw = {str(c) for c in customer_ids}
    wanted = raw | set(pseudonymize_ids(sorted(raw), key))
    in_tables = sum(
        int(_matches(frame, id_column, wanted).sum())
        for _, frame in _parquet_with_ids(store, prefix, id_column)
    )
    fields = (id_column, *LOG_ID_FIELDS)
    in_logs = sum(
        _split_jsonl(store.read_bytes(k), fields, wanted)[1]
        for k in _jsonl_keys(store, prefix)
    )
    return in_tables + in_logs


def delete_customers(
    store: ArtifactStore,
    prefix: str,
    customer_ids: Iterable[str],
    *,
    id_column: str,
    key: bytes,
) -> DeletionReport:
    """Remove the customers from every Parquet snapshot and JSON Lines log under
    ``prefix``.

    Raw snapshots hold the raw id, later ones the pseudonym; both are matched. Each
    snapshot is rewritten whole (a reader sees it before or after, never half), and
    a snapshot without any of the customers is left untouched.
    """
    raw = sorted({str(c) for c in customer_ids})
    pseudonyms = pseudonymize_ids(raw, key)
    wanted = set(raw) | set(pseudonyms)
    report = DeletionReport(requested=len(raw), requested_pseudonyms=pseudonyms)
    for artifact, frame in _parquet_with_ids(store, prefix, id_column):
        hit = _matches(frame, id_column, wanted)
        if not hit.any():
            continue
        buffer = io.BytesIO()
        frame[~hit.to_numpy()].to_parquet(buffer, index=False)
        store.write_bytes(artifact, buffer.getvalue())
        report.removed_rows[artifact] = int(hit.sum())
    fields = (id_column, *LOG_ID_FIELDS)
    for artifact in _jsonl_keys(store, prefix):
        kept, removed = _split_jsonl(store.read_bytes(artifact), fields, wanted)
        if removed:
            store.write_bytes(artifact, b"".join(kept))
            report.removed_rows[artifact] = removed
    log.info(
        "Deletion request for %d customer(s): %d row(s) removed from %d snapshot(s)",
        report.requested,
        report.total_removed,
        len(report.removed_rows),
    )
    return report


def deletion_record(report: DeletionReport, at: dt.datetime) -> str:
    """The JSON kept as the audit trail of a deletion request (pseudonyms only)."""
    return json.dumps(
        {
            "at": at.isoformat(),
            "requested": report.requested,
            "requested_pseudonyms": report.requested_pseudonyms,
            "removed_rows": report.removed_rows,
        },
        indent=2,
    )
