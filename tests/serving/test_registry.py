"""`cagerisk register` on a real MLflow SQLite store: signature, self-contained bundle, champion/challenger."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from serving_helpers import compose_serving_config, write_feature_pipeline
from sklearn.metrics import roc_auc_score

from cagerisk.evaluation import delong_test
from cagerisk.serving.bundle import feature_rows, read_training_tables
from cagerisk.serving.errors import ScoringInputError
from cagerisk.stages.register import run_register_stage


@pytest.fixture(scope="module")
def feature_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own finished feature pipeline and MLflow store (shadowing the session fixture): its
    tests count registry versions from 1 and rewrite the pipeline's outcomes, so no other module may
    register into, or read, the same store (test_score_paths did, on the same xdist worker)."""
    tmp = tmp_path_factory.mktemp("registry-pipeline")
    write_feature_pipeline(tmp / "data")
    return tmp


@pytest.fixture(scope="module")
def registered(feature_pipeline: Path):
    cfg = compose_serving_config(feature_pipeline)
    first = run_register_stage(cfg)
    return cfg, first


def test_first_version_is_champion_with_signature_and_example(registered, feature_pipeline: Path):
    cfg, first = registered
    assert (first.name, first.version, first.alias, first.reason) == ("cage-subsidence", "1", "champion", "no champion yet")
    scores = pd.read_parquet(feature_pipeline / "data" / "models" / "combined" / "scores.parquet")
    val = scores[scores["split"] == "val"]
    assert first.val_auc == pytest.approx(roc_auc_score(val["cs"], val["combined"]), abs=1e-12)
    assert first.n_val == len(val)

    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    version = client.get_model_version_by_alias("cage-subsidence", "champion")
    assert str(version.version) == "1" and version.tags["alias"] == "champion"
    assert version.tags["training_data_sha256"] == first.training_data_sha256
    info = mlflow.models.get_model_info("models:/cage-subsidence@champion")
    inputs = {c.name: c for c in info.signature.inputs.inputs}
    # The clinical values the model uses, typed as the manifest holds them; unused ones are not inputs.
    assert inputs["osteoporosis"].required and inputs["age"].required and "bmi" not in inputs
    assert (inputs["osteoporosis"].type.name, inputs["age"].type.name) == ("long", "double")
    assert not inputs["t2_image"].required and not inputs["ct_mask"].required
    assert {"probability", "rad_sign", "dl_sign", "risk_class"} <= set(info.signature.outputs.input_names())
    assert info.saved_input_example_info is not None

    # The run that registered holds the decision and the parameters of the pipeline config.
    run = client.get_run(first.run_id)
    assert run.data.tags["registry.alias"] == "champion" and run.data.tags["cagerisk.stage"] == "register"
    assert run.data.metrics["val_auc"] == pytest.approx(first.val_auc)
    assert run.data.params["serve.model_name"] == "cage-subsidence"


def test_model_travels_without_the_data_folder(registered, feature_pipeline: Path):
    """Every artifact is inside the model: it scores with data/ moved away."""
    cfg, _ = registered
    tables = read_training_tables(cfg.paths.cohort, cfg.paths.features)
    data = feature_pipeline / "data"
    moved = feature_pipeline / "data-moved"
    shutil.move(str(data), str(moved))
    try:
        mlflow.set_tracking_uri(cfg.tracking.uri)
        model = mlflow.pyfunc.load_model("models:/cage-subsidence@champion")
        python_model = model.unwrap_python_model()
        spec = python_model.spec
        assert spec.radiomics_features and len(spec.radiomics_features) < spec.n_radiomics_columns
        assert str(data) not in spec.to_json()
        val = list(tables.split("val"))
        frame = feature_rows(spec, tables, val)
        out = model.predict(frame)
    finally:
        shutil.move(str(moved), str(data))
    scores = pd.read_parquet(data / "models" / "combined" / "scores.parquet").set_index("patient_id").loc[val]
    np.testing.assert_allclose(out["probability"], scores["combined"], rtol=0, atol=1e-12)
    assert list(out["patient_id"]) == val and set(out["mode"]) == {"features"}
    assert (out["risk_class"] == np.where(scores["combined"] >= spec.threshold, "high", "low")).all()
    # Bad rows in a batch are named by row and field.
    bad = frame.copy()
    bad.loc[1, "age"] = np.nan
    with pytest.raises(ScoringInputError, match=r"rows\[1\]\.clinical\.age"):
        python_model.score(bad)
    # A NaN feature is imputed as in training; a missing feature column is an error.
    gap = frame.head(1).copy()
    gap.loc[0, spec.radiomics_features[0]] = np.nan
    assert np.isfinite(python_model.score(gap)["probability"]).all()
    with pytest.raises(ScoringInputError, match="features: 1 required feature"):
        python_model.score(frame.head(1).drop(columns=[spec.deep_features[0]]))


def test_worse_model_becomes_challenger_with_delong(registered, feature_pipeline: Path):
    cfg, first = registered
    # A model fitted on shuffled outcomes, on the same data: its validation AUC is lower.
    write_feature_pipeline(feature_pipeline / "data", shuffle_labels=True)
    try:
        second = run_register_stage(cfg)
    finally:
        write_feature_pipeline(feature_pipeline / "data")
    assert second.version == "2" and second.alias == "challenger"
    assert second.champion_version == "1" and second.champion_val_auc == pytest.approx(first.val_auc)
    assert second.val_auc < first.val_auc
    assert 0.0 <= second.delong_p <= 1.0 and "<" in second.reason
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    assert str(client.get_model_version_by_alias("cage-subsidence", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("cage-subsidence", "challenger").version) == "2"
    # The logged figures are DeLong's on the same validation patients, scored by both registered versions.
    tables = read_training_tables(cfg.paths.cohort, cfg.paths.features)
    val = list(tables.split("val"))
    y = tables.manifest.loc[val, "cs"].to_numpy()
    probs = []
    for version in ("1", "2"):
        model = mlflow.pyfunc.load_model(f"models:/cage-subsidence/{version}")
        probs.append(model.predict(feature_rows(model.unwrap_python_model().spec, tables, val))["probability"].to_numpy())
    test = delong_test(y, probs[1], probs[0])
    assert second.delong_p == pytest.approx(test.p_value) and second.delong_z == pytest.approx(test.z)
    decision = json.loads(
        Path(mlflow.artifacts.download_artifacts(run_id=second.run_id, artifact_path="registration.json")).read_text()
    )
    assert decision["alias"] == "challenger" and decision["delong_p"] == pytest.approx(second.delong_p)
    run = client.get_run(second.run_id)
    assert run.data.metrics["champion_val_auc"] == pytest.approx(first.val_auc)
    assert run.data.metrics["delong_p"] == pytest.approx(second.delong_p)
