"""Settings and dataset configs: defaults, environment overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.config import ConfigError, load_dataset, load_settings, parse_model


def test_load_settings_defaults_point_into_var() -> None:
    """Without environment, artifacts and scores live under the project's var/."""
    settings = load_settings(environ={})
    assert settings.storage_root.startswith("file://")
    assert settings.storage_root.endswith("/var/artifacts")
    assert settings.score_store_url.endswith("/var/scores.db")
    assert settings.gate_settings("model")["min_auc"] > 0


def test_load_settings_environment_wins(tmp_path: Path) -> None:
    """CHURNOPS_* variables override the committed file."""
    settings = load_settings(
        environ={
            "CHURNOPS_STORAGE_ROOT": "gs://bucket/churn",
            "CHURNOPS_SCORE_DB_URL": "postgresql://db/scores",
            "CHURNOPS_DATASET": "config/datasets/telco.yaml",
        }
    )
    assert settings.storage_root == "gs://bucket/churn"
    assert settings.score_store_url == "postgresql://db/scores"
    assert settings.dataset().name == "ibm_telco"


@pytest.mark.parametrize("name", ["synthetic.yaml", "telco.yaml"])
def test_committed_datasets_load(name: str) -> None:
    """Both committed datasets parse and use only registered features."""
    dataset = load_dataset(f"config/datasets/{name}")
    assert set(dataset.model_inputs) <= set(dataset.features)
    assert dataset.contract.label.positive == "Yes"


def _write_dataset(tmp_path: Path, **changes: object) -> Path:
    data = yaml.safe_load(Path("config/datasets/telco.yaml").read_text())
    data.update(changes)
    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_load_dataset_slice_on_undeclared_column_is_refused(tmp_path: Path) -> None:
    """A slice must name a contract column, and the error says which one."""
    path = _write_dataset(tmp_path, slices=[{"column": "region"}])
    with pytest.raises(ConfigError, match="'region' is used but not declared"):
        load_dataset(path)


def test_load_dataset_missing_file_names_the_path(tmp_path: Path) -> None:
    """A missing config file is reported with its path."""
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml"):
        load_dataset(tmp_path / "nope.yaml")


def test_parse_model_hyperparameter_without_range_is_refused() -> None:
    """Every hyperparameter needs a range to be tuned over."""
    with pytest.raises(ConfigError, match="hyperparameter 'dropout' has no range"):
        parse_model({"seed": 1, "hyperparameters": {"dropout": 0.2}})
