"""Ingestion against the data contract: good sources land, bad ones stop the run."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import load_dataset
from tasks.data_steps import ingest_customers_step
from tasks.ingest import (
    DataContractError,
    check_customers_contract,
    hash_customers,
    ingest_customers,
    read_source_table,
)
from tests.tasks.conftest_data import (
    TINY_CSV,
    TINY_DATASET,
    make_context,
    results_of,
    snapshot_files,
    tiny_dataset,
    write_dataset_yaml,
)


def _write(tmp_path: Path, content: bytes, name: str = "customers.csv") -> str:
    path = tmp_path / "source" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return f"file://{path}"


def _ingest_after_good_run(tmp_path: Path, bad_source: str) -> tuple[object, str]:
    """Ingest a good file as run_0, then ``bad_source`` as run_1; return the error."""
    config = write_dataset_yaml(tmp_path / "tiny.yaml", TINY_DATASET)
    good = _write(tmp_path, TINY_CSV.encode(), "good.csv")
    first = make_context(
        tmp_path, run_id="run_0", params={"dataset": str(config), "source": good}
    )
    ingest_customers_step(first)
    before = snapshot_files(first)

    ctx = make_context(
        tmp_path, run_id="run_1", params={"dataset": str(config), "source": bad_source}
    )
    with pytest.raises(DataContractError) as caught:
        ingest_customers_step(ctx)

    assert snapshot_files(ctx) == before, "a failed ingest changed stored artifacts"
    rows = [r for r in results_of(ctx, "D1") if r.run_id == "run_1"]
    assert [r.verdict for r in rows] == ["fail"]
    assert str(caught.value) in rows[0].reason
    return caught.value, rows[0].reason


def test_ingest_customers_tiny_csv_types_columns(tmp_path):
    """A good CSV is typed per the contract; a blank numeric field becomes missing."""
    table = read_source_table(_write(tmp_path, TINY_CSV.encode()))
    frame = check_customers_contract(table, tiny_dataset().contract)
    assert str(frame["tenure"].dtype) == "int64"
    assert frame["charges"].isna().tolist() == [False, False, True, False]
    assert frame["plan"].tolist() == ["basic", "pro", "basic", "pro"]


def test_ingest_step_writes_snapshot_with_hash(tmp_path):
    """The step stores a raw snapshot and returns its row count and content hash."""
    config = write_dataset_yaml(tmp_path / "tiny.yaml", TINY_DATASET)
    ctx = make_context(
        tmp_path,
        params={"dataset": str(config), "source": _write(tmp_path, TINY_CSV.encode())},
    )
    out = ingest_customers_step(ctx)
    assert out["rows"] == 4
    assert len(out["data_hash"]) == 64
    stored = pd.read_parquet(io.BytesIO(ctx.store.read_bytes(out["raw_snapshot"])))
    assert hash_customers(stored) == out["data_hash"]


def test_hash_customers_same_rows_same_hash_across_formats(tmp_path):
    """CSV and Parquet exports of the same rows have the same content hash."""
    contract = tiny_dataset().contract
    from_csv = ingest_customers(_write(tmp_path, TINY_CSV.encode()), contract)
    parquet = tmp_path / "c.parquet"
    from_csv.frame.to_parquet(parquet)
    from_parquet = ingest_customers(f"file://{parquet}", contract)
    assert from_csv.data_hash == from_parquet.data_hash
    changed = from_csv.frame.assign(tenure=from_csv.frame["tenure"] + 1)
    assert hash_customers(changed) != from_csv.data_hash


def test_ingest_customers_synthetic_source():
    """synthetic://ROWS?seed=N goes through the same contract as a file."""
    dataset = load_dataset("config/datasets/synthetic.yaml")
    first = ingest_customers("synthetic://300?seed=5", dataset.contract)
    again = ingest_customers("synthetic://300?seed=5", dataset.contract)
    drifted = ingest_customers("synthetic://300?seed=5&drift=1", dataset.contract)
    assert len(first.frame) == 300
    assert first.data_hash == again.data_hash != drifted.data_hash


def test_ingest_customers_telco_by_config_alone(telco_csv):
    """The IBM table ingests with config/datasets/telco.yaml and no code change."""
    dataset = load_dataset("config/datasets/telco.yaml")
    ingested = ingest_customers(dataset.source, dataset.contract)
    assert len(ingested.frame) == 7043
    assert int(ingested.frame["TotalCharges"].isna().sum()) == 11
    assert set(ingested.frame["Churn"]) == {"Yes", "No"}


def test_ingest_missing_column_names_it(tmp_path):
    """A missing column is named with the file and what the contract expects."""
    content = "\n".join(
        ",".join(p for i, p in enumerate(line.split(",")) if i != 4)
        for line in TINY_CSV.strip().split("\n")
    )
    error, _ = _ingest_after_good_run(tmp_path, _write(tmp_path, content.encode()))
    assert error.problem == "missing_column"
    assert "missing column(s) ['charges']" in str(error)
    assert "customers.csv" in str(error)


def test_ingest_renamed_column_suggests_new_name(tmp_path):
    """A renamed column is reported with the name it now seems to have."""
    content = TINY_CSV.replace("tenure", "tenure_months", 1)
    error, _ = _ingest_after_good_run(tmp_path, _write(tmp_path, content.encode()))
    assert "'tenure' looks renamed to 'tenure_months'" in str(error)


def test_ingest_changed_type_names_column_and_rows(tmp_path):
    """Text in an integer column names the column, lines and values, and the fix."""
    content = TINY_CSV.replace(",24,", ",two years,")
    error, reason = _ingest_after_good_run(tmp_path, _write(tmp_path, content.encode()))
    assert error.column == "tenure"
    assert "should hold integer values" in str(error)
    assert "line 3" in str(error) and "two years" in str(error)
    assert "declare the new type" in reason


def test_ingest_parquet_changed_type_fails(tmp_path):
    """A Parquet column whose type became text breaks the contract."""
    frame = pd.read_csv(io.StringIO(TINY_CSV), dtype=str, keep_default_na=False)
    frame["tenure"] = frame["tenure"].astype(str) + " months"
    path = tmp_path / "c.parquet"
    frame.to_parquet(path)
    with pytest.raises(DataContractError, match=r"column 'tenure' should hold integer"):
        ingest_customers(f"file://{path}", tiny_dataset().contract)


def test_ingest_empty_file_refused(tmp_path):
    """A zero-byte file is refused with a message saying the export failed."""
    error, _ = _ingest_after_good_run(tmp_path, _write(tmp_path, b""))
    assert error.problem == "empty"
    assert "is empty" in str(error)


def test_ingest_header_only_file_refused(tmp_path):
    """A header without rows is as empty as no file."""
    header = TINY_CSV.split("\n")[0] + "\n"
    error, _ = _ingest_after_good_run(tmp_path, _write(tmp_path, header.encode()))
    assert "no data rows" in str(error)


def test_ingest_file_cut_mid_row_refused(tmp_path):
    """A file that stops mid-row names the line and says it was cut off."""
    cut = TINY_CSV[: TINY_CSV.index("120.25") - 4]
    error, _ = _ingest_after_good_run(tmp_path, _write(tmp_path, cut.encode()))
    assert error.problem == "truncated"
    assert "line 5" in str(error)
    assert "cut off" in str(error)


def test_ingest_truncated_parquet_refused(tmp_path):
    """A Parquet file cut short is reported as incomplete."""
    frame = pd.read_csv(io.StringIO(TINY_CSV), dtype=str, keep_default_na=False)
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    source = _write(tmp_path, buffer.getvalue()[:-200], "c.parquet")
    with pytest.raises(DataContractError, match="not a complete Parquet file"):
        ingest_customers(source, tiny_dataset().contract)


def test_ingest_non_utf8_bytes_refused(tmp_path):
    """Latin-1 bytes are reported with line, column and how to re-encode."""
    content = TINY_CSV.encode().replace(b"cy@example.com", b"c\xe9@example.com")
    error, _ = _ingest_after_good_run(tmp_path, _write(tmp_path, content))
    assert error.problem == "encoding"
    assert "line 4, column 'email'" in str(error)
    assert "UTF-8" in str(error)


def test_ingest_duplicate_ids_refused_without_echoing_ids(tmp_path):
    """Duplicate ids are reported by line only: ids never reach messages or logs."""
    content = TINY_CSV.replace("C-1003", "C-1001")
    error, reason = _ingest_after_good_run(tmp_path, _write(tmp_path, content.encode()))
    assert error.problem == "duplicate_ids"
    assert "line 2, line 4" in str(error)
    assert "C-1001" not in reason


def test_ingest_missing_label_column_refused(tmp_path):
    """A source without the label column is refused naming the label."""
    content = "\n".join(line.rsplit(",", 1)[0] for line in TINY_CSV.strip().split("\n"))
    error, _ = _ingest_after_good_run(tmp_path, _write(tmp_path, content.encode()))
    assert "missing column(s) ['churned']" in str(error)


def test_ingest_single_class_label_refused(tmp_path):
    """A label with one class cannot train a churn model."""
    content = TINY_CSV.replace(",no\n", ",yes\n")
    error, _ = _ingest_after_good_run(tmp_path, _write(tmp_path, content.encode()))
    assert error.problem == "label"
    assert "single class ['yes']" in str(error)


def test_ingest_label_outside_classes_refused(tmp_path):
    """Label values outside the declared classes are named with their lines."""
    content = TINY_CSV.replace("120.25,no", "120.25,maybe")
    error, _ = _ingest_after_good_run(tmp_path, _write(tmp_path, content.encode()))
    assert "['maybe'] outside the declared classes ['yes', 'no']" in str(error)
    assert "line 5" in str(error)


def test_ingest_blank_label_refused(tmp_path):
    """Unlabelled rows are refused with their lines."""
    content = TINY_CSV.replace("99.0,no", "99.0,")
    error, _ = _ingest_after_good_run(tmp_path, _write(tmp_path, content.encode()))
    assert "label column 'churned' is blank" in str(error)


def test_ingest_missing_file_names_path(tmp_path):
    """A source that does not exist names the path it looked at."""
    with pytest.raises(DataContractError, match="does not exist"):
        ingest_customers(f"file://{tmp_path}/nope.csv", tiny_dataset().contract)


def test_ingest_undeclared_columns_dropped(tmp_path):
    """Columns the contract does not describe never reach the snapshot."""
    content = "\n".join(
        line + (",extra" if i == 0 else ",x")
        for i, line in enumerate(TINY_CSV.strip().split("\n"))
    )
    ingested = ingest_customers(
        _write(tmp_path, content.encode()), tiny_dataset().contract
    )
    assert "extra" not in ingested.frame.columns


@pytest.mark.gcs
def test_ingest_customers_from_gcs_source(gcs_client, gcs_bucket):
    """A gs:// source reads through the storage client like a local file."""
    gcs_client.bucket(gcs_bucket).blob("exports/customers.csv").upload_from_string(
        TINY_CSV.encode()
    )
    ingested = ingest_customers(
        f"gs://{gcs_bucket}/exports/customers.csv",
        tiny_dataset().contract,
        gcs_client=gcs_client,
    )
    assert len(ingested.frame) == 4
    with pytest.raises(DataContractError, match="does not exist"):
        ingest_customers(
            f"gs://{gcs_bucket}/exports/missing.csv",
            tiny_dataset().contract,
            gcs_client=gcs_client,
        )


def test_read_source_table_parse_error_never_quotes_the_row(tmp_path):
    """A row the parser rejects is named by line, never shown: it holds an id."""
    path = tmp_path / "customers.csv"
    path.write_bytes(b"customerID,tenure\n7590-VHVEG,1\n5575-GNVDE,2,extra\n")
    with pytest.raises(DataContractError) as caught:
        read_source_table(f"file://{path}")
    assert "5575-GNVDE" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
