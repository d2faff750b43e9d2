"""The training steps with a bucket as the artifact root, through the real client.

Production keeps artifacts in GCS; this runs the data path, training, registration
and the promotion alias against the fake-gcs-server emulator, so nothing in the
steps assumes a local folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tasks import data_steps, model_steps
from tasks.config import load_settings
from tasks.context import RunContext
from tasks.gcs import GcsStore
from tasks.registry import list_versions, move_alias, resolve_alias

pytestmark = pytest.mark.gcs

KEY = b"a-test-key-that-is-long-enough"
TINY_SEARCH = {"trials": 2, "epochs_per_trial": 1, "parallel_trials": 1}


def test_training_steps_run_with_artifacts_in_a_bucket(
    tmp_path: Path, gcs_store: GcsStore
) -> None:
    """Snapshots, splits, the model version and its alias all land in the bucket."""
    settings = load_settings(
        environ={"CHURNOPS_SCORE_DB_URL": f"sqlite:///{tmp_path / 'scores.db'}"}
    )
    model_config = settings.model()
    ctx = RunContext(
        settings=settings,
        dag_id="churn_training",
        run_id="gcs_run",
        params={"source": "synthetic://1500?seed=9", "allow_dirty_spec": True},
        store_override=gcs_store,
        model_config_override=dataclasses.replace(
            model_config,
            search={**model_config.search, **TINY_SEARCH},
            training={**model_config.training, "max_epochs": 2},
        ),
    )

    ingested = data_steps.ingest_customers_step(ctx)
    pseudonymized = data_steps.pseudonymize_customers_step(ctx, ingested, key=KEY)
    validated = data_steps.validate_customers_step(ctx, pseudonymized)
    features = data_steps.build_features_step(ctx, validated)
    model_steps.tune_model_step(ctx, features)
    model_steps.train_model_step(ctx, features)
    version = model_steps.register_model_step(ctx, features)["model_version"]
    move_alias(
        gcs_store,
        "production",
        version,
        actor="test",
        reason="first release",
        clock=ctx.clock,
        expected=None,
    )

    assert gcs_store.root.startswith("gs://")
    assert gcs_store.exists(features["train"])
    assert list_versions(gcs_store) == [version]
    assert resolve_alias(gcs_store, "production") == version
    assert {r.test_id for r in ctx.scores.results(run_id="gcs_run")} >= {
        "D1",
        "D4",
        "D7",
        "M3",
    }
