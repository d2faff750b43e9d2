"""What one pipeline run carries from step to step, without knowing about Airflow.

A DAG task builds a :class:`RunContext` from its Airflow context and hands it to a
step function; tests build one directly with a temporary store and database. Steps
pass each other small JSON-able dicts (artifact keys, hashes, counts), never frames,
so they fit in XCom and a retried task finds its inputs in storage.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from gates.result import GateResult
from gates.store import ScoreStore
from tasks.config import (
    ConfigError,
    DatasetConfig,
    ModelConfig,
    Settings,
    load_dataset,
)
from tasks.storage import ArtifactStore, open_store


def _safe_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "run"


@dataclass
class RunContext:
    """One run of a churnops DAG: its identity, settings, stores and Params."""

    settings: Settings
    dag_id: str
    run_id: str
    params: dict[str, Any] = field(default_factory=dict)
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    store_override: ArtifactStore | None = None
    scores_override: ScoreStore | None = None
    model_config_override: ModelConfig | None = None

    @cached_property
    def store(self) -> ArtifactStore:
        return self.store_override or open_store(self.settings.storage_root)

    @cached_property
    def scores(self) -> ScoreStore:
        return self.scores_override or ScoreStore.open(self.settings.score_store_url)

    @cached_property
    def dataset(self) -> DatasetConfig:
        override = self.params.get("dataset")
        return load_dataset(override) if override else self.settings.dataset()

    @cached_property
    def model_config(self) -> ModelConfig:
        return self.model_config_override or self.settings.model()

    @property
    def run_key(self) -> str:
        """Storage prefix of everything this run writes: ``runs/<dag>/<run id>``."""
        return f"runs/{_safe_key(self.dag_id)}/{_safe_key(self.run_id)}"

    def key(self, *parts: str) -> str:
        return "/".join([self.run_key, *parts])

    def record(self, result: GateResult) -> GateResult:
        """Write a gate result to the score store under this run and return it."""
        self.scores.record(self.dag_id, self.run_id, result)
        return result

    def gate_setting(self, section: str, name: str) -> Any:
        """One threshold from ``gates.<section>`` of the settings, or a clear error."""
        values = self.settings.gate_settings(section)
        if name not in values:
            raise ConfigError(
                f"gates.{section}.{name} is not set in the settings file; add it (see "
                "config/churnops.yaml for the default)"
            )
        return values[name]

    def stop_if_blocking(self, section: str, result: GateResult) -> GateResult:
        """Raise GateFailed for a failed test listed in ``gates.<section>``'s
        ``blocking_tests``; other results, and other tests, let the run go on."""
        blocking = self.settings.gate_settings(section).get("blocking_tests", [])
        if result.test_id in blocking:
            result.raise_if_failed()
        return result
