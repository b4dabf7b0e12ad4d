"""MLflow conventions on a real SQLite store: experiment kind, datasets of stage runs, the parent run's page."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from cagerisk.tracking.pipeline_run import headline_metrics, log_pipeline_summary, summary_markdown
from cagerisk.tracking.runs import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, configure_tracking, file_sha256, stage_run

REPORT = {
    "performance": {
        "combined": {
            "val": {"auc": 0.82, "auc_ci_low": 0.63, "auc_ci_high": 1.0, "n": 19},
            "val+test": {"auc": 0.80, "auc_ci_low": 0.66, "auc_ci_high": 0.94},
        },
        "rad_sign": {"train": {"auc": 0.74, "auc_ci_low": 0.61, "auc_ci_high": 0.87, "npv": None}},
    },
    "acceptance": {"oracle_auc": 0.866, "ratio": 0.924},
    "calibration": [
        # the field names evaluate's calibration table writes
        {
            "model": "Combined model",
            "key": "combined",
            "split": "val",
            "brier": 0.13,
            "hl_p": 0.2,
            "cal_slope": 0.8,
            "cal_intercept": -0.1,
        },
        {"model": "Rad-sign", "key": "rad_sign", "split": "test", "cal_slope": 1.2, "cal_slope_low": 0.4, "cal_note": ""},
    ],
}


def test_headline_metrics_names_match_the_evaluate_run():
    metrics = headline_metrics(REPORT, {"dice_test_mean": 0.91, "dice_test_L4": 0.9, "n": 3})
    assert metrics == {
        "combined_val_auc": 0.82,
        "combined_val_auc_ci_low": 0.63,
        "combined_val_auc_ci_high": 1.0,
        "combined_val_test_auc": 0.80,
        "combined_val_test_auc_ci_low": 0.66,
        "combined_val_test_auc_ci_high": 0.94,
        "rad_sign_train_auc": 0.74,
        "rad_sign_train_auc_ci_low": 0.61,
        "rad_sign_train_auc_ci_high": 0.87,
        "heldout_oracle_auc": 0.866,
        "heldout_auc_ratio": 0.924,
        "combined_val_calibration_slope": 0.8,
        "combined_val_calibration_intercept": -0.1,
        "rad_sign_test_calibration_slope": 1.2,
        "rad_sign_test_calibration_slope_low": 0.4,
        "dice_test_mean": 0.91,
    }
    text = summary_markdown(metrics)
    assert "| Combined model | – | 0.820 (0.630-1.000) | – |" in text and "ratio 0.924" in text and "slope 0.80" in text
    assert headline_metrics(None) == {}


def _write_pipeline_outputs(data: Path) -> None:
    (data / "cohort").mkdir(parents=True)
    (data / "features").mkdir(parents=True)
    (data / "reports" / "evaluation").mkdir(parents=True)
    (data / "segment").mkdir(parents=True)
    pd.DataFrame({"patient_id": ["a", "b", "c"], "split": ["train", "val", "test"], "cs": [0, 1, 0]}).to_csv(
        data / "cohort" / "manifest.csv", index=False
    )
    pd.DataFrame({"patient_id": ["a", "b", "c"], "ct_vb_original_firstorder_Mean": [1.0, 2.0, 3.0]}).to_parquet(
        data / "features" / "radiomics.parquet"
    )
    (data / "reports" / "metrics.json").write_text(json.dumps(REPORT))
    (data / "reports" / "report.html").write_text("<html>report</html>")
    (data / "reports" / "evaluation" / "fig2_roc.png").write_bytes(b"\x89PNG fake figure bytes")
    (data / "segment" / "metrics.json").write_text(json.dumps({"dice_test_mean": 0.91}))


def test_experiment_is_a_model_training_experiment_in_new_and_old_stores(tmp_path: Path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # An "old" store: the experiment exists without the kind tag (as MLflow < this change made it).
    mlflow.set_tracking_uri(uri)
    old_id = mlflow.create_experiment("old", artifact_location=(tmp_path / "a").as_uri())
    assert EXPERIMENT_KIND_TAG not in mlflow.get_experiment(old_id).tags
    assert configure_tracking({"uri": uri, "experiment": "old", "artifact_root": str(tmp_path / "a")}) == old_id
    assert mlflow.get_experiment(old_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    new_id = configure_tracking({"uri": uri, "experiment": "new", "artifact_root": str(tmp_path / "a")})
    assert mlflow.get_experiment(new_id).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    # A kind a person chose is left alone.
    MlflowClient().set_experiment_tag(new_id, EXPERIMENT_KIND_TAG, "genai_development")
    configure_tracking({"uri": uri, "experiment": "new", "artifact_root": str(tmp_path / "a")})
    assert mlflow.get_experiment(new_id).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_stage_runs_log_what_they_read_as_datasets(make_config, tmp_path: Path):
    data = tmp_path / "data"
    _write_pipeline_outputs(data)
    cfg = make_config()
    with stage_run(cfg, "signatures") as run:
        pass
    inputs = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(run.info.run_id).inputs.dataset_inputs
    by_name = {d.dataset.name: d for d in inputs}
    # deep.parquet does not exist here: only what the stage can read is logged.
    assert set(by_name) == {"manifest", "radiomics"}
    manifest = by_name["manifest"]
    sha = file_sha256(data / "cohort" / "manifest.csv")
    assert manifest.dataset.digest == sha[:16] and manifest.dataset.source_type == "local"
    assert str((data / "cohort" / "manifest.csv").resolve()) in manifest.dataset.source
    tags = {t.key: t.value for t in manifest.tags}
    assert tags["mlflow.data.context"] == "training" and tags["sha256"] == sha
    assert json.loads(manifest.dataset.schema)["mlflow_colspec"]
    # Params are the flattened config: the same keys for every run of a stage.
    with stage_run(cfg, "signatures") as again:
        pass
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    assert set(client.get_run(again.info.run_id).data.params) == set(client.get_run(run.info.run_id).data.params)


def test_parent_run_carries_headline_metrics_report_and_datasets(make_config, tmp_path: Path):
    data = tmp_path / "data"
    _write_pipeline_outputs(data)
    cfg = make_config()
    experiment_id = configure_tracking(cfg.tracking)
    with mlflow.start_run(experiment_id=experiment_id, run_name="pipeline") as parent:
        metrics = log_pipeline_summary(cfg)
    run = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(parent.info.run_id)
    assert run.data.metrics["combined_val_auc"] == pytest.approx(0.82) and run.data.metrics["dice_test_mean"] == pytest.approx(
        0.91
    )
    assert run.data.metrics == pytest.approx(metrics)
    assert "Pipeline summary" in run.data.tags["mlflow.note.content"]
    artifacts = {a.path for a in MlflowClient(tracking_uri=cfg.tracking.uri).list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/metrics.json", "report/evaluation"} <= artifacts
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"manifest", "radiomics"}
    with pytest.raises(RuntimeError, match="active MLflow run"):
        log_pipeline_summary(cfg)


def test_a_table_too_wide_for_the_schema_column_is_logged_with_its_digest(make_config, tmp_path: Path):
    """The demo's radiomics table has a column schema over MLflow's 1 MiB limit: it must still show."""
    import numpy as np

    from cagerisk.tracking.runs import log_table_dataset

    names = [f"t2_vertebral_body_L{j % 5}_wavelet-HHL_glszm_SizeZoneNonUniformityNormalized_{j:05d}" for j in range(14000)]
    wide = pd.DataFrame(np.zeros((3, len(names))), columns=names)
    wide.insert(0, "patient_id", ["a", "b", "c"])
    path = tmp_path / "radiomics.parquet"
    wide.to_parquet(path)
    assert len(mlflow.data.from_pandas(wide, source=str(path)).to_dict()["schema"]) > 1_048_575
    cfg = make_config()
    configure_tracking(cfg.tracking)
    with mlflow.start_run() as run:
        assert log_table_dataset(path, "radiomics", "training")
    (logged,) = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(run.info.run_id).inputs.dataset_inputs
    tags = {t.key: t.value for t in logged.tags}
    assert logged.dataset.digest == file_sha256(path)[:16] and str(path) in logged.dataset.source
    assert tags["columns"] == "14001" and tags["rows"] == "3" and "schema size limit" in tags["schema"]
