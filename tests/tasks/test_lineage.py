"""Lineage: spec state from git, data hashes and the package set."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd

from tasks.lineage import hash_frame, installed_packages, read_spec_state


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "config").mkdir(parents=True)
    (repo / "tasks").mkdir()
    (repo / "config" / "model.yaml").write_text("seed: 1\n")
    (repo / "tasks" / "model_spec.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "spec")
    return repo


def test_read_spec_state_clean(tmp_path: Path) -> None:
    """A committed spec reports its commit and no changes."""
    state = read_spec_state(_repo(tmp_path))
    assert state.commit and len(state.commit) == 40
    assert not state.dirty


def test_read_spec_state_dirty(tmp_path: Path) -> None:
    """An edited config and an untracked file are both reported."""
    repo = _repo(tmp_path)
    (repo / "config" / "model.yaml").write_text("seed: 2\n")
    (repo / "config" / "new.yaml").write_text("x: 1\n")
    state = read_spec_state(repo)
    assert state.dirty
    assert set(state.dirty_paths) == {"config/model.yaml", "config/new.yaml"}


def test_read_spec_state_outside_git(tmp_path: Path) -> None:
    """Without a checkout the commit is unknown, not invented."""
    state = read_spec_state(tmp_path)
    assert state.commit is None


def test_hash_frame_changes_with_content() -> None:
    """One changed cell changes the hash; a copy does not."""
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    changed = frame.copy()
    changed.loc[1, "a"] = 3
    assert hash_frame(frame) == hash_frame(frame.copy())
    assert hash_frame(frame) != hash_frame(changed)


def test_installed_packages_lists_tensorflow() -> None:
    """The package set carries the ML stack with versions."""
    assert "numpy" in installed_packages()
