"""Keyed pseudonymization: the key's source, stable pseudonyms, identifiers dropped."""

from __future__ import annotations

import logging
import stat

import pandas as pd
import pytest

from tasks.data_steps import ingest_customers_step, pseudonymize_customers_step
from tasks.pseudonymize import (
    KEY_VARIABLE,
    PrivacyError,
    pseudonymize_customers,
    pseudonymize_ids,
    resolve_pseudonymization_key,
)
from tests.tasks.conftest_data import (
    KEY,
    TINY_CSV,
    TINY_DATASET,
    make_context,
    results_of,
    tiny_dataset,
    write_dataset_yaml,
)


def _tiny_frame() -> pd.DataFrame:
    import io

    return pd.read_csv(io.StringIO(TINY_CSV), dtype="string")


def test_resolve_key_missing_refuses_run(tmp_path):
    """Without a key, nothing is pseudonymized: the error says how to provide one."""
    with pytest.raises(PrivacyError, match=KEY_VARIABLE):
        resolve_pseudonymization_key({}, key_file=tmp_path / "k")
    assert not (tmp_path / "k").exists()


def test_resolve_key_from_environment_and_argument():
    """An explicit key (the Airflow connection's) wins over the environment."""
    env = {KEY_VARIABLE: "env-key-0123456789abcdef"}
    assert resolve_pseudonymization_key(env) == b"env-key-0123456789abcdef"
    assert resolve_pseudonymization_key(env, key=KEY) == KEY


def test_resolve_key_short_key_refused():
    """A short key would let pseudonyms be brute-forced."""
    with pytest.raises(PrivacyError, match="at least 16"):
        resolve_pseudonymization_key({KEY_VARIABLE: "short"})


def test_resolve_key_generated_for_demo_is_kept(tmp_path):
    """The demo's generated key is written once, private, and reused."""
    path = tmp_path / "var" / "key"
    first = resolve_pseudonymization_key({}, allow_generated_key=True, key_file=path)
    again = resolve_pseudonymization_key({}, allow_generated_key=True, key_file=path)
    assert first == again and len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_pseudonymize_ids_stable_and_keyed():
    """The same id and key give the same pseudonym; another key gives another."""
    ids = ["C-1", "C-2"]
    assert pseudonymize_ids(ids, KEY) == pseudonymize_ids(ids, KEY)
    assert pseudonymize_ids(ids, KEY) != pseudonymize_ids(
        ids, b"another-key-0123456789"
    )
    assert len(set(pseudonymize_ids(ids, KEY))) == 2
    assert all(len(p) == 32 for p in pseudonymize_ids(ids, KEY))


def test_pseudonymize_customers_masks_ids_and_drops_direct_identifiers():
    """No raw id and no direct identifier column survives."""
    frame = _tiny_frame()
    masked = pseudonymize_customers(frame, tiny_dataset().contract, KEY)
    assert "email" not in masked.columns
    assert not set(masked["customer_id"]) & set(frame["customer_id"])
    assert masked["tenure"].tolist() == frame["tenure"].tolist()


def test_pseudonymize_never_logs_the_key(caplog):
    """The key appears in no log record."""
    caplog.set_level(logging.DEBUG)
    pseudonymize_customers(_tiny_frame(), tiny_dataset().contract, KEY)
    assert KEY.decode() not in caplog.text


def test_pseudonymize_step_without_key_records_d5_fail(tmp_path):
    """The step refuses to run without a key and records why under D5."""
    config = write_dataset_yaml(tmp_path / "tiny.yaml", TINY_DATASET)
    source = tmp_path / "c.csv"
    source.write_text(TINY_CSV)
    ctx = make_context(
        tmp_path, params={"dataset": str(config), "source": f"file://{source}"}
    )
    ingested = ingest_customers_step(ctx)
    with pytest.raises(PrivacyError):
        pseudonymize_customers_step(ctx, ingested, environ={})
    assert [r.verdict for r in results_of(ctx, "D5")] == ["fail"]
    assert not ctx.store.exists(ctx.key("data", "customers.parquet"))


def test_pseudonymize_step_writes_masked_snapshot(tmp_path):
    """The step stores pseudonymized rows with their own content hash."""
    config = write_dataset_yaml(tmp_path / "tiny.yaml", TINY_DATASET)
    source = tmp_path / "c.csv"
    source.write_text(TINY_CSV)
    ctx = make_context(
        tmp_path, params={"dataset": str(config), "source": f"file://{source}"}
    )
    out = pseudonymize_customers_step(ctx, ingest_customers_step(ctx), key=KEY)
    assert out["dropped_columns"] == ["email"]
    assert out["rows"] == 4
    text = ctx.store.read_bytes(out["snapshot"])
    assert b"C-1001" not in text and b"example.com" not in text
