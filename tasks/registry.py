"""Model versions in artifact storage, and the aliases that say which one serves.

A version lives under ``models/<version>/``: the Keras model, the feature transform
(the schema serving must apply), the spec, metrics and lineage, and ``manifest.json``
written last, so a version without a manifest is an unfinished write and is ignored.
Version ids sort by registration time: ``v20261203T154500-1a2b3c4d``.

An alias (``production``, ``staging``, ``canary``) is one small JSON document holding
the version it points at and its whole history. It moves with
:meth:`ArtifactStore.write_if_unchanged`, so two runs moving it at once cannot both
win, and the history can never disagree with the pointer.

Monitoring writes a version's online metrics (at least ``online_auc``) with
:func:`write_online_metrics` to ``models/<version>/online_metrics.json``; the M2 gate
reads them back next to the offline metrics.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.features import FeatureTransform
from tasks.storage import ArtifactNotFound, ArtifactStore

log = logging.getLogger(__name__)

MODELS_PREFIX = "models"
ALIASES_PREFIX = "registry/aliases"
ALIASES = ("production", "staging", "canary")
EXPECTATIONS = "expectations.json"
_VERSION = re.compile(r"^v\d{8}T\d{6}-[0-9a-f]{8}$")


class RegistryError(RuntimeError):
    """A model version or alias cannot be read or written as asked."""


class AliasConflict(RegistryError):
    """Another writer moved the alias first; nothing was written."""


@dataclass(frozen=True)
class ModelVersion:
    """A registered version's stored documents (the model itself loads separately)."""

    version: str
    registered_at: dt.datetime
    spec: dict[str, Any]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    online_metrics: dict[str, Any] | None


def version_key(version: str, name: str = "") -> str:
    return f"{MODELS_PREFIX}/{version}/{name}".rstrip("/")


def new_version_id(moment: dt.datetime, content: bytes) -> str:
    """A time-sortable id: UTC timestamp to the second and a content hash."""
    stamp = moment.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"v{stamp}-{hashlib.sha256(content).hexdigest()[:8]}"


def _check_version(version: str) -> None:
    if not _VERSION.match(version):
        raise RegistryError(
            f"{version!r} is not a model version id; expected vYYYYMMDDTHHMMSS-<8 hex>"
        )


def register_model_version(
    store: ArtifactStore,
    model: Any,
    transform: FeatureTransform,
    *,
    spec: dict[str, Any],
    metrics: dict[str, Any],
    lineage: dict[str, Any],
    clock: Callable[[], dt.datetime],
    expectations: str | None = None,
) -> str:
    """Store a trained model with everything needed to serve and audit it.

    ``expectations`` is the Great Expectations suite (JSON) the training data was
    validated with: it travels with the version, so monitoring holds serving inputs
    to the same schema long after the training run's files are gone.
    """
    with tempfile.TemporaryDirectory(prefix="churnops-register-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        model_bytes = path.read_bytes()
    moment = clock()
    weights = b"".join(np.asarray(w).tobytes() for w in model.get_weights())
    version = new_version_id(moment, weights + transform.to_json().encode("utf-8"))
    if store.exists(version_key(version, "manifest.json")):
        raise RegistryError(f"model version {version} is already registered")

    documents = {
        "transform.json": transform.to_json(),
        "spec.json": json.dumps(spec, indent=2, default=str),
        "metrics.json": json.dumps(metrics, indent=2, default=str),
        "lineage.json": json.dumps(lineage, indent=2, default=str),
    }
    if expectations is not None:
        documents[EXPECTATIONS] = expectations
    store.write_bytes(version_key(version, "model.keras"), model_bytes)
    for name, text in documents.items():
        store.write_text(version_key(version, name), text)
    manifest = {
        "version": version,
        "registered_at": moment.astimezone(dt.UTC).isoformat(),
        "files": ["model.keras", *documents],
    }
    store.write_text(version_key(version, "manifest.json"), json.dumps(manifest))
    log.info(
        "Registered model version %s at %s", version, store.uri(version_key(version))
    )
    return version


def list_versions(store: ArtifactStore) -> list[str]:
    """Completely written versions, oldest first."""
    found = {
        key.split("/")[1]
        for key in store.list(MODELS_PREFIX + "/")
        if key.endswith("/manifest.json") and key.count("/") == 2
    }
    return sorted(v for v in found if _VERSION.match(v))


def _read_json(store: ArtifactStore, key: str) -> Any:
    try:
        return json.loads(store.read_text(key))
    except ArtifactNotFound as exc:
        raise RegistryError(f"model registry has no {store.uri(key)}") from exc


def get_version(store: ArtifactStore, version: str) -> ModelVersion:
    _check_version(version)
    manifest = _read_json(store, version_key(version, "manifest.json"))
    online_key = version_key(version, "online_metrics.json")
    return ModelVersion(
        version=version,
        registered_at=dt.datetime.fromisoformat(manifest["registered_at"]),
        spec=_read_json(store, version_key(version, "spec.json")),
        metrics=_read_json(store, version_key(version, "metrics.json")),
        lineage=_read_json(store, version_key(version, "lineage.json")),
        online_metrics=_read_json(store, online_key)
        if store.exists(online_key)
        else None,
    )


def write_online_metrics(
    store: ArtifactStore, version: str, metrics: dict[str, Any]
) -> str:
    """Record a version's metrics on served traffic (at least ``online_auc``)."""
    _check_version(version)
    if "online_auc" not in metrics:
        raise RegistryError(
            f"online metrics for {version} need 'online_auc'; got {sorted(metrics)}"
        )
    return store.write_text(
        version_key(version, "online_metrics.json"), json.dumps(metrics, default=str)
    )


@dataclass
class LoadedModel:
    """A version ready to predict: the Keras model and its feature transform."""

    version: str
    model: Any
    transform: FeatureTransform

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Churn probabilities for pseudonymized customer rows."""
        from tasks.train import predict_probabilities

        return predict_probabilities(self.model, self.transform.transform(frame))


def load_model_version(store: ArtifactStore, version: str) -> LoadedModel:
    """Load a registered version for prediction (serving, gates, monitoring)."""
    from tasks.model_spec import prepare_keras

    _check_version(version)
    keras = prepare_keras()
    if not store.exists(version_key(version, "manifest.json")):
        raise RegistryError(
            f"model version {version} is not registered in {store.uri(MODELS_PREFIX)}; "
            f"known versions: {list_versions(store)[-5:]}"
        )
    transform = FeatureTransform.from_json(
        store.read_text(version_key(version, "transform.json"))
    )
    with store.local_copy(version_key(version, "model.keras")) as path:
        model = keras.models.load_model(path, compile=False)
    return LoadedModel(version=version, model=model, transform=transform)


def load_predictor(
    store: ArtifactStore, version: str
) -> Callable[[pd.DataFrame], np.ndarray]:
    """A function from customer rows to churn probabilities for one version."""
    return load_model_version(store, version).predict


# Aliases -----------------------------------------------------------------------


def _alias_key(alias: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,39}", alias):
        raise RegistryError(
            f"alias {alias!r} must be lower-case letters, digits, '-' or '_' "
            f"(e.g. {', '.join(ALIASES)})"
        )
    return f"{ALIASES_PREFIX}/{alias}.json"


def _read_alias(
    store: ArtifactStore, alias: str
) -> tuple[dict[str, Any] | None, str | None]:
    data, token = store.read_versioned(_alias_key(alias))
    return (json.loads(data) if data is not None else None), token


def resolve_alias(store: ArtifactStore, alias: str) -> str | None:
    """The version an alias points at, or None when it was never set."""
    document, _ = _read_alias(store, alias)
    return document["version"] if document else None


def alias_history(store: ArtifactStore, alias: str) -> list[dict[str, Any]]:
    """Every move of an alias, oldest first: version, previous, who, why, when."""
    document, _ = _read_alias(store, alias)
    return list(document["history"]) if document else []


def move_alias(
    store: ArtifactStore,
    alias: str,
    version: str,
    *,
    actor: str,
    reason: str,
    clock: Callable[[], dt.datetime],
    expected: object = ...,
) -> dict[str, Any]:
    """Point ``alias`` at ``version`` atomically and append the move to its history.

    ``expected`` (a version, or None for "not set yet") refuses the move unless the
    alias still points there. Raises :class:`AliasConflict` when another writer moved
    the alias between our read and our write.
    """
    if not actor.strip() or not reason.strip():
        raise RegistryError(f"moving alias {alias!r} needs an actor and a reason")
    if version not in list_versions(store):
        raise RegistryError(
            f"cannot point {alias!r} at {version}: no such registered version"
        )
    document, token = _read_alias(store, alias)
    current = document["version"] if document else None
    if expected is not ... and expected != current:
        raise AliasConflict(
            f"alias {alias!r} points at {current}, not {expected} as the caller "
            "expected; re-read it and decide again"
        )
    move = {
        "version": version,
        "previous": current,
        "actor": actor,
        "reason": reason,
        "at": clock().astimezone(dt.UTC).isoformat(),
    }
    history = [*(document["history"] if document else []), move]
    new_document = {"alias": alias, **move, "history": history}
    written = store.write_if_unchanged(
        _alias_key(alias), json.dumps(new_document, indent=2).encode("utf-8"), token
    )
    if not written:
        raise AliasConflict(
            f"alias {alias!r} was moved by another writer while moving it to "
            f"{version}; nothing was written"
        )
    log.info("Alias %s: %s -> %s by %s (%s)", alias, current, version, actor, reason)
    return move


def clear_alias(
    store: ArtifactStore,
    alias: str,
    *,
    actor: str,
    reason: str,
    clock: Callable[[], dt.datetime],
    attempts: int = 5,
) -> str | None:
    """Unset an alias atomically, keeping its history; returns what it pointed at.

    Retries when another writer moves the alias in between, up to ``attempts``
    times, then raises :class:`AliasConflict`.
    """
    if not actor.strip() or not reason.strip():
        raise RegistryError(f"clearing alias {alias!r} needs an actor and a reason")
    for _ in range(attempts):
        document, token = _read_alias(store, alias)
        current = document["version"] if document else None
        if current is None:
            return None
        move = {
            "version": None,
            "previous": current,
            "actor": actor,
            "reason": reason,
            "at": clock().astimezone(dt.UTC).isoformat(),
        }
        history = [*(document["history"] if document else []), move]
        new_document = {"alias": alias, **move, "history": history}
        payload = json.dumps(new_document, indent=2).encode("utf-8")
        if store.write_if_unchanged(_alias_key(alias), payload, token):
            log.info(
                "Alias %s cleared (was %s) by %s: %s", alias, current, actor, reason
            )
            return str(current)
    raise AliasConflict(f"alias {alias!r} kept moving while clearing it; try again")
