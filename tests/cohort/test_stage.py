"""The cohort stage through its CLI, tracked in a real MLflow SQLite store; real-manifest ingestion."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from cagerisk.cohort.manifest import ManifestError
from cagerisk.config import ConfigError
from cagerisk.stages.cohort import run_cohort_stage

ROOT = Path(__file__).resolve().parents[2]


def test_cli_runs_stage_and_logs_to_mlflow(tmp_path: Path):
    cmd = [
        sys.executable,
        "-m",
        "cagerisk.cli",
        "cohort",
        "cohort=tiny",
        "cohort.n_patients=4",
        f"paths.data={tmp_path}/data",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"tracking.artifact_root={tmp_path}/artifacts",
    ]
    env = {**os.environ, "CAGERISK_PARENT_RUN_ID": ""}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, encoding="utf-8", timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "data" / "cohort" / "manifest.csv").exists()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["cagerisk"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["params.cohort.n_patients"] == "4" and run["metrics.n_patients"] == 4
    assert run["tags.cagerisk.stage"] == "cohort"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run["run_id"], "cohort")}
    assert {"cohort/manifest.csv", "cohort/table1.md", "cohort/oracle.json"} <= artifacts


def test_unknown_stage_is_a_clear_error():
    proc = subprocess.run(
        [sys.executable, "-m", "cagerisk.cli", "nonsense"], capture_output=True, text=True, encoding="utf-8", cwd=ROOT
    )
    assert proc.returncode == 2 and "unknown stage 'nonsense'" in proc.stderr


def test_real_manifest_ingestion_keeps_good_rows_and_split(tiny_cohort: Path, make_config, tmp_path: Path):
    source = pd.read_csv(tiny_cohort / "cohort" / "manifest.csv")
    images = tiny_cohort / "cohort"
    for col in [c for c in source.columns if c.endswith(("_image", "_mask", "_mask_r2"))]:
        source[col] = [None if pd.isna(v) else str(images / v) for v in source[col]]
    source.loc[2, "age"] = -4
    path = tmp_path / "hospital.csv"
    source.to_csv(path, index=False)
    cfg = make_config("cohort=manifest", f"cohort.manifest={path}")
    out = run_cohort_stage(cfg)
    written = pd.read_csv(out / "manifest.csv")
    assert len(written) == 15 and source.loc[2, "patient_id"] not in set(written["patient_id"])
    assert (written.set_index("patient_id")["split"] == source.set_index("patient_id")["split"].loc[written["patient_id"]]).all()
    issues = pd.read_csv(out / "validation_issues.csv")
    assert list(issues["field"]) == ["age"]
    assert (out / "table1.md").exists()


def test_a_manifest_without_valid_patient_writes_the_issues_then_fails(tiny_cohort: Path, make_config, tmp_path: Path):
    source = pd.read_csv(tiny_cohort / "cohort" / "manifest.csv").head(3)
    source["age"] = -4
    path = tmp_path / "hospital.csv"
    source.to_csv(path, index=False)
    cfg = make_config("cohort=manifest", f"cohort.manifest={path}", "cohort.check_images=false", "tracking.enabled=false")
    with pytest.raises(ManifestError, match=r"hospital\.csv: no valid patient left; see .*validation_issues\.csv"):
        run_cohort_stage(cfg)
    out = Path(cfg.paths.cohort)
    issues = pd.read_csv(out / "validation_issues.csv")
    assert sorted(issues["patient_id"]) == sorted(source["patient_id"]) and set(issues["field"]) == {"age"}
    assert not (out / "manifest.csv").exists()


def test_cohort_config_errors_name_the_key(make_config):
    with pytest.raises(ConfigError, match=r"cohort\.source"):
        run_cohort_stage(make_config("cohort.source=dicom_folder"))
    with pytest.raises(ConfigError, match=r"cohort\.n_patients"):
        run_cohort_stage(make_config("cohort.n_patients=many"))
