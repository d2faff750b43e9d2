"""Artifact storage under one root URI: a local folder or ``gs://bucket/prefix``.

Steps address artifacts by key (``runs/<run>/snapshot.parquet``), never by path, so the
same code writes to ``var/`` on a laptop and to a bucket in production. Every write
lands whole or not at all, and :meth:`ArtifactStore.write_if_unchanged` is the one
conditional write that registry aliases move with: two runs can never both win.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class StorageError(RuntimeError):
    """An artifact could not be read or written."""


class ArtifactNotFound(StorageError, FileNotFoundError):
    """No artifact under the key asked for."""


def _clean_key(key: str) -> str:
    parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise StorageError(f"artifact key {key!r} must be a relative path without '..'")
    return "/".join(parts)


class ArtifactStore(ABC):
    """Keys to bytes under one root; subclasses differ only in where bytes live."""

    root: str

    def uri(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{_clean_key(key)}"

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> str:
        """Write ``data`` whole under ``key`` and return its URI."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        """The bytes under ``key`` and a token naming that version (None if absent)."""

    @abstractmethod
    def write_if_unchanged(self, key: str, data: bytes, token: str | None) -> bool:
        """Write only if ``key`` still holds the version ``token`` named.

        ``token`` None means "only if absent". Returns False, writing nothing, when
        another writer got there first.
        """

    def write_text(self, key: str, text: str) -> str:
        return self.write_bytes(key, text.encode("utf-8"))

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def write_json(self, key: str, payload: Any) -> str:
        """Indented JSON; values JSON cannot hold (dates, paths) are written as text."""
        return self.write_text(key, json.dumps(payload, indent=2, default=str))

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_text(key))

    def upload(self, key: str, local_path: Path) -> str:
        """Copy a local file (or every file under a folder) to ``key``."""
        if local_path.is_dir():
            for path in sorted(p for p in local_path.rglob("*") if p.is_file()):
                self.write_bytes(
                    f"{key}/{path.relative_to(local_path).as_posix()}",
                    path.read_bytes(),
                )
            return self.uri(key)
        return self.write_bytes(key, local_path.read_bytes())

    def download(self, key: str, local_path: Path) -> Path:
        """Copy ``key`` (or every artifact under it) to a local path."""
        if self.exists(key):
            local_path.parent.mkdir(parents=True, exist_ok=True)
            local_path.write_bytes(self.read_bytes(key))
            return local_path
        members = self.list(key.rstrip("/") + "/")
        if not members:
            raise ArtifactNotFound(f"no artifact at {self.uri(key)}")
        for member in members:
            target = local_path / member[len(key.rstrip("/")) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read_bytes(member))
        return local_path

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A temporary local copy of ``key`` for libraries that only read paths."""
        with tempfile.TemporaryDirectory(prefix="churnops-") as tmp:
            yield self.download(key, Path(tmp) / Path(key).name)


class FileStore(ArtifactStore):
    """Artifacts in a local folder; writes go to a temporary file, then a rename."""

    def __init__(self, root: str | Path) -> None:
        path = Path(str(root).removeprefix("file://")).resolve()
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.root = "file://" + str(path)

    def _path(self, key: str) -> Path:
        return self.path / _clean_key(key)

    def write_bytes(self, key: str, data: bytes) -> str:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return self.uri(key)

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"no artifact at {self.uri(key)}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        keys = []
        for path in self.path.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(self.path).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None, None
        return data, hashlib.sha256(data).hexdigest()

    def write_if_unchanged(self, key: str, data: bytes, token: str | None) -> bool:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        lock_path = target.parent / f".{target.name}.lock"
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                _, current = self.read_versioned(key)
                if current != token:
                    return False
                self.write_bytes(key, data)
                return True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def open_store(root: str, **options: Any) -> ArtifactStore:
    """The store for a root URI: ``file://...``, a plain path, or ``gs://bucket/prefix``."""
    if root.startswith("gs://"):
        from tasks.gcs import GcsStore

        return GcsStore(root, **options)
    if "://" in root and not root.startswith("file://"):
        raise StorageError(
            f"storage root {root!r} has an unsupported scheme; use file://PATH or "
            "gs://BUCKET/PREFIX"
        )
    return FileStore(root)


def copy_tree(source: ArtifactStore, prefix: str, target: ArtifactStore) -> int:
    """Copy every artifact under ``prefix`` between stores; returns the count."""
    count = 0
    for key in source.list(prefix):
        target.write_bytes(key, source.read_bytes(key))
        count += 1
    return count


__all__ = [
    "ArtifactNotFound",
    "ArtifactStore",
    "FileStore",
    "StorageError",
    "copy_tree",
    "open_store",
]
