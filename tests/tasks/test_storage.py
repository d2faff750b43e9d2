"""The artifact-store contract, run against FileStore and GcsStore (fake-gcs-server)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from tasks.storage import ArtifactNotFound, ArtifactStore, FileStore, StorageError

pytest_plugins = ["tests.gcs_emulator"]

RACE_THREADS = 8
RACE_ROUNDS = 4


@pytest.fixture(params=["file", pytest.param("gcs", marks=pytest.mark.gcs)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "file":
        return FileStore(tmp_path / "artifacts")
    return request.getfixturevalue("gcs_store")


def _write_tree(root: Path) -> dict[str, bytes]:
    files = {
        "model.keras": b"\x00weights\xff" * 100,
        "assets/vocab.txt": b"yes\nno\n",
        "assets/deep/spec.json": b'{"inputs": 19}',
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_store_round_trip(store: ArtifactStore) -> None:
    """Bytes and text come back exactly as written, and the URI is under the root."""
    uri = store.write_bytes("runs/r1/blob.bin", bytes(range(256)))
    store.write_text("runs/r1/note.txt", "churn — ünïcode")

    assert uri == f"{store.root}/runs/r1/blob.bin"
    assert store.read_bytes("runs/r1/blob.bin") == bytes(range(256))
    assert store.read_text("runs/r1/note.txt") == "churn — ünïcode"
    assert store.exists("runs/r1/blob.bin")
    assert not store.exists("runs/r1/other.bin")


def test_store_overwrite_replaces_whole_value(store: ArtifactStore) -> None:
    """A second write replaces the first entirely, even when it is shorter."""
    store.write_bytes("k", b"a" * 1000)
    store.write_bytes("k", b"b")

    assert store.read_bytes("k") == b"b"


def test_store_missing_key_names_uri(store: ArtifactStore) -> None:
    """Reading an absent key raises ArtifactNotFound naming the full URI."""
    with pytest.raises(ArtifactNotFound, match=re.escape(store.uri("runs/none.bin"))):
        store.read_bytes("runs/none.bin")


def test_store_list_with_prefix(store: ArtifactStore) -> None:
    """list returns sorted keys relative to the root, filtered by prefix."""
    for key in ["runs/b/y.json", "runs/a/x.json", "models/v1/model.keras", "top"]:
        store.write_bytes(key, b"1")

    assert store.list("runs/") == ["runs/a/x.json", "runs/b/y.json"]
    assert store.list() == [
        "models/v1/model.keras",
        "runs/a/x.json",
        "runs/b/y.json",
        "top",
    ]
    assert store.list("nothing/") == []


def test_store_delete(store: ArtifactStore) -> None:
    """delete removes one key, leaves its neighbours, and ignores absent keys."""
    store.write_bytes("runs/a", b"1")
    store.write_bytes("runs/b", b"2")

    store.delete("runs/a")
    store.delete("runs/never-written")

    assert not store.exists("runs/a")
    assert store.list("runs/") == ["runs/b"]


def test_store_upload_download_folder(store: ArtifactStore, tmp_path: Path) -> None:
    """A folder uploaded under a key downloads back file for file."""
    source = tmp_path / "model_dir"
    files = _write_tree(source)

    store.upload("models/v3", source)
    target = store.download("models/v3", tmp_path / "copy")

    assert store.list("models/v3/") == sorted(f"models/v3/{n}" for n in files)
    for name, data in files.items():
        assert (target / name).read_bytes() == data


def test_store_upload_download_single_file(
    store: ArtifactStore, tmp_path: Path
) -> None:
    """A single file uploads to one key and downloads to the path asked for."""
    source = tmp_path / "metrics.json"
    source.write_text('{"auc": 0.85}')

    store.upload("models/v3/metrics.json", source)
    target = store.download("models/v3/metrics.json", tmp_path / "out" / "m.json")

    assert target == tmp_path / "out" / "m.json"
    assert target.read_text() == '{"auc": 0.85}'


def test_store_download_missing_names_uri(store: ArtifactStore, tmp_path: Path) -> None:
    """Downloading a key with nothing under it raises ArtifactNotFound with the URI."""
    with pytest.raises(ArtifactNotFound, match=re.escape(store.uri("models/none"))):
        store.download("models/none", tmp_path / "x")


def test_store_local_copy(store: ArtifactStore, tmp_path: Path) -> None:
    """local_copy gives a readable path for a file or a folder, removed afterwards."""
    files = _write_tree(tmp_path / "src")
    store.upload("models/v1", tmp_path / "src")
    store.write_bytes("data/snapshot.csv", b"id,churn\n1,Yes\n")

    with store.local_copy("data/snapshot.csv") as path:
        assert path.name == "snapshot.csv"
        assert path.read_bytes() == b"id,churn\n1,Yes\n"
    with store.local_copy("models/v1") as folder:
        assert (folder / "assets/deep/spec.json").read_bytes() == files[
            "assets/deep/spec.json"
        ]

    assert not path.exists()
    assert not folder.exists()


def test_store_read_versioned_token_changes_on_write(store: ArtifactStore) -> None:
    """read_versioned gives no token when absent and a new token after each write."""
    assert store.read_versioned("aliases/production") == (None, None)

    store.write_bytes("aliases/production", b"v1")
    data1, token1 = store.read_versioned("aliases/production")
    store.write_bytes("aliases/production", b"v2")
    data2, token2 = store.read_versioned("aliases/production")

    assert (data1, data2) == (b"v1", b"v2")
    assert token1 is not None
    assert token2 is not None
    assert token1 != token2
    assert store.read_versioned("aliases/production") == (b"v2", token2)


def test_store_write_if_unchanged_current_token_wins(store: ArtifactStore) -> None:
    """A conditional write with the token just read succeeds and moves the token."""
    store.write_bytes("aliases/staging", b"v1")
    _, token = store.read_versioned("aliases/staging")

    assert store.write_if_unchanged("aliases/staging", b"v2", token) is True
    data, new_token = store.read_versioned("aliases/staging")
    assert data == b"v2"
    assert new_token != token


def test_store_write_if_unchanged_refuses_stale_token(store: ArtifactStore) -> None:
    """A conditional write with a token from before another write changes nothing."""
    store.write_bytes("aliases/staging", b"v1")
    _, stale = store.read_versioned("aliases/staging")
    store.write_bytes("aliases/staging", b"v2")

    assert store.write_if_unchanged("aliases/staging", b"mine", stale) is False
    assert store.read_bytes("aliases/staging") == b"v2"


def test_store_write_if_unchanged_only_if_absent(store: ArtifactStore) -> None:
    """Token None writes only when the key is absent; the second such write loses."""
    assert store.write_if_unchanged("aliases/canary", b"first", None) is True
    assert store.write_if_unchanged("aliases/canary", b"second", None) is False
    assert store.read_bytes("aliases/canary") == b"first"


def test_store_write_if_unchanged_refuses_token_after_delete(
    store: ArtifactStore,
) -> None:
    """A token for an object since deleted does not recreate it."""
    store.write_bytes("aliases/canary", b"v1")
    _, token = store.read_versioned("aliases/canary")
    store.delete("aliases/canary")

    assert store.write_if_unchanged("aliases/canary", b"v2", token) is False
    assert not store.exists("aliases/canary")


def test_store_alias_race_has_one_winner_per_round(store: ArtifactStore) -> None:
    """Threads that read the same token race to move the alias: exactly one wins."""
    key = "aliases/production"
    store.write_bytes(key, b"initial")
    all_read = threading.Barrier(RACE_THREADS)
    wins: list[list[int]] = [[] for _ in range(RACE_ROUNDS)]
    errors: list[BaseException] = []

    def value_of(writer: int, round_: int) -> bytes:
        return f"writer={writer} round={round_};".encode() * 2000

    def contend(writer: int) -> None:
        try:
            for round_ in range(RACE_ROUNDS):
                _, token = store.read_versioned(key)
                all_read.wait(timeout=20)
                if store.write_if_unchanged(key, value_of(writer, round_), token):
                    wins[round_].append(writer)
                all_read.wait(timeout=20)
        except BaseException as exc:
            errors.append(exc)
            all_read.abort()

    threads = [threading.Thread(target=contend, args=(w,)) for w in range(RACE_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert [len(w) for w in wins] == [1] * RACE_ROUNDS, wins
    last_winner = wins[-1][0]
    assert store.read_bytes(key) == value_of(last_winner, RACE_ROUNDS - 1)


@pytest.mark.parametrize("key", ["../escape", "runs/../../etc/passwd", "a/..", ""])
def test_store_refuses_key_with_dotdot(store: ArtifactStore, key: str) -> None:
    """Keys that climb out of the root (or are empty) are refused before any I/O."""
    with pytest.raises(StorageError, match=r"relative path without '\.\.'"):
        store.write_bytes(key, b"x")
    with pytest.raises(StorageError, match=r"relative path without '\.\.'"):
        store.read_bytes(key)
    with pytest.raises(StorageError, match=r"relative path without '\.\.'"):
        store.write_if_unchanged(key, b"x", None)
