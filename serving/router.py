"""Which model serves a customer: production, or the canary for a stable share.

The router holds one loaded model per alias and re-reads the aliases on demand. A
version that fails to load never replaces the one serving: the old model keeps
answering and the failure is kept for ``/health`` until a reload succeeds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from tasks.registry import resolve_alias
from tasks.storage import ArtifactStore

log = logging.getLogger(__name__)

PRODUCTION = "production"
CANARY = "canary"
# Versions kept loaded after they stop serving, so a rollback does not reload them.
CACHED_VERSIONS = 4


class ServedModel(Protocol):
    """A loaded version: churn probabilities for pseudonymized customer rows."""

    version: str

    def predict(self, frame: pd.DataFrame) -> np.ndarray: ...


ModelLoader = Callable[[ArtifactStore, str], ServedModel]
AliasResolver = Callable[[ArtifactStore, str], "str | None"]


@dataclass
class KerasServedModel:
    """A registered version served with one eager Keras call per request.

    ``LoadedModel.predict`` goes through ``model.predict``, which costs tens of
    milliseconds per call; a direct call gives the same numbers (staging checks it)
    at a fraction of the latency.
    """

    version: str
    model: Any
    transform: Any

    _last_features: threading.local = field(
        default_factory=threading.local, repr=False, compare=False
    )

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        features = self.transform.transform(frame)
        self._last_features.matrix = features
        if len(features) == 0:
            return np.zeros(0)
        output = self.model(features, training=False)
        return np.asarray(output, dtype=np.float64).reshape(-1)

    def take_last_features(self) -> np.ndarray | None:
        """The feature matrix this thread's last ``predict`` fed the model, once.

        The service logs a hash of it for the skew check (Mo3) without transforming
        the rows a second time; a thread-local keeps concurrent requests apart.
        """
        matrix: np.ndarray | None = getattr(self._last_features, "matrix", None)
        self._last_features.matrix = None
        return matrix


def load_served_model(store: ArtifactStore, version: str) -> ServedModel:
    """Load a registered version through the registry's own loader."""
    from tasks.registry import load_model_version

    loaded = load_model_version(store, version)
    return KerasServedModel(loaded.version, loaded.model, loaded.transform)


def canary_position(customer_id: str) -> float:
    """A customer's fixed place in [0, 1): below the canary share means canary."""
    digest = hashlib.sha256(customer_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class AliasState:
    """What one alias serves now, and the last version that failed to load."""

    version: str | None = None
    loaded_at: str | None = None
    failed_version: str | None = None
    error: str | None = None

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class ModelRouter:
    """Production and canary models for one service, re-read from the registry.

    ``primary_alias`` is ``production`` in the service and ``staging`` when the
    release path loads a candidate; ``resolve`` and ``load`` are the registry's by
    default and are passed in by the staging check and by tests.
    """

    store: ArtifactStore
    canary_share: float
    primary_alias: str = PRODUCTION
    canary_alias: str | None = CANARY
    resolve: AliasResolver = resolve_alias
    load: ModelLoader = load_served_model
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    _models: dict[str, ServedModel] = field(default_factory=dict)
    _states: dict[str, AliasState] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    last_reload: str | None = None

    @property
    def aliases(self) -> list[str]:
        return [a for a in (self.primary_alias, self.canary_alias) if a]

    def reload(self) -> dict[str, Any]:
        """Re-read every alias and load versions that changed; never raises."""
        with self._lock:
            started = time.monotonic()
            for alias in self.aliases:
                self._reload_alias(alias)
            self._forget_unused()
            self.last_reload = self.clock().astimezone(dt.UTC).isoformat()
            log.debug("Reloaded aliases in %.3f s", time.monotonic() - started)
        return self.describe()

    def _reload_alias(self, alias: str) -> None:
        state = self._states.setdefault(alias, AliasState())
        try:
            target = self.resolve(self.store, alias)
        except Exception as exc:  # storage may be briefly unreachable
            state.error = f"cannot read alias {alias!r}: {exc}"
            log.warning(
                "Cannot read alias %s (%s); still serving %s. Check the storage "
                "root, then POST /reload",
                alias,
                exc,
                state.version,
            )
            return
        if target == state.version:
            state.failed_version, state.error = None, None
            return
        if target is None:
            log.info("Alias %s cleared; it no longer serves %s", alias, state.version)
            self._states[alias] = AliasState()
            return
        if target not in self._models:
            try:
                self._models[target] = self.load(self.store, target)
            except Exception as exc:
                state.failed_version = target
                state.error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "Could not load version %s for alias %s (%s); still serving %s. "
                    "Fix or re-register the version, or move the alias back (the "
                    "churn_rollback DAG), then POST /reload",
                    target,
                    alias,
                    state.error,
                    state.version,
                )
                return
        log.info("Alias %s now serves %s (was %s)", alias, target, state.version)
        self._states[alias] = AliasState(
            version=target, loaded_at=self.clock().astimezone(dt.UTC).isoformat()
        )

    def _forget_unused(self) -> None:
        serving = {s.version for s in self._states.values() if s.version}
        idle = [v for v in self._models if v not in serving]
        for version in idle[: max(0, len(idle) - CACHED_VERSIONS)]:
            del self._models[version]

    def model_for(self, alias: str) -> ServedModel | None:
        version = self._states.get(alias, AliasState()).version
        return self._models.get(version) if version else None

    def serving_models(self) -> dict[str, ServedModel]:
        """The models serving now, taken once so a request sees one consistent set."""
        models = {alias: self.model_for(alias) for alias in self.aliases}
        return {alias: model for alias, model in models.items() if model is not None}

    def route(
        self, customer_id: str, models: dict[str, ServedModel] | None = None
    ) -> str | None:
        """The alias that serves this customer, or None when nothing is loaded."""
        models = self.serving_models() if models is None else models
        primary = models.get(self.primary_alias)
        canary = models.get(self.canary_alias) if self.canary_alias else None
        if canary is not None and (
            primary is None or canary_position(customer_id) < self.canary_share
        ):
            return self.canary_alias
        return self.primary_alias if primary is not None else None

    @property
    def ready(self) -> bool:
        """True when some model answers (the canary alone, on a first release)."""
        return any(self.model_for(alias) is not None for alias in self.aliases)

    def describe(self) -> dict[str, Any]:
        return {
            "aliases": {
                alias: self._states.get(alias, AliasState()).describe()
                for alias in self.aliases
            },
            "canary_share": self.canary_share,
            "last_reload": self.last_reload,
        }
