"""``churnops delete-customers``: a deletion request from the command line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from gates.cli import main
from gates.store import ScoreStore
from tasks.pseudonymize import pseudonymize_ids
from tasks.storage import FileStore

KEY = "a-deletion-test-key-long-enough"


def test_cli_delete_customers_reaches_snapshots_logs_and_labels(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every place a customer's rows live is cleaned, and the request is recorded."""
    store = FileStore(tmp_path / "artifacts")
    [pseudonym] = pseudonymize_ids(["7590-VHVEG"], KEY.encode())
    raw = pd.DataFrame({"customerID": ["7590-VHVEG", "5575-GNVDE"]})
    buffer = io.BytesIO()
    raw.to_parquet(buffer)
    store.write_bytes("runs/churn_training/r1/raw/customers.parquet", buffer.getvalue())
    log_line = json.dumps({"customer_id": pseudonym, "churn_probability": 0.3})
    store.write_text("predictions/2026-12-01/a.jsonl", log_line + "\n")
    labels = pd.DataFrame({"customerID": [pseudonym], "Churn": ["Yes"]})
    buffer = io.BytesIO()
    labels.to_parquet(buffer)
    store.write_bytes("labels/2026-12-04/l.parquet", buffer.getvalue())
    ids = tmp_path / "ids.txt"
    ids.write_text("7590-VHVEG\n")
    db = f"sqlite:///{tmp_path / 'scores.db'}"
    monkeypatch.setenv("CHURNOPS_STORAGE_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("CHURNOPS_SCORE_DB_URL", db)
    monkeypatch.setenv("CHURNOPS_PSEUDONYMIZATION_KEY", KEY)

    assert main(["delete-customers", "--ids", str(ids)]) == 0

    summary = json.loads(capsys.readouterr().out)
    assert summary["removed_rows"] == 3
    assert store.read_text("predictions/2026-12-01/a.jsonl") == ""
    kept = pd.read_parquet(
        io.BytesIO(store.read_bytes("runs/churn_training/r1/raw/customers.parquet"))
    )
    assert list(kept["customerID"]) == ["5575-GNVDE"]
    assert "7590-VHVEG" not in store.read_text(summary["record"])
    [d5] = ScoreStore.open(db).results()
    assert (d5.test_id, d5.verdict, d5.dag_id) == ("D5", "pass", "deletion_requests")


def test_cli_delete_customers_missing_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A request file that does not exist is named in a one-line error."""
    assert main(["delete-customers", "--ids", str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt" in capsys.readouterr().err
