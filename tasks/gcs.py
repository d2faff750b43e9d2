"""Artifacts in a Google Cloud Storage bucket under ``gs://bucket/prefix``.

Each write is one whole-object upload, so readers see the old object or the new one,
never a mix. Alias moves use GCS generation preconditions: the object's generation is
the version token, and a write conditioned on a stale generation is refused by the
server with 412, which is how two runs racing for an alias end with one winner.

Without an explicit client, ``google.cloud.storage.Client()`` decides where to talk:
with ``STORAGE_EMULATOR_HOST`` set it goes to that emulator with anonymous
credentials (and the project from ``GOOGLE_CLOUD_PROJECT``, if any); otherwise it uses
Application Default Credentials against the real service.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, NoReturn

from tasks.storage import ArtifactNotFound, ArtifactStore, StorageError, _clean_key

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud.storage import Blob, Bucket, Client

log = logging.getLogger(__name__)

# Custom metadata naming the writer of a conditional upload; lets a writer whose
# successful upload was retried (response lost) recognise its own object after a 412.
WRITE_ID_FIELD = "churnops-write-id"
REQUEST_TIMEOUT_SECONDS = 60.0


def parse_gcs_root(root: str) -> tuple[str, str]:
    """Split ``gs://bucket/some/prefix`` into the bucket and the cleaned prefix."""
    if not root.startswith("gs://"):
        raise StorageError(f"storage root {root!r} is not a gs://BUCKET/PREFIX URI")
    bucket, _, prefix = root.removeprefix("gs://").partition("/")
    if not bucket:
        raise StorageError(
            f"storage root {root!r} names no bucket; write it as gs://BUCKET/PREFIX "
            "in CHURNOPS_STORAGE_ROOT or storage_root in config/churnops.yaml"
        )
    prefix = prefix.strip("/")
    return bucket, _clean_key(prefix) if prefix else ""


def connect_gcs_client() -> Client:
    """A client for the real service, or the emulator STORAGE_EMULATOR_HOST names."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    try:
        return storage.Client()
    except DefaultCredentialsError as exc:
        raise StorageError(
            "no Google Cloud credentials found for the gs:// storage root; set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key, run "
            "`gcloud auth application-default login`, or set STORAGE_EMULATOR_HOST "
            "to use an emulator"
        ) from exc


class GcsStore(ArtifactStore):
    """Artifacts as objects in one bucket, below an optional name prefix."""

    def __init__(
        self,
        root: str,
        *,
        client: Client | None = None,
        retry: Retry | None = None,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        from google.cloud.storage.retry import DEFAULT_RETRY

        self.bucket_name, self.prefix = parse_gcs_root(root)
        self.root = f"gs://{self.bucket_name}/{self.prefix}".rstrip("/")
        self.client = client if client is not None else connect_gcs_client()
        self.bucket: Bucket = self.client.bucket(self.bucket_name)
        self.retry = retry if retry is not None else DEFAULT_RETRY
        self.timeout = timeout

    def _name(self, key: str) -> str:
        clean = _clean_key(key)
        return f"{self.prefix}/{clean}" if self.prefix else clean

    def _blob(self, key: str) -> Blob:
        return self.bucket.blob(self._name(key))

    def write_bytes(self, key: str, data: bytes) -> str:
        from google.api_core import exceptions as gexc

        blob = self._blob(key)
        try:
            blob.upload_from_string(
                data,
                content_type="application/octet-stream",
                retry=self.retry,
                timeout=self.timeout,
            )
        except gexc.GoogleAPICallError as exc:
            self._raise_storage_error("write", self.uri(key), exc)
        return self.uri(key)

    def read_bytes(self, key: str) -> bytes:
        data, _ = self._download(key)
        if data is None:
            raise ArtifactNotFound(
                f"no artifact at {self.uri(key)}; check the key, or that the step "
                "that writes it ran against this storage root"
            )
        return data

    def exists(self, key: str) -> bool:
        from google.api_core import exceptions as gexc

        try:
            return bool(self._blob(key).exists(retry=self.retry, timeout=self.timeout))
        except gexc.GoogleAPICallError as exc:
            self._raise_storage_error("check", self.uri(key), exc)

    def list(self, prefix: str = "") -> list[str]:
        from google.api_core import exceptions as gexc

        base = f"{self.prefix}/" if self.prefix else ""
        try:
            names = [
                blob.name
                for blob in self.client.list_blobs(
                    self.bucket,
                    prefix=base + prefix,
                    retry=self.retry,
                    timeout=self.timeout,
                )
            ]
        except gexc.GoogleAPICallError as exc:
            self._raise_storage_error("list", f"{self.root}/{prefix}", exc)
        return sorted(n[len(base) :] for n in names if not n.endswith("/"))

    def delete(self, key: str) -> None:
        from google.api_core import exceptions as gexc

        try:
            self._blob(key).delete(retry=self.retry, timeout=self.timeout)
        except gexc.NotFound:
            if not self._bucket_exists():
                self._raise_missing_bucket(self.uri(key))
        except gexc.GoogleAPICallError as exc:
            self._raise_storage_error("delete", self.uri(key), exc)

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        data, generation = self._download(key)
        if data is None:
            return None, None
        return data, str(generation)

    def write_if_unchanged(self, key: str, data: bytes, token: str | None) -> bool:
        from google.api_core import exceptions as gexc

        expected = _generation_of(token, self.uri(key))
        write_id = uuid.uuid4().hex
        blob = self._blob(key)
        blob.metadata = {WRITE_ID_FIELD: write_id}
        try:
            blob.upload_from_string(
                data,
                content_type="application/octet-stream",
                if_generation_match=expected,
                retry=self.retry,
                timeout=self.timeout,
            )
        except gexc.PreconditionFailed:
            # A retried upload whose first attempt landed also gets 412: the object
            # then carries our write id, and the write did happen.
            if self._written_by(key, write_id):
                log.info("conditional write to %s landed before a retry", self.uri(key))
                return True
            log.info("conditional write to %s refused: version moved", self.uri(key))
            return False
        except gexc.GoogleAPICallError as exc:
            self._raise_storage_error("write", self.uri(key), exc)
        return True

    def _download(self, key: str) -> tuple[bytes | None, int | None]:
        """Bytes and generation read in one request, so the pair is consistent."""
        from google.api_core import exceptions as gexc

        blob = self._blob(key)
        try:
            data = blob.download_as_bytes(retry=self.retry, timeout=self.timeout)
        except gexc.NotFound:
            if not self._bucket_exists():
                self._raise_missing_bucket(self.uri(key))
            return None, None
        except gexc.GoogleAPICallError as exc:
            self._raise_storage_error("read", self.uri(key), exc)
        return data, blob.generation

    def _written_by(self, key: str, write_id: str) -> bool:
        from google.api_core import exceptions as gexc

        try:
            current = self.bucket.get_blob(
                self._name(key), retry=self.retry, timeout=self.timeout
            )
        except gexc.GoogleAPICallError as exc:
            self._raise_storage_error("check", self.uri(key), exc)
        metadata = (current.metadata if current is not None else None) or {}
        return bool(metadata.get(WRITE_ID_FIELD) == write_id)

    def _bucket_exists(self) -> bool:
        from google.api_core import exceptions as gexc

        try:
            return bool(self.bucket.exists(retry=self.retry, timeout=self.timeout))
        except gexc.Forbidden:
            # Object-level roles may not include bucket reads; assume it exists.
            return True

    def _raise_missing_bucket(self, uri: str) -> NoReturn:
        raise StorageError(
            f"bucket gs://{self.bucket_name} does not exist (while accessing "
            f"{uri}); create it (`gcloud storage buckets create "
            f"gs://{self.bucket_name}`) or fix CHURNOPS_STORAGE_ROOT"
        )

    def _raise_storage_error(self, action: str, uri: str, exc: Any) -> NoReturn:
        from google.api_core import exceptions as gexc

        if isinstance(exc, gexc.NotFound):
            self._raise_missing_bucket(uri)
        if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):
            raise StorageError(
                f"permission denied to {action} {uri}: grant the pipeline's service "
                f"account roles/storage.objectAdmin on gs://{self.bucket_name}, or "
                "check GOOGLE_APPLICATION_CREDENTIALS"
            ) from exc
        raise StorageError(
            f"could not {action} {uri}: {exc.code} {exc.message}; transient errors "
            "were already retried, so check the bucket's status and retry the run"
        ) from exc


def _generation_of(token: str | None, uri: str) -> int:
    """The generation a conditional write expects; 0 means "object absent"."""
    if token is None:
        return 0
    try:
        return int(token)
    except ValueError as exc:
        raise StorageError(
            f"version token {token!r} for {uri} is not a GCS generation; pass the "
            "token read_versioned returned from this same store"
        ) from exc


__all__ = ["GcsStore", "connect_gcs_client", "parse_gcs_root"]
