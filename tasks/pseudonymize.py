"""Pseudonymization: customer ids replaced by a keyed HMAC, direct identifiers dropped.

The same key gives the same pseudonym for a customer in every run, so labels that
arrive later and deletion requests can still be joined, while nobody without the key
can go back from a pseudonym to the customer. The key comes from the environment
(``CHURNOPS_PSEUDONYMIZATION_KEY``) or, in Airflow, from a connection the DAG reads
and passes in; it is never logged or written next to the data.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from tasks.config import PROJECT_ROOT, DataContract

log = logging.getLogger(__name__)

KEY_VARIABLE = "CHURNOPS_PSEUDONYMIZATION_KEY"
DEFAULT_KEY_FILE = PROJECT_ROOT / "var" / "pseudonymization.key"
# Shorter keys make the HMAC guessable by brute force over plausible ids.
MIN_KEY_BYTES = 16
# 128 bits of the HMAC: collisions are out of reach for any customer base.
PSEUDONYM_HEX_CHARS = 32


class PrivacyError(RuntimeError):
    """The privacy controls cannot run as configured (no key, a weak key)."""

    # A missing or weak key needs a person; retrying cannot fix it.
    retryable = False


def resolve_pseudonymization_key(
    environ: Mapping[str, str] | None = None,
    *,
    key: bytes | str | None = None,
    allow_generated_key: bool = False,
    key_file: Path = DEFAULT_KEY_FILE,
) -> bytes:
    """The HMAC key: passed in, else from the environment, else (demo) a local file.

    Without a key the run is refused: pseudonyms made with a throwaway key could not
    be joined with the next run's. ``allow_generated_key`` is for the embedded demo
    only; it creates a random key once under ``var/`` and reuses it.
    """
    env = os.environ if environ is None else environ
    chosen = key if key is not None else env.get(KEY_VARIABLE)
    if chosen is None and allow_generated_key:
        chosen = _read_or_create_key_file(key_file)
    if chosen is None or not str(chosen).strip():
        raise PrivacyError(
            f"no pseudonymization key: set {KEY_VARIABLE} (at least {MIN_KEY_BYTES} "
            "characters, e.g. from `python -c 'import secrets; "
            "print(secrets.token_hex(32))'`) or give the DAG the Airflow connection "
            "that holds it; refusing to ingest without one"
        )
    material = chosen.encode("utf-8") if isinstance(chosen, str) else chosen
    if len(material) < MIN_KEY_BYTES:
        raise PrivacyError(
            f"the pseudonymization key is {len(material)} bytes long; use at least "
            f"{MIN_KEY_BYTES} random bytes so pseudonyms cannot be brute-forced"
        )
    return material


def _read_or_create_key_file(path: Path) -> str:
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_hex(32))
    log.info("Generated a local pseudonymization key for the demo at %s", path)
    return path.read_text(encoding="utf-8").strip()


def pseudonymize_ids(ids: Iterable[object], key: bytes) -> list[str]:
    """The keyed pseudonym of each id, in order."""
    # hmac.digest with a digest name takes OpenSSL's one-shot path: ~4x faster.
    digest = hmac.digest
    return [
        digest(key, str(value).encode("utf-8"), "sha256").hex()[:PSEUDONYM_HEX_CHARS]
        for value in ids
    ]


def pseudonymize_customers(
    frame: pd.DataFrame, contract: DataContract, key: bytes
) -> pd.DataFrame:
    """Rows with the id replaced by its pseudonym and direct identifiers dropped."""
    dropped = [c for c in contract.direct_identifiers if c in frame.columns]
    result = frame.drop(columns=dropped)
    ids = frame[contract.id_column]
    result[contract.id_column] = pd.array(
        pseudonymize_ids(ids.to_numpy(), key), dtype="string"
    )
    log.info(
        "Pseudonymized %d customer ids; dropped %d direct identifier column(s)",
        len(result),
        len(dropped),
    )
    return result
