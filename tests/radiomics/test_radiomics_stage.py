"""`cagerisk radiomics` end to end: real Hydra config, synthetic tiny cohort, local dask cluster, MLflow."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from cagerisk.radiomics.naming import feature_groups
from cagerisk.stages.radiomics import RadiomicsStageError, run_radiomics_stage

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> Path:
    """One SQLite store for the module (creating its schema costs seconds); each test its own experiment."""
    return tmp_path_factory.mktemp("mlflow")


def _tracking(store: Path, experiment: str) -> list[str]:
    return [
        f"tracking.uri=sqlite:///{store}/mlflow.db",
        f"tracking.artifact_root={store}/artifacts",
        f"tracking.experiment={experiment}",
    ]


def _runs(cfg) -> list:
    client = MlflowClient(tracking_uri=str(cfg.tracking.uri))
    experiment = client.get_experiment_by_name(str(cfg.tracking.experiment))
    return client.search_runs([experiment.experiment_id], "tags.`cagerisk.stage` = 'radiomics'", order_by=["start_time ASC"])


def test_stage_on_the_tiny_cohort_then_a_rerun_recomputes_nothing(tiny_cohort, mlflow_store, compose_cfg, tmp_path, caplog):
    overrides = [
        f"paths.data={tmp_path}/data",
        f"paths.cohort={tiny_cohort}/cohort",
        *_tracking(mlflow_store, "radiomics-stage"),
        "radiomics=fast",
        "radiomics.sequences=[ct]",
        "compute.n_workers=2",  # the default local cluster, two worker processes
    ]
    cfg = compose_cfg(overrides)
    with caplog.at_level(logging.INFO, logger="cagerisk.radiomics"):
        first = run_radiomics_stage(cfg)
    assert "starting local dask cluster: 2 worker process(es) x 1 thread(s)" in caplog.text
    caplog.clear()
    n_patients = len(pd.read_csv(tiny_cohort / "cohort" / "manifest.csv"))
    assert first.n_rois == n_patients and first.n_recomputed == first.n_rois and first.n_failed == 0

    table = pd.read_parquet(tmp_path / "data" / "features" / "radiomics.parquet")
    assert table["patient_id"].tolist() == pd.read_csv(tiny_cohort / "cohort" / "manifest.csv", dtype=str)["patient_id"].tolist()
    groups = feature_groups(table.columns)
    assert list(groups) == [("ct", "vertebra")]
    assert not table.drop(columns="patient_id").isna().any().any()
    assert pd.read_csv(tmp_path / "data" / "features" / "radiomics_failures.csv").empty
    summary = json.loads((tmp_path / "data" / "features" / "radiomics_summary.json").read_text())
    assert summary["rois_recomputed"] == first.n_rois and summary["feature_counts"]["ct_vertebra"] == len(
        groups[("ct", "vertebra")]
    )

    with caplog.at_level(logging.INFO, logger="cagerisk.radiomics"):
        second = run_radiomics_stage(compose_cfg(overrides))
    assert second.n_recomputed == 0 and second.n_cached == first.n_rois
    assert "0 ROIs recomputed" in caplog.text
    assert "starting local dask cluster" not in caplog.text  # nothing to compute, no cluster
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "data" / "features" / "radiomics.parquet"), table, check_exact=True)

    runs = _runs(cfg)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert runs[0].data.metrics["rois_recomputed"] == first.n_rois and runs[1].data.metrics["rois_recomputed"] == 0
    assert runs[1].data.metrics["rois_cached"] == first.n_rois
    artifacts = {a.path for a in MlflowClient(str(cfg.tracking.uri)).list_artifacts(runs[0].info.run_id, "radiomics")}
    assert {"radiomics/radiomics_failures.csv", "radiomics/params", "radiomics/feature_counts.json"} <= artifacts


def test_failed_rois_stop_the_stage_after_caching_the_rest(roi_cohort, mlflow_store, compose_cfg, tmp_path):
    import numpy as np
    import SimpleITK as sitk

    manifest = roi_cohort(n_patients=3, sequences=("ct",))
    cohort_dir = Path(manifest.loc[0, "ct_image"]).parents[1]
    mask = sitk.ReadImage(manifest.loc[1, "ct_mask"])
    empty = sitk.GetImageFromArray(np.zeros(sitk.GetArrayFromImage(mask).shape, np.uint8))
    empty.CopyInformation(mask)
    sitk.WriteImage(empty, manifest.loc[1, "ct_mask"])
    overrides = [
        f"paths.data={tmp_path}/data",
        f"radiomics.manifest={cohort_dir}/manifest.csv",
        *_tracking(mlflow_store, "radiomics-failure"),
        "radiomics=fast",
        "compute=serial",
    ]
    cfg = compose_cfg(overrides)
    with pytest.raises(RadiomicsStageError, match=r"1 of 3 ROIs failed(.|\n)*P001 / ct / vertebra: .*empty ROI"):
        run_radiomics_stage(cfg)
    features = tmp_path / "data" / "features"
    assert not (features / "radiomics.parquet").exists()
    failures = pd.read_csv(features / "radiomics_failures.csv")
    assert failures[["patient_id", "sequence", "roi"]].values.tolist() == [["P001", "ct", "vertebra"]]
    assert len(list((tmp_path / "data" / "cache" / "radiomics").rglob("*.json"))) == 2
    (run,) = _runs(cfg)
    assert run.info.status == "FAILED" and run.data.metrics["rois_failed"] == 1

    # The documented way out for those who impute later: the table with NaN in the failed ROI.
    result = run_radiomics_stage(compose_cfg([*overrides, "radiomics.on_failure=nan"]))
    assert result.n_recomputed == 0  # the good ROIs come from the cache; the bad one fails again
    table = pd.read_parquet(features / "radiomics.parquet").set_index("patient_id")
    assert table.loc["P001"].isna().all() and table.drop(index="P001").notna().all().all()


def test_console_entry_point_runs_the_stage(roi_cohort, tmp_path):
    """`cagerisk radiomics ...` as DVC calls it (a separate process, Hydra command-line overrides)."""
    manifest = roi_cohort(n_patients=1, sequences=("ct",))
    cohort_dir = Path(manifest.loc[0, "ct_image"]).parents[1]
    cmd = [
        str(Path(sys.executable).parent / "cagerisk"),
        "radiomics",
        f"paths.data={tmp_path}/data",
        f"radiomics.manifest={cohort_dir}/manifest.csv",
        "tracking.enabled=false",
        "radiomics=fast",
        "compute=serial",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 ROIs recomputed" in done.stderr + done.stdout
    assert pd.read_parquet(tmp_path / "data" / "features" / "radiomics.parquet").shape[0] == 1
