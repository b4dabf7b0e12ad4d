"""`cagerisk register` on a real MLflow SQLite store: the model card and the gate's decisions."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from serving_helpers import compose_serving_config, write_feature_pipeline

from cagerisk.stages.register import run_register_stage
from cagerisk.tracking.gate import validation_patients_sha256


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("registry-card")
    write_feature_pipeline(tmp / "data")
    cfg = compose_serving_config(tmp)
    return tmp, cfg, run_register_stage(cfg)


def test_card_is_the_version_description(store):
    tmp, cfg, first = store
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    version = client.get_model_version("cage-subsidence", first.version)
    card = version.description
    manifest = pd.read_csv(tmp / "data" / "cohort" / "manifest.csv")
    val = manifest[manifest["split"] == "val"]
    # Cohort size and split, the AUC with its CI, threshold rule, data hash, intended use, limits.
    assert f"{len(manifest)} patients" in card and f"| val | {len(val)} | {int(val['cs'].sum())} |" in card
    assert f"{first.val_auc:.3f} (95% CI" in card and "Youden" in card
    assert first.training_data_sha256 in card and "Intended use" in card and "Known limits" in card
    # Linked to its run and its logged model.
    run = client.get_run(first.run_id)
    assert f"#/experiments/{run.info.experiment_id}/runs/{first.run_id}" in card
    assert version.run_id == first.run_id and "#/experiments/" in card and "/models/m-" in card
    # The same card is an artifact of the run; the version records its validation patients.
    logged = Path(
        mlflow.artifacts.download_artifacts(run_id=first.run_id, artifact_path="model_card.md", tracking_uri=cfg.tracking.uri)
    )
    assert logged.read_text() == card
    assert version.tags["val_patients_sha256"] == validation_patients_sha256(val["patient_id"].astype(str), val["cs"])


def test_retrained_twin_stays_challenger_then_other_patients_are_not_compared(store):
    tmp, cfg, first = store
    # The same pipeline registered again: identical validation rankings, no evidence it is better.
    twin = run_register_stage(cfg)
    assert twin.alias == "challenger" and twin.champion_version == first.version
    assert twin.gate["rule"] == "superiority" and twin.gate["p_value"] == pytest.approx(0.5)
    assert "not significantly higher" in twin.reason and twin.delong_p is not None
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    tags = client.get_model_version("cage-subsidence", twin.version).tags
    assert tags["gate_rule"] == "superiority" and float(tags["gate_p_one_sided"]) == pytest.approx(0.5)

    # A re-split: one validation patient moves to training. The champion's validation AUC on today's
    # validation patients would be on other patients than it was gated on: no comparison, no promotion.
    manifest_path = tmp / "data" / "cohort" / "manifest.csv"
    original = manifest_path.read_text()
    manifest = pd.read_csv(manifest_path)
    val_ids = manifest.index[manifest["split"] == "val"]
    manifest.loc[val_ids[0], "split"] = "train"
    manifest.to_csv(manifest_path, index=False)
    try:
        moved = run_register_stage(cfg)
    finally:
        manifest_path.write_text(original)
    assert moved.alias == "challenger" and moved.champion_val_auc is None and moved.delong_p is None
    assert "validated on other patients" in moved.reason and "not promoted" in moved.reason
    assert str(client.get_model_version_by_alias("cage-subsidence", "champion").version) == first.version
    decision = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=moved.run_id, artifact_path="registration.json", tracking_uri=cfg.tracking.uri
            )
        ).read_text()
    )
    assert decision["gate"]["same_validation_patients"] is False
