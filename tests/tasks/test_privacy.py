"""The privacy scan of written artifacts, and deletion requests."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from gates.result import GateFailed
from tasks.data_steps import (
    delete_customers_step,
    ingest_customers_step,
    pseudonymize_customers_step,
    scan_privacy_step,
)
from tasks.privacy import (
    collect_raw_identifiers,
    count_stored_customers,
    delete_customers,
    scan_artifact,
)
from tasks.pseudonymize import pseudonymize_ids
from tasks.storage import FileStore
from tests.tasks.conftest_data import (
    KEY,
    TINY_CSV,
    TINY_DATASET,
    make_context,
    results_of,
    write_dataset_yaml,
)

IDS = {"C-1001", "C-1002", "ann@example.com"}


def _run_to_pseudonymized(tmp_path, run_id="run_1"):
    config = write_dataset_yaml(tmp_path / "tiny.yaml", TINY_DATASET)
    source = tmp_path / "c.csv"
    source.write_text(TINY_CSV)
    ctx = make_context(
        tmp_path,
        run_id=run_id,
        params={"dataset": str(config), "source": f"file://{source}"},
    )
    ingested = ingest_customers_step(ctx)
    return ctx, ingested, pseudonymize_customers_step(ctx, ingested, key=KEY)


def test_scan_artifact_finds_ids_in_json_and_html():
    """Ids inside JSON strings, HTML cells and log lines are found as whole tokens."""
    assert scan_artifact("r.json", b'{"unexpected": ["C-1001"]}', IDS).count == 1
    assert (
        scan_artifact("d.html", b"<td>C-1002</td><td>ann@example.com</td>", IDS).count
        == 2
    )
    assert scan_artifact("x.log", b"INFO row C-1001.", IDS).count == 1


def test_scan_artifact_ignores_longer_tokens_and_clean_files():
    """An id that is only part of a longer token, or no id at all, is no finding."""
    assert scan_artifact("a.txt", b"XC-1001X and C-10012", IDS) is None
    assert scan_artifact("a.txt", b"nothing here", IDS) is None


def test_scan_artifact_reads_parquet_values():
    """Parquet is compressed: its text columns are compared value by value."""
    buffer = io.BytesIO()
    pd.DataFrame({"id": ["C-1001", "zz"], "n": [1, 2]}).to_parquet(buffer)
    finding = scan_artifact("s.parquet", buffer.getvalue(), IDS)
    assert finding is not None and finding.count == 1


def test_collect_raw_identifiers_skips_short_values():
    """Values shorter than the minimum are not searched for."""
    frame = pd.DataFrame({"id": ["C-1001", "ab"], "email": ["x@example.com", None]})
    found = collect_raw_identifiers(frame, ["id", "email"], max_values=10, min_chars=6)
    assert found == {"C-1001", "x@example.com"}


def test_scan_privacy_step_passes_clean_run(tmp_path):
    """A run whose artifacts hold only pseudonyms passes D5."""
    ctx, _, _ = _run_to_pseudonymized(tmp_path)
    out = scan_privacy_step(ctx)
    assert out["verdict"] == "pass"
    assert results_of(ctx, "D5")[-1].verdict == "pass"


def test_scan_privacy_step_fails_on_raw_id_in_validation_report(tmp_path):
    """A raw id written into a validation report fails D5 and names the artifact."""
    ctx, _, _ = _run_to_pseudonymized(tmp_path)
    leaked = ctx.key("validation", "result.json")
    ctx.store.write_text(leaked, json.dumps({"partial_unexpected_list": ["C-1003"]}))
    with pytest.raises(GateFailed, match="raw identifiers found"):
        scan_privacy_step(ctx)
    row = results_of(ctx, "D5")[-1]
    assert row.verdict == "fail" and leaked in row.reason
    assert "C-1003" not in row.reason and "C-1003" not in json.dumps(row.details)


def test_scan_privacy_step_fails_on_unmasked_identifier_column(tmp_path):
    """A 'pseudonymized' snapshot that kept raw ids and emails fails D5."""
    ctx, ingested, masked = _run_to_pseudonymized(tmp_path)
    ctx.store.write_bytes(
        masked["snapshot"], ctx.store.read_bytes(ingested["raw_snapshot"])
    )
    with pytest.raises(GateFailed, match="left unmasked"):
        scan_privacy_step(ctx)
    assert set(results_of(ctx, "D5")[-1].details["unmasked_columns"]) == {
        "email",
        "customer_id",
    }


def test_scan_privacy_step_scans_extra_keys(tmp_path):
    """Artifacts outside the run (a copied task log) are scanned when named."""
    ctx, _, _ = _run_to_pseudonymized(tmp_path)
    ctx.store.write_text("logs/ingest.log", "reading customer C-1004\n")
    with pytest.raises(GateFailed):
        scan_privacy_step(ctx, extra_keys=["logs/ingest.log"])


def test_delete_customers_removes_raw_and_pseudonymized_rows(tmp_path):
    """Both the raw and the pseudonymized snapshots lose the customer's rows."""
    ctx, ingested, masked = _run_to_pseudonymized(tmp_path)
    report = delete_customers(
        ctx.store, "runs/", ["C-1002"], id_column="customer_id", key=KEY
    )
    assert report.removed_rows == {ingested["raw_snapshot"]: 1, masked["snapshot"]: 1}
    raw = pd.read_parquet(io.BytesIO(ctx.store.read_bytes(ingested["raw_snapshot"])))
    assert "C-1002" not in set(raw["customer_id"])
    data = pd.read_parquet(io.BytesIO(ctx.store.read_bytes(masked["snapshot"])))
    assert pseudonymize_ids(["C-1002"], KEY)[0] not in set(data["customer_id"])
    assert len(data) == 3


def test_delete_customers_step_records_request_without_raw_ids(tmp_path):
    """The request is kept as an audit record of pseudonyms and a D5 row."""
    ctx, _, _ = _run_to_pseudonymized(tmp_path)
    _run_to_pseudonymized(tmp_path, run_id="run_2")
    out = delete_customers_step(ctx, ["C-1001", "C-1004"], key=KEY)
    assert out["removed_rows"] == 8 and out["snapshots"] == 4
    record = ctx.store.read_text(out["record"])
    assert "C-1001" not in record
    assert pseudonymize_ids(["C-1001"], KEY)[0] in record
    assert results_of(ctx, "D5")[-1].verdict == "pass"


def test_delete_customers_leaves_other_snapshots_untouched(tmp_path):
    """A snapshot without the customers is not rewritten."""
    store = FileStore(tmp_path)
    buffer = io.BytesIO()
    pd.DataFrame({"customer_id": ["A-1"]}).to_parquet(buffer)
    store.write_bytes("runs/x/data/customers.parquet", buffer.getvalue())
    before = store.read_bytes("runs/x/data/customers.parquet")
    report = delete_customers(store, "runs/", ["B-2"], id_column="customer_id", key=KEY)
    assert report.removed_rows == {}
    assert store.read_bytes("runs/x/data/customers.parquet") == before


def test_scan_privacy_step_after_failed_ingest_is_insufficient(tmp_path):
    """Without a raw snapshot the scan says it had nothing to search for."""
    ctx = make_context(tmp_path)
    assert scan_privacy_step(ctx)["verdict"] == "insufficient evidence"
    assert results_of(ctx, "D5")[-1].verdict == "insufficient evidence"


def test_delete_customers_removes_their_prediction_log_lines(tmp_path):
    """A deleted customer's logged predictions go; other lines stay byte for byte."""
    store = FileStore(tmp_path)
    gone, kept = pseudonymize_ids(["C-1", "C-2"], KEY)
    lines = [
        json.dumps({"customer_id": gone, "churn_probability": 0.4}) + "\n",
        json.dumps({"customer_id": kept, "churn_probability": 0.1}) + "\n",
    ]
    store.write_text("predictions/2026-12-01/a.jsonl", "".join(lines))

    report = delete_customers(
        store, "predictions/", ["C-1"], id_column="customerID", key=KEY
    )

    assert report.removed_rows == {"predictions/2026-12-01/a.jsonl": 1}
    assert store.read_text("predictions/2026-12-01/a.jsonl") == lines[1]
    assert (
        count_stored_customers(
            store, "predictions/", ["C-1"], id_column="customerID", key=KEY
        )
        == 0
    )
