"""Settings and dataset contracts, read from the committed YAML under ``config/``.

Everything a step or a gate needs arrives through these objects, so a churn table
with other columns is supported by writing a dataset file, not by changing code.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "config"
DEFAULT_SETTINGS_FILE = CONFIG_DIR / "churnops.yaml"

COLUMN_TYPES = ("string", "integer", "float", "category", "date", "boolean")
FEATURE_KINDS = ("numeric", "categorical")
FEATURE_STATUSES = ("active", "experimental", "deprecated", "forbidden")


class ConfigError(ValueError):
    """A config file is missing, malformed or contradicts itself."""


def _require(mapping: dict[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise ConfigError(f"{where}: missing required key {key!r}")
    return mapping[key]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def resolve_path(value: str | Path, base: Path = PROJECT_ROOT) -> Path:
    """Return ``value`` as an absolute path, relative ones taken from ``base``."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


@dataclass(frozen=True)
class ColumnSpec:
    """One column of the data contract."""

    name: str
    type: str
    values: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = False


@dataclass(frozen=True)
class LabelSpec:
    column: str
    positive: str
    classes: tuple[str, ...]


@dataclass(frozen=True)
class DataContract:
    """What a source table must look like before anything downstream may read it."""

    id_column: str
    label: LabelSpec
    columns: dict[str, ColumnSpec]
    event_date: str | None = None
    direct_identifiers: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeatureSpec:
    """One entry of the feature registry."""

    name: str
    kind: str
    owner: str
    source: str
    status: str
    cost: float = 1.0
    pii: bool = False
    protected: bool = False
    declared: dt.date | None = None


@dataclass(frozen=True)
class SliceSpec:
    """A column to slice on; numeric columns are cut into named half-open bands."""

    column: str
    bands: dict[str, tuple[float, float]] | None = None


@dataclass(frozen=True)
class DatasetConfig:
    """A churn table: where it comes from, its contract and what the model reads."""

    name: str
    source: str
    contract: DataContract
    features: dict[str, FeatureSpec]
    model_inputs: tuple[str, ...]
    slices: tuple[SliceSpec, ...] = ()
    protected_attributes: tuple[str, ...] = ()
    path: Path | None = None

    def input_specs(self) -> list[FeatureSpec]:
        """The registry entries of the model inputs, in input order."""
        return [self.features[name] for name in self.model_inputs]


def _parse_column(name: str, raw: dict[str, Any], where: str) -> ColumnSpec:
    col_type = _require(raw, "type", f"{where}: column {name!r}")
    if col_type not in COLUMN_TYPES:
        raise ConfigError(
            f"{where}: column {name!r} has type {col_type!r}; "
            f"expected one of {', '.join(COLUMN_TYPES)}"
        )
    values = raw.get("values")
    return ColumnSpec(
        name=name,
        type=col_type,
        values=tuple(values) if values is not None else None,
        min=raw.get("min"),
        max=raw.get("max"),
        nullable=bool(raw.get("nullable", False)),
    )


def _parse_feature(name: str, raw: dict[str, Any], where: str) -> FeatureSpec:
    kind = _require(raw, "kind", f"{where}: feature {name!r}")
    status = raw.get("status", "active")
    if kind not in FEATURE_KINDS:
        raise ConfigError(
            f"{where}: feature {name!r} has kind {kind!r}; "
            f"expected one of {', '.join(FEATURE_KINDS)}"
        )
    if status not in FEATURE_STATUSES:
        raise ConfigError(
            f"{where}: feature {name!r} has status {status!r}; "
            f"expected one of {', '.join(FEATURE_STATUSES)}"
        )
    declared = raw.get("declared")
    if isinstance(declared, str):
        declared = dt.date.fromisoformat(declared)
    return FeatureSpec(
        name=name,
        kind=kind,
        owner=str(_require(raw, "owner", f"{where}: feature {name!r}")),
        source=str(_require(raw, "source", f"{where}: feature {name!r}")),
        status=status,
        cost=float(raw.get("cost", 1.0)),
        pii=bool(raw.get("pii", False)),
        protected=bool(raw.get("protected", False)),
        declared=declared,
    )


def parse_dataset(data: dict[str, Any], where: str = "dataset") -> DatasetConfig:
    """Build a :class:`DatasetConfig` from a mapping, checking it hangs together."""
    raw_contract = _require(data, "contract", where)
    raw_label = _require(raw_contract, "label", f"{where}: contract")
    columns = {
        name: _parse_column(name, raw or {}, where)
        for name, raw in _require(raw_contract, "columns", f"{where}: contract").items()
    }
    contract = DataContract(
        id_column=_require(raw_contract, "id_column", f"{where}: contract"),
        label=LabelSpec(
            column=_require(raw_label, "column", f"{where}: label"),
            positive=str(_require(raw_label, "positive", f"{where}: label")),
            classes=tuple(str(c) for c in _require(raw_label, "classes", where)),
        ),
        columns=columns,
        event_date=raw_contract.get("event_date"),
        direct_identifiers=tuple(raw_contract.get("direct_identifiers") or ()),
    )
    features = {
        name: _parse_feature(name, raw or {}, where)
        for name, raw in (data.get("features") or {}).items()
    }
    slices = tuple(
        SliceSpec(
            column=_require(raw, "column", f"{where}: slice"),
            bands={k: (float(v[0]), float(v[1])) for k, v in raw["bands"].items()}
            if raw.get("bands")
            else None,
        )
        for raw in data.get("slices") or ()
    )
    dataset = DatasetConfig(
        name=str(_require(data, "name", where)),
        source=str(_require(data, "source", where)),
        contract=contract,
        features=features,
        model_inputs=tuple(_require(data, "model_inputs", where)),
        slices=slices,
        protected_attributes=tuple(data.get("protected_attributes") or ()),
    )
    _check_dataset(dataset, where)
    return dataset


def _check_dataset(dataset: DatasetConfig, where: str) -> None:
    contract = dataset.contract
    named = [contract.id_column, contract.label.column]
    if contract.event_date:
        named.append(contract.event_date)
    named += [s.column for s in dataset.slices]
    named += list(dataset.protected_attributes)
    for column in named:
        if column not in contract.columns:
            raise ConfigError(
                f"{where}: {column!r} is used but not declared under contract.columns; "
                "declare it with its type"
            )
    if contract.label.positive not in contract.label.classes:
        raise ConfigError(
            f"{where}: label positive class {contract.label.positive!r} is not one of "
            f"the declared classes {list(contract.label.classes)}"
        )
    for name in dataset.features:
        if name not in contract.columns:
            raise ConfigError(
                f"{where}: feature {name!r} is registered but the contract has no such "
                "column; add it under contract.columns"
            )


def load_dataset(path: str | Path) -> DatasetConfig:
    """Read a dataset file such as ``config/datasets/telco.yaml``."""
    resolved = resolve_path(path)
    dataset = parse_dataset(_read_yaml(resolved), where=str(resolved))
    return DatasetConfig(**{**dataset.__dict__, "path": resolved})


@dataclass(frozen=True)
class HyperparameterSpec:
    """The range one hyperparameter is searched over."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    values: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class ModelConfig:
    """The model spec's settings: seed, splits, search budget and the search space."""

    seed: int
    validation_share: float
    holdout_share: float
    hyperparameters: dict[str, HyperparameterSpec]
    search: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def parse_model(data: dict[str, Any], where: str = "model") -> ModelConfig:
    space: dict[str, HyperparameterSpec] = {}
    for name, raw in (_require(data, "hyperparameters", where) or {}).items():
        if not isinstance(raw, dict) or "type" not in raw:
            raise ConfigError(
                f"{where}: hyperparameter {name!r} has no range; give it "
                "{type: int|float, low, high} or {type: choice, values: [...]}"
            )
        spec = HyperparameterSpec(
            name=name,
            type=raw["type"],
            low=raw.get("low"),
            high=raw.get("high"),
            log=bool(raw.get("log", False)),
            values=tuple(raw["values"]) if raw.get("values") is not None else None,
        )
        space[name] = spec
    return ModelConfig(
        seed=int(_require(data, "seed", where)),
        validation_share=float(data.get("validation_share", 0.2)),
        holdout_share=float(data.get("holdout_share", 0.2)),
        hyperparameters=space,
        search=dict(data.get("search") or {}),
        training=dict(data.get("training") or {}),
    )


def load_model_config(path: str | Path) -> ModelConfig:
    resolved = resolve_path(path)
    model = parse_model(_read_yaml(resolved), where=str(resolved))
    return ModelConfig(**{**model.__dict__, "path": resolved})


@dataclass(frozen=True)
class Settings:
    """Where things live and how strict the gates are, for one installation."""

    storage_root: str
    score_store_url: str
    dataset_path: Path
    model_path: Path
    gates: dict[str, dict[str, Any]]

    def gate_settings(self, section: str) -> dict[str, Any]:
        return dict(self.gates.get(section, {}))

    def dataset(self) -> DatasetConfig:
        return load_dataset(self.dataset_path)

    def model(self) -> ModelConfig:
        return load_model_config(self.model_path)


def _storage_uri(value: str) -> str:
    if "://" in value:
        return value
    return "file://" + str(resolve_path(value))


def _db_url(value: str) -> str:
    # A relative SQLite path is taken from the project folder, like every other path.
    prefix = "sqlite:///"
    if value.startswith(prefix) and not value.startswith(prefix + "/"):
        path = resolve_path(value[len(prefix) :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return value


def load_settings(
    path: str | Path | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Read ``config/churnops.yaml``; ``CHURNOPS_*`` environment variables win."""
    env = os.environ if environ is None else environ
    settings_path = resolve_path(
        path or env.get("CHURNOPS_SETTINGS") or DEFAULT_SETTINGS_FILE
    )
    data = _read_yaml(settings_path)
    return Settings(
        storage_root=_storage_uri(
            env.get("CHURNOPS_STORAGE_ROOT")
            or data.get("storage_root", "var/artifacts")
        ),
        score_store_url=_db_url(
            env.get("CHURNOPS_SCORE_DB_URL")
            or data.get("score_store_url", "sqlite:///var/scores.db")
        ),
        dataset_path=resolve_path(env.get("CHURNOPS_DATASET") or data["dataset"]),
        model_path=resolve_path(env.get("CHURNOPS_MODEL") or data["model"]),
        gates={k: dict(v or {}) for k, v in (data.get("gates") or {}).items()},
    )
