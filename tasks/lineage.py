"""Where a model came from: data hash, code commit, spec state, seeds and packages."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.config import PROJECT_ROOT

log = logging.getLogger(__name__)

# The files that make up the model spec (M1): code and every config it reads.
SPEC_PATHS = ("tasks/model_spec.py", "config")


class LineageError(RuntimeError):
    """The lineage of a model cannot be established."""


@dataclass(frozen=True)
class SpecState:
    """The commit the model spec was taken from and whether it had local changes."""

    commit: str | None
    dirty: bool
    dirty_paths: tuple[str, ...]
    repository: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _git(repo: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if completed.returncode != 0:
        raise LineageError(
            f"git {' '.join(args)} failed in {repo}: {completed.stderr.strip()}"
        )
    return completed.stdout


def read_spec_state(
    repo: Path = PROJECT_ROOT, paths: tuple[str, ...] = SPEC_PATHS
) -> SpecState:
    """HEAD and the uncommitted changes (untracked files too) under ``paths``.

    Outside a git checkout (an installed wheel, a container without ``.git``) the
    commit is unknown: the state says so rather than guessing.
    """
    try:
        commit = _git(repo, "rev-parse", "HEAD").strip()
        status = _git(
            repo, "status", "--porcelain", "--untracked-files=all", "--", *paths
        )
    except (LineageError, FileNotFoundError, subprocess.TimeoutExpired) as exc:
        log.info("No git lineage for %s: %s", repo, exc)
        return SpecState(commit=None, dirty=False, dirty_paths=(), repository=None)
    dirty = tuple(line[3:] for line in status.splitlines() if line.strip())
    return SpecState(
        commit=commit, dirty=bool(dirty), dirty_paths=dirty, repository=str(repo)
    )


def hash_frame(frame: pd.DataFrame) -> str:
    """A content hash of rows and column names, independent of the process."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(map(str, frame.columns)).encode("utf-8"))
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest.update(row_hashes.tobytes())
    return digest.hexdigest()


def hash_frames(frames: dict[str, pd.DataFrame]) -> str:
    """One hash over named frames (train, validation, holdout), order-independent."""
    digest = hashlib.sha256()
    for name in sorted(frames):
        digest.update(f"{name}={hash_frame(frames[name])};".encode())
    return digest.hexdigest()


def installed_packages() -> dict[str, str]:
    """Every installed distribution and its version, sorted by name."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[name.lower()] = dist.version
    return dict(sorted(found.items()))


def build_lineage(
    *,
    data_hash: str,
    spec_state: SpecState,
    seed: int,
    dataset: str,
    run: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The lineage record stored with a model version."""
    return {
        "data_hash": data_hash,
        "commit": spec_state.commit,
        "dirty": spec_state.dirty,
        "dirty_paths": list(spec_state.dirty_paths),
        "seeds": {"global": seed},
        "dataset": dataset,
        "run": run,
        "packages": installed_packages(),
        **(extra or {}),
    }
