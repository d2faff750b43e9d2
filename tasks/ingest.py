"""Ingestion: read a churn table from its source and hold it to the data contract.

A source is a URI: ``file://PATH`` or ``gs://BUCKET/PATH`` (CSV or Parquet, by
extension) or ``synthetic://ROWS?seed=N[&drift=1]`` for the generator. Nothing
downstream reads a table that has not passed :func:`check_customers_contract`, and a
table that fails it is never written anywhere: the error names the file, the column
and example rows and says how to fix it.

Error messages never echo values of the id column or of direct identifiers (only
row numbers), because messages end up in logs and the score store, which must not
hold raw identifiers.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd

from tasks.config import PROJECT_ROOT, ColumnSpec, DataContract, resolve_path
from tasks.storage import ArtifactStore

log = logging.getLogger(__name__)

# How many offending rows an error message shows.
EXAMPLE_ROWS = 5
CSV_SUFFIXES = (".csv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")


class DataContractError(ValueError):
    """The source table breaks the data contract; nothing was written.

    ``problem`` is a short machine-readable name of what broke (``missing_column``,
    ``type``, ``empty``, ``truncated``, ``encoding``, ``duplicate_ids``, ``label``,
    ``source``), ``column`` the column concerned, if any.
    """

    def __init__(self, message: str, *, problem: str, column: str | None = None):
        super().__init__(message)
        self.problem = problem
        self.column = column

    @property
    def retryable(self) -> bool:
        """Only an unreachable source may heal by itself; bad contents never do."""
        return self.problem == "source"


@dataclass(frozen=True)
class SourceTable:
    """A table as read from its source, before the contract is applied.

    ``typed`` is False when every column arrived as text (CSV) and must be parsed;
    ``line_offset`` turns a 0-based row position into a line of the file.
    """

    frame: pd.DataFrame
    name: str
    typed: bool
    line_offset: int | None = None


@dataclass(frozen=True)
class IngestedCustomers:
    """Rows that passed the contract, with the content hash that names them."""

    frame: pd.DataFrame
    source: str
    data_hash: str


def _rows_text(positions: Any, line_offset: int | None) -> str:
    shown = [int(p) for p in list(positions)[:EXAMPLE_ROWS]]
    if line_offset is not None:
        return ", ".join(f"line {p + line_offset}" for p in shown)
    return ", ".join(f"row {p + 1}" for p in shown)


# Reading ------------------------------------------------------------------------


def describe_source(source: str) -> str:
    """The source URI as shown in messages: the path, without query secrets."""
    parsed = urlparse(source)
    return f"{parsed.scheme}://{parsed.netloc}{parsed.path}"


def _read_source_bytes(
    source: str, base: Path, gcs_client: Any | None = None
) -> tuple[bytes, str]:
    parsed = urlparse(source)
    if parsed.scheme in ("", "file"):
        raw_path = source.removeprefix("file://")
        path = resolve_path(raw_path, base)
        try:
            return path.read_bytes(), str(path)
        except FileNotFoundError as exc:
            raise DataContractError(
                f"source file {path} does not exist; check the dataset's 'source' "
                "(a relative path is taken from the project folder)",
                problem="source",
            ) from exc
    if parsed.scheme == "gs":
        from tasks.gcs import GcsStore
        from tasks.storage import ArtifactNotFound

        folder, _, name = parsed.path.lstrip("/").rpartition("/")
        store = GcsStore(
            f"gs://{parsed.netloc}/{folder}".rstrip("/"), client=gcs_client
        )
        try:
            return store.read_bytes(name), source
        except ArtifactNotFound as exc:
            raise DataContractError(
                f"source object {source} does not exist; check the dataset's 'source'",
                problem="source",
            ) from exc
    raise DataContractError(
        f"source {describe_source(source)!r} has an unsupported scheme; use "
        "file://PATH, gs://BUCKET/PATH or synthetic://ROWS?seed=N",
        problem="source",
    )


def _read_synthetic(source: str) -> SourceTable:
    from tasks.synthetic import generate_customers

    parsed = urlparse(source)
    query = parse_qs(parsed.query)
    try:
        rows = int(parsed.netloc or parsed.path.strip("/"))
        seed = int(query.get("seed", ["0"])[0])
    except ValueError as exc:
        raise DataContractError(
            f"synthetic source {source!r} is malformed; write "
            "synthetic://ROWS?seed=N[&drift=1], e.g. synthetic://20000?seed=7",
            problem="source",
        ) from exc
    drift = query.get("drift", ["0"])[0] in ("1", "true", "yes")
    frame = generate_customers(rows, seed, drift=drift)
    return SourceTable(frame=frame, name=source, typed=True)


def _check_utf8(data: bytes, name: str) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        start = data.rfind(b"\n", 0, exc.start) + 1
        column_no = data.count(b",", start, exc.start) + 1
        header = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip().split(",")
        column = header[column_no - 1] if column_no <= len(header) else "?"
        raise DataContractError(
            f"{name}: line {line}, column {column!r} (field {column_no}) holds bytes "
            f"that are not UTF-8 ({data[exc.start : exc.end]!r} at byte {exc.start}); "
            "re-export the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
            problem="encoding",
            column=column,
        ) from exc


def _read_csv(data: bytes, name: str) -> SourceTable:
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    _check_utf8(data, name)
    header_line = data.split(b"\n", 1)[0].decode("utf-8").strip()
    header = [h.strip().strip('"') for h in header_line.split(",")]
    if len(set(header)) != len(header):
        twice = sorted({h for h in header if header.count(h) > 1})
        raise DataContractError(
            f"{name}: the header names column(s) {twice} more than once; give every "
            "column a distinct name",
            problem="missing_column",
            column=twice[0],
        )
    options = pa_csv.ConvertOptions(
        column_types={h: pa.string() for h in header},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        table = pa_csv.read_csv(io.BytesIO(data), convert_options=options)
    except pa.ArrowInvalid as exc:
        # Not chained: the parser's message quotes the offending row, ids included,
        # and a traceback in a task log would carry it out of the raw zone.
        raise _csv_parse_error(data, name, header, exc) from None
    frame = table.to_pandas()
    return SourceTable(frame=frame, name=name, typed=False, line_offset=2)


def _csv_parse_error(
    data: bytes, name: str, header: list[str], exc: Exception
) -> DataContractError:
    text = str(exc)
    found = re.search(r"Expected (\d+) columns, got (\d+)", text)
    if not found:
        # The parser's own message may quote a row, and a row holds a customer id:
        # name the kind of failure, never its text.
        return DataContractError(
            f"{name}: not a readable CSV file ({type(exc).__name__}); check the "
            "delimiter, the quoting and that every line is complete",
            problem="truncated",
        )
    got = int(found.group(2))
    lines = data.rstrip(b"\r\n").split(b"\n")
    bad = [
        i + 1
        for i, line in enumerate(lines)
        if i > 0 and line.strip() and line.count(b",") + 1 == got
    ][:EXAMPLE_ROWS]
    last = len(lines)
    cut_off = bad and bad[-1] == last and not data.endswith(b"\n")
    column = header[got - 1] if 0 < got <= len(header) else None
    where = ", ".join(f"line {n}" for n in bad) or "a row"
    hint = (
        "the file ends mid-row, so it was cut off while being written or copied; "
        "fetch the complete file again"
        if cut_off
        else "every row must have as many fields as the header; check for stray "
        "or missing delimiters"
    )
    return DataContractError(
        f"{name}: {where} has {got} field(s) where the header has {len(header)} "
        f"(it stops after column {column!r}); {hint}",
        problem="truncated",
        column=column,
    )


def _read_parquet(data: bytes, name: str) -> SourceTable:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataContractError(
            f"{name}: not a complete Parquet file ({exc}); it was probably cut off "
            "while being written or copied; fetch or write it again",
            problem="truncated",
        ) from exc
    return SourceTable(frame=table.to_pandas(), name=name, typed=True)


def read_source_table(
    source: str, *, base: Path = PROJECT_ROOT, gcs_client: Any | None = None
) -> SourceTable:
    """Read a source URI into a frame, refusing empty, cut-off or non-UTF-8 files.

    ``gcs_client`` is the storage client for ``gs://`` sources (default: one from
    the environment's credentials or ``STORAGE_EMULATOR_HOST``).
    """
    if source.startswith("synthetic://"):
        return _read_synthetic(source)
    data, name = _read_source_bytes(source, base, gcs_client)
    if not data.strip():
        raise DataContractError(
            f"{name} is empty (0 data rows); the export that writes it probably "
            "failed: re-run it, or point the dataset's 'source' at a complete file",
            problem="empty",
        )
    suffix = Path(urlparse(source).path).suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return _read_parquet(data, name)
    if suffix in CSV_SUFFIXES:
        return _read_csv(data, name)
    raise DataContractError(
        f"{name}: cannot tell the format from the extension {suffix!r}; name the file "
        f"*.csv or *.parquet",
        problem="source",
    )


# The contract ---------------------------------------------------------------------


def _check_columns(table: SourceTable, contract: DataContract) -> None:
    present = list(table.frame.columns)
    missing = [name for name in contract.columns if name not in present]
    if not missing:
        return
    extra = [name for name in present if name not in contract.columns]
    hints = []
    for name in missing:
        close = difflib.get_close_matches(name, extra, n=1, cutoff=0.6)
        if close:
            hints.append(f"{name!r} looks renamed to {close[0]!r}")
    hint = ("; " + "; ".join(hints)) if hints else ""
    raise DataContractError(
        f"{table.name}: missing column(s) {missing}{hint}. The contract expects "
        f"{list(contract.columns)}; rename the column(s) in the source, or update "
        "contract.columns in the dataset config if the change is intended",
        problem="missing_column",
        column=missing[0],
    )


def _blank(values: pd.Series, typed: bool) -> pd.Series:
    # In text sources a field of spaces means "no value" (Telco's TotalCharges).
    if typed or values.dtype.kind in "iufbM":
        return values.isna()
    text = values.astype("string")
    return text.isna() | (text.str.strip() == "")


def _type_error(
    table: SourceTable,
    spec: ColumnSpec,
    bad: pd.Series,
    values: pd.Series,
    identifying: bool,
) -> DataContractError:
    positions = np.flatnonzero(bad.to_numpy())
    rows = _rows_text(positions, table.line_offset)
    shown = (
        ""
        if identifying
        else f" (values {[str(v) for v in values.iloc[positions[:EXAMPLE_ROWS]]]})"
    )
    return DataContractError(
        f"{table.name}: column {spec.name!r} should hold {spec.type} values but "
        f"{len(positions)} row(s) do not, e.g. {rows}{shown}; the column's type "
        "changed upstream: fix the export, or declare the new type under "
        "contract.columns",
        problem="type",
        column=spec.name,
    )


def _cast_column(table: SourceTable, spec: ColumnSpec, identifying: bool) -> pd.Series:
    values = table.frame[spec.name]
    blank = _blank(values, table.typed)
    if spec.type in ("integer", "float"):
        if table.typed and values.dtype.kind not in "iuf":
            bad = ~blank
            if bad.any():
                raise _type_error(table, spec, bad, values, identifying)
        numbers = pd.to_numeric(
            values.where(~blank) if values.dtype.kind not in "iuf" else values,
            errors="coerce",
        ).astype("float64")
        bad = numbers.isna() & ~blank
        if spec.type == "integer":
            bad |= numbers.notna() & (numbers != np.round(numbers))
        if bad.any():
            raise _type_error(table, spec, bad, values, identifying)
        if spec.type == "integer":
            return numbers.astype("Int64") if blank.any() else numbers.astype("int64")
        return numbers
    if spec.type == "date":
        if values.dtype.kind == "M":
            return values.astype("datetime64[ns]")
        dates = pd.to_datetime(values.where(~blank), errors="coerce", format="ISO8601")
        bad = dates.isna() & ~blank
        if bad.any():
            raise _type_error(table, spec, bad, values, identifying)
        return dates.astype("datetime64[ns]")
    if spec.type == "boolean":
        text = values.astype("string").str.strip().str.lower()
        mapped = text.map({"true": True, "false": False, "1": True, "0": False})
        bad = mapped.isna() & ~blank
        if bad.any():
            raise _type_error(table, spec, bad, values, identifying)
        return mapped.astype("boolean")
    if table.typed and values.dtype.kind in "fM":
        raise _type_error(table, spec, ~blank, values, identifying)
    text = values.astype("string")
    if values.dtype.kind in "iub":
        return text
    return text.where(~blank)


def _check_ids(table: SourceTable, frame: pd.DataFrame, contract: DataContract) -> None:
    ids = frame[contract.id_column]
    missing = ids.isna()
    if missing.any():
        rows = _rows_text(np.flatnonzero(missing.to_numpy()), table.line_offset)
        raise DataContractError(
            f"{table.name}: column {contract.id_column!r} (the customer id) is blank "
            f"in {int(missing.sum())} row(s), e.g. {rows}; every row needs an id",
            problem="duplicate_ids",
            column=contract.id_column,
        )
    repeated = ids.duplicated(keep=False)
    if repeated.any():
        rows = _rows_text(np.flatnonzero(repeated.to_numpy()), table.line_offset)
        raise DataContractError(
            f"{table.name}: column {contract.id_column!r} (the customer id) repeats: "
            f"{int(ids.duplicated().sum())} duplicate id(s), e.g. at {rows}; keep one "
            "row per customer (deduplicate the export) before ingesting",
            problem="duplicate_ids",
            column=contract.id_column,
        )


def _check_label(
    table: SourceTable, frame: pd.DataFrame, contract: DataContract
) -> None:
    label = contract.label
    values = frame[label.column]
    blank = values.isna()
    if blank.any():
        rows = _rows_text(np.flatnonzero(blank.to_numpy()), table.line_offset)
        raise DataContractError(
            f"{table.name}: label column {label.column!r} is blank in "
            f"{int(blank.sum())} row(s), e.g. {rows}; drop unlabelled rows before "
            "training, or fill them in the source",
            problem="label",
            column=label.column,
        )
    text = values.astype("string").str.strip()
    outside = ~text.isin(list(label.classes))
    if outside.any():
        positions = np.flatnonzero(outside.to_numpy())
        found = sorted({str(v) for v in text[outside].unique()[:EXAMPLE_ROWS]})
        raise DataContractError(
            f"{table.name}: label column {label.column!r} holds value(s) {found} "
            f"outside the declared classes {list(label.classes)}, e.g. at "
            f"{_rows_text(positions, table.line_offset)}; map them to a declared class "
            "in the source, or declare them under contract.label.classes",
            problem="label",
            column=label.column,
        )
    seen = sorted(set(text.unique()))
    if len(seen) < 2:
        raise DataContractError(
            f"{table.name}: label column {label.column!r} holds a single class "
            f"{seen} in all {len(text)} rows; a churn model needs both "
            f"{list(label.classes)}: check that the export is not filtered",
            problem="label",
            column=label.column,
        )


def check_customers_contract(
    table: SourceTable, contract: DataContract
) -> pd.DataFrame:
    """The contract's columns with their declared types, or a DataContractError.

    Undeclared columns are dropped here, so a column nobody described (and nobody
    checked for personal data) never reaches storage.
    """
    _check_columns(table, contract)
    if table.frame.empty:
        raise DataContractError(
            f"{table.name} has a header but no data rows; the export that writes it "
            "probably failed: re-run it",
            problem="empty",
        )
    identifying = {contract.id_column, *contract.direct_identifiers}
    typed = {
        name: _cast_column(table, spec, name in identifying)
        for name, spec in contract.columns.items()
    }
    frame = pd.DataFrame(typed)
    _check_ids(table, frame, contract)
    _check_label(table, frame, contract)
    undeclared = [c for c in table.frame.columns if c not in contract.columns]
    if undeclared:
        log.info("Dropped %d undeclared column(s): %s", len(undeclared), undeclared)
    return frame


def hash_customers(frame: pd.DataFrame) -> str:
    """A content hash of a table: the same rows and columns give the same hash.

    It does not depend on the file format or compression, so lineage survives a
    re-export as long as the data is the same.
    """
    digest = hashlib.sha256()
    for name in frame.columns:
        digest.update(f"{name}:{frame[name].dtype}".encode())
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest.update(row_hashes.tobytes())
    return digest.hexdigest()


def ingest_customers(
    source: str,
    contract: DataContract,
    *,
    base: Path = PROJECT_ROOT,
    gcs_client: Any | None = None,
) -> IngestedCustomers:
    """Read ``source`` and hold it to ``contract``; raise DataContractError if not."""
    started = dt.datetime.now(dt.UTC)
    table = read_source_table(source, base=base, gcs_client=gcs_client)
    frame = check_customers_contract(table, contract)
    data_hash = hash_customers(frame)
    log.info(
        "Ingested %d rows, %d columns from %s in %.1f s (hash %s)",
        len(frame),
        frame.shape[1],
        describe_source(source),
        (dt.datetime.now(dt.UTC) - started).total_seconds(),
        data_hash[:12],
    )
    return IngestedCustomers(
        frame=frame, source=describe_source(source), data_hash=data_hash
    )


def frame_to_parquet(frame: pd.DataFrame) -> bytes:
    """Parquet bytes of a frame, for the artifact store."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def parquet_to_frame(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data))


def read_frame(store: ArtifactStore, key: str) -> pd.DataFrame:
    """A Parquet artifact (a snapshot, a split) as a frame."""
    return parquet_to_frame(store.read_bytes(key))
