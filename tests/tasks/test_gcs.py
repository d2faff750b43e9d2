"""GcsStore details beyond the shared contract, against fake-gcs-server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from tasks.gcs import GcsStore, parse_gcs_root
from tasks.storage import ArtifactNotFound, StorageError, open_store

pytest_plugins = ["tests.gcs_emulator"]

FAST_RETRY = DEFAULT_RETRY.with_delay(initial=0.01, maximum=0.05)


class LoseFirstConditionalResponse(requests.Session):
    """Sends every request, but drops the first conditional upload's response."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().request(method, url, *args, **kwargs)
        if "ifGenerationMatch" in str(url) and not self.dropped:
            self.dropped += 1
            raise requests.ConnectionError("connection reset after the upload landed")
        return response


def test_parse_gcs_root_splits_bucket_and_prefix() -> None:
    """The bucket and a cleaned prefix come out of gs:// roots of any shape."""
    assert parse_gcs_root("gs://bkt/a/b/") == ("bkt", "a/b")
    assert parse_gcs_root("gs://bkt") == ("bkt", "")
    assert parse_gcs_root("gs://bkt/") == ("bkt", "")


def test_parse_gcs_root_refuses_missing_bucket_and_dotdot() -> None:
    """A root without a bucket, or climbing with '..', is refused with the fix."""
    with pytest.raises(StorageError, match=r"names no bucket.*CHURNOPS_STORAGE_ROOT"):
        parse_gcs_root("gs:///prefix")
    with pytest.raises(StorageError, match=r"without '\.\.'"):
        parse_gcs_root("gs://bkt/a/../..")


@pytest.mark.gcs
def test_emulator_enforces_generation_preconditions(
    gcs_client: storage.Client, gcs_bucket: str
) -> None:
    """fake-gcs-server answers a stale ifGenerationMatch with 412, as GCS does."""
    bucket = gcs_client.bucket(gcs_bucket)
    blob = bucket.blob("alias")
    blob.upload_from_string(b"v1", if_generation_match=0)
    stale = blob.generation
    bucket.blob("alias").upload_from_string(b"v2", if_generation_match=stale)

    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("alias").upload_from_string(b"v3", if_generation_match=stale)
    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("alias").upload_from_string(b"v3", if_generation_match=0)
    assert bucket.blob("alias").download_as_bytes() == b"v2"


@pytest.mark.gcs
def test_gcs_store_token_is_object_generation(gcs_store: GcsStore) -> None:
    """The version token is the object's GCS generation, as a string."""
    gcs_store.write_bytes("aliases/production", b"v1")

    _, token = gcs_store.read_versioned("aliases/production")

    blob = gcs_store.bucket.get_blob("artifacts/aliases/production")
    assert blob is not None
    assert token == str(blob.generation)


@pytest.mark.gcs
def test_gcs_store_keys_live_under_root_prefix(
    gcs_store: GcsStore, gcs_client: storage.Client
) -> None:
    """Objects are named prefix/key, and objects outside the prefix are not listed."""
    gcs_store.write_bytes("runs/r1/a.json", b"{}")
    gcs_store.bucket.blob("elsewhere/b.json").upload_from_string(b"{}")
    gcs_store.bucket.blob("artifacts-old/c.json").upload_from_string(b"{}")

    names = sorted(b.name for b in gcs_client.list_blobs(gcs_store.bucket))
    assert "artifacts/runs/r1/a.json" in names
    assert gcs_store.list() == ["runs/r1/a.json"]
    assert gcs_store.uri("runs/r1/a.json").endswith("/artifacts/runs/r1/a.json")


@pytest.mark.gcs
def test_gcs_store_missing_bucket_says_how_to_fix(gcs_client: storage.Client) -> None:
    """Every operation on an absent bucket names it and says to create it or fix it."""
    store = GcsStore("gs://churnops-no-such-bucket/p", client=gcs_client)
    fix = r"gs://churnops-no-such-bucket does not exist.*CHURNOPS_STORAGE_ROOT"

    with pytest.raises(StorageError, match=fix):
        store.write_bytes("k", b"x")
    with pytest.raises(StorageError, match=fix):
        store.read_bytes("k")
    with pytest.raises(StorageError, match=fix):
        store.list()
    with pytest.raises(StorageError, match=fix):
        store.read_versioned("k")
    with pytest.raises(StorageError, match=fix):
        store.delete("k")


@pytest.mark.gcs
def test_gcs_store_missing_key_is_not_a_bucket_error(gcs_store: GcsStore) -> None:
    """An absent object in an existing bucket is ArtifactNotFound (no bucket error)."""
    with pytest.raises(ArtifactNotFound, match=r"no artifact at gs://.*/artifacts/k"):
        gcs_store.read_bytes("k")


@pytest.mark.gcs
def test_gcs_store_refuses_token_that_is_not_a_generation(gcs_store: GcsStore) -> None:
    """A FileStore-style token is refused with a message instead of a ValueError."""
    with pytest.raises(StorageError, match="is not a GCS generation"):
        gcs_store.write_if_unchanged("aliases/x", b"v", "ab12cd")


@pytest.mark.gcs
def test_gcs_store_retried_conditional_write_knows_it_won(
    gcs_emulator: str, gcs_client: storage.Client, gcs_bucket: str
) -> None:
    """A conditional upload that landed but lost its response is reported as won."""
    session = LoseFirstConditionalResponse()
    flaky = storage.Client(
        project=gcs_client.project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_emulator},
        _http=session,
    )
    store = GcsStore(f"gs://{gcs_bucket}", client=flaky, retry=FAST_RETRY)

    assert store.write_if_unchanged("aliases/production", b"v1", None) is True
    assert session.dropped == 1
    assert store.read_bytes("aliases/production") == b"v1"
    assert store.write_if_unchanged("aliases/production", b"v2", None) is False


@pytest.mark.gcs
def test_open_store_honours_storage_emulator_host(
    gcs_emulator: str,
    gcs_client: storage.Client,
    gcs_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a client, open_store's GcsStore talks to STORAGE_EMULATOR_HOST."""
    bucket = gcs_bucket
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)

    store = open_store(f"gs://{bucket}/from-env")
    store.write_text("hello.txt", "hi")

    assert isinstance(store, GcsStore)
    assert (
        gcs_client.bucket(bucket).blob("from-env/hello.txt").download_as_bytes()
        == b"hi"
    )


def test_start_gcs_emulator_reports_unrunnable_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A binary for another architecture becomes EmulatorUnavailable (a skip reason)."""
    import tests.gcs_emulator as emulator

    foreign = tmp_path / "fake-gcs-server-linux-other"
    foreign.write_bytes(b"\x7fELF not for this machine")
    foreign.chmod(0o755)
    monkeypatch.setattr(emulator, "find_emulator_binary", lambda: foreign)

    with pytest.raises(emulator.EmulatorUnavailable, match=r"cannot run .*linux-other"):
        emulator.start_gcs_emulator(tmp_path)
