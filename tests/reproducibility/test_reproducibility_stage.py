"""The reproducibility stage end to end on the tiny cohort: real radiomics, real MLflow store, real files.

Reader 1 comes from the real radiomics stage run on the second-reader patients (ct and t2, cheap
settings); the stage then extracts the second reader's masks through the same code and cache.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from repro_helpers import compose_with_reproducibility, stage_overrides

from cagerisk.cohort.manifest import load_manifest
from cagerisk.reproducibility import ReproducibilityStageError
from cagerisk.reproducibility.icc import ICC_COLUMNS
from cagerisk.stages.radiomics import run_radiomics_stage
from cagerisk.stages.reproducibility import run_reproducibility_stage

pytestmark = pytest.mark.slow


def _write_manifest(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)  # absolute paths: load_manifest keeps them
    return path


@pytest.fixture(scope="module")
def stage_runs(tiny_cohort: Path, cheap_params_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("repro")
    overrides = [*stage_overrides(root, cheap_params_dir), f"paths.cohort={tiny_cohort}/cohort"]
    manifest = load_manifest(tiny_cohort / "cohort" / "manifest.csv")
    second = manifest[manifest["t2_mask_r2"].notna()]
    assert len(second) >= 3, "the tiny cohort should have second-reader masks for a quarter of its patients"
    subset = _write_manifest(second, root / "second_reader_patients.csv")
    run_radiomics_stage(compose_with_reproducibility([*overrides, f"radiomics.manifest={subset}"]))

    # Patient `bad`: the second reader's t2 mask is cropped, so it no longer fits the t2 image.
    bad_index = second.index[1]
    bad_pid = str(manifest.loc[bad_index, "patient_id"])
    label_map = sitk.ReadImage(manifest.loc[bad_index, "t2_mask_r2"])
    cropped = sitk.Crop(label_map, [0, 0, 0], [2, 0, 0])
    bad_mask = root / "bad" / "t2_mask_r2.nii.gz"
    bad_mask.parent.mkdir()
    sitk.WriteImage(cropped, str(bad_mask))
    bad_manifest = manifest.copy()
    bad_manifest.loc[bad_index, "t2_mask_r2"] = str(bad_mask)
    bad_path = _write_manifest(bad_manifest, root / "bad_manifest.csv")
    data = root / "data"

    with pytest.raises(ReproducibilityStageError) as error:
        run_reproducibility_stage(compose_with_reproducibility([*overrides, f"reproducibility.manifest={bad_path}"]))
    failures = pd.read_csv(data / "reproducibility" / "failures.csv")
    icc_written_on_error = (data / "features" / "icc.parquet").exists()

    good = run_reproducibility_stage(compose_with_reproducibility(overrides))
    return SimpleNamespace(
        root=root,
        data=data,
        overrides=overrides,
        manifest=manifest,
        second=second,
        bad_pid=bad_pid,
        bad_path=bad_path,
        error=str(error.value),
        failures=failures,
        icc_written_on_error=icc_written_on_error,
        good=good,
    )


def test_bad_second_reader_mask_is_named_and_every_other_roi_completes(stage_runs):
    s = stage_runs
    for roi in ("vertebra", "disc"):
        assert f"patient {s.bad_pid}, sequence t2, ROI {roi}" in s.error
    assert "not on the grid" in s.error and "size" in s.error
    assert set(s.failures["patient_id"].astype(str)) == {s.bad_pid}
    assert set(zip(s.failures["sequence"], s.failures["roi"], strict=False)) == {("t2", "vertebra"), ("t2", "disc")}
    assert set(s.failures["step"]) == {"radiomics_reader2", "mask_agreement"}
    assert not s.icc_written_on_error
    # The failing run cached every other second-reader ROI: the good run computed only the bad patient's two.
    n = len(s.second)
    assert (s.good.n_rois, s.good.n_recomputed, s.good.n_cached) == (3 * n, 2, 3 * n - 2)


def test_icc_table_covers_every_extracted_feature(stage_runs):
    s = stage_runs
    radiomics = pd.read_parquet(s.data / "features" / "radiomics.parquet")
    icc = pd.read_parquet(s.data / "features" / "icc.parquet")
    features = [c for c in radiomics.columns if c != "patient_id"]
    assert list(icc["feature"]) == features and len(features) > 100
    assert set(ICC_COLUMNS) <= set(icc.columns)
    assert set(icc["sequence"]) == {"ct", "t2"} and set(icc["roi"]) == {"vertebra", "disc"}
    assert (icc["n_targets"] == len(s.second)).all()
    assert set(icc["status"]) <= {"ok", "constant"}
    ok = icc[icc["status"] == "ok"]
    assert ok["icc2_1"].between(-1, 1).all() and ok["icc3_1"].between(-1, 1).all()
    # The exact F interval of ICC(3,1) always holds its estimate; ICC(2,1)'s Satterthwaite interval does
    # where the ICC is positive (with 4 patients and a large reader bias it can miss a negative ICC,
    # exactly as pingouin's).
    assert ((ok["icc3_1_ci_low"] <= ok["icc3_1"]) & (ok["icc3_1"] <= ok["icc3_1_ci_high"])).all()
    positive = ok[ok["icc2_1"] > 0]
    assert ((positive["icc2_1_ci_low"] <= positive["icc2_1"]) & (positive["icc2_1"] <= positive["icc2_1_ci_high"])).all()
    # Second readers differ by a voxel or two: most features agree well, not all, none exactly.
    assert 0.3 < (ok["icc2_1"] >= 0.75).mean() < 1.0
    reader2 = pd.read_parquet(s.data / "features" / "radiomics_r2.parquet")
    assert list(reader2["patient_id"]) == list(s.second["patient_id"]) and list(reader2.columns) == list(radiomics.columns)
    assert not np.allclose(
        reader2[features].to_numpy(), radiomics.set_index("patient_id").loc[reader2["patient_id"], features].to_numpy()
    )

    agreement = pd.read_csv(s.data / "reproducibility" / "mask_agreement.csv")
    assert len(agreement) == 3 * len(s.second)
    assert agreement["dice"].between(0.3, 0.999).all() and (agreement["hausdorff_mm"] > 0).all()
    summary = pd.read_csv(s.data / "reproducibility" / "icc_summary.csv")
    assert list(zip(summary["sequence"], summary["roi"], strict=False)) == [
        ("ct", "vertebra"),
        ("t2", "vertebra"),
        ("t2", "disc"),
        ("all", "all"),
    ]
    assert summary["n_features"].iloc[-1] == len(features)
    png = s.data / "reproducibility" / "icc_histogram.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_mlflow_run_holds_summaries_and_artifacts(stage_runs):
    from mlflow.tracking import MlflowClient

    s = stage_runs
    client = MlflowClient(tracking_uri=f"sqlite:///{s.root}/mlflow.db")
    experiment = client.get_experiment_by_name("cagerisk")
    run = client.get_run(s.good.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["cagerisk.stage"] == "reproducibility"
    # The run of the bad manifest is kept, marked failed, with its failures table.
    failed = client.search_runs(
        [experiment.experiment_id], "tags.`cagerisk.stage` = 'reproducibility' and attributes.status = 'FAILED'"
    )
    assert any(
        "failures.csv" in {Path(a.path).name for a in client.list_artifacts(r.info.run_id, "reproducibility")} for r in failed
    )
    metrics = run.data.metrics
    summary = pd.read_csv(s.data / "reproducibility" / "icc_summary.csv").set_index(["sequence", "roi"])
    assert metrics["n_patients"] == len(s.second) and metrics["rois_failed"] == 0
    assert metrics["icc2_1_median"] == pytest.approx(summary.loc[("all", "all"), "icc2_1_median"])
    assert metrics["t2_disc_icc2_1_share_reproducible"] == pytest.approx(summary.loc[("t2", "disc"), "icc2_1_share_reproducible"])
    assert 0.3 < metrics["ct_vertebra_dice_median"] < 1
    artifacts = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "reproducibility")}
    assert {
        "icc.parquet",
        "icc_summary.csv",
        "icc_histogram.png",
        "mask_agreement.csv",
        "mask_agreement_summary.csv",
    } <= artifacts


def test_identical_masks_give_icc_exactly_one(stage_runs):
    s = stage_runs
    same = s.manifest.copy()
    for seq in ("ct", "t2"):
        has = same[f"{seq}_mask_r2"].notna()
        same.loc[has, f"{seq}_mask_r2"] = same.loc[has, f"{seq}_mask"]
    path = _write_manifest(same, s.root / "identical_manifest.csv")
    out = s.root / "identical"
    result = run_reproducibility_stage(
        compose_with_reproducibility(
            [
                *s.overrides,
                f"reproducibility.manifest={path}",
                f"reproducibility.output={out}/icc.parquet",
                f"reproducibility.reader2_output={out}/radiomics_r2.parquet",
                f"reproducibility.report_dir={out}",
            ]
        )
    )
    assert result.n_recomputed == 0  # the same masks are the same cache entries
    icc = pd.read_parquet(out / "icc.parquet")
    varying = icc[icc["status"] != "constant"]
    assert len(varying) > 0.9 * len(icc)
    assert (varying["status"] == "identical").all()
    assert (varying["icc2_1"] == 1.0).all() and (varying["icc3_1"] == 1.0).all()
    # A feature with one value for every patient has no ICC (0/0): NaN, named as such.
    radiomics = pd.read_parquet(s.data / "features" / "radiomics.parquet").set_index("patient_id")
    for feature in icc.loc[icc["status"] == "constant", "feature"]:
        assert radiomics.loc[result.patients, feature].nunique() == 1
    assert icc.loc[icc["status"] == "constant", "icc2_1"].isna().all()
    assert (result.agreement["dice"] == 1.0).all() and (result.agreement["hausdorff_mm"] == 0.0).all()


def test_reader1_by_extraction_equals_the_table_and_skip_policy(stage_runs):
    s = stage_runs
    out = s.root / "extract"
    outputs = [
        f"reproducibility.output={out}/icc.parquet",
        f"reproducibility.reader2_output={out}/r2.parquet",
        f"reproducibility.report_dir={out}",
    ]
    extracted = run_reproducibility_stage(
        compose_with_reproducibility([*s.overrides, *outputs, "reproducibility.reader1_source=extract", "tracking.enabled=false"])
    )
    pd.testing.assert_frame_equal(extracted.icc, s.good.icc)

    skipped = run_reproducibility_stage(
        compose_with_reproducibility(
            [
                *s.overrides,
                *outputs,
                f"reproducibility.manifest={s.bad_path}",
                "reproducibility.on_failure=skip",
                "tracking.enabled=false",
            ]
        )
    )
    icc = pd.read_parquet(out / "icc.parquet").set_index("feature")
    n = len(s.second)
    assert (icc.loc[icc["sequence"] == "ct", "n_targets"] == n).all()
    assert (icc.loc[icc["sequence"] == "t2", "n_targets"] == n - 1).all()
    assert set(skipped.failures["patient_id"]) == {s.bad_pid}
    assert len(pd.read_csv(out / "failures.csv")) == len(skipped.failures) == 4


def test_out_of_date_reader1_table_is_refused(stage_runs, tmp_path):
    s = stage_runs
    radiomics = pd.read_parquet(s.data / "features" / "radiomics.parquet")
    dropped = radiomics.drop(columns=[c for c in radiomics.columns if "glszm" in c and c.startswith("t2_disc")])
    dropped.to_parquet(tmp_path / "stale.parquet", index=False)
    common = [*s.overrides, f"reproducibility.report_dir={tmp_path}/out", "tracking.enabled=false"]
    with pytest.raises(ValueError, match=r"differ for t2 disc: \d+ feature\(s\) only on reader 2.*other settings"):
        run_reproducibility_stage(compose_with_reproducibility([*common, f"radiomics.output={tmp_path}/stale.parquet"]))
    radiomics.iloc[1:].to_parquet(tmp_path / "short.parquet", index=False)
    missing = str(radiomics["patient_id"].iloc[0])
    with pytest.raises(ValueError, match=rf"no row for patient\(s\) \['{missing}'\]"):
        run_reproducibility_stage(compose_with_reproducibility([*common, f"radiomics.output={tmp_path}/short.parquet"]))


def test_selection_with_and_without_the_stage_icc_table(stage_runs):
    """Selection on the stage's own ICC table: the report counts the ICC filter's removals."""
    from sklearn.pipeline import Pipeline

    from cagerisk.features import build_selection_steps, selection_report

    s = stage_runs
    icc = pd.read_parquet(s.data / "features" / "icc.parquet")
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    X = pd.DataFrame(rng.normal(size=(60, len(icc))), columns=icc["feature"])
    X.iloc[:, :10] += y[:, None]
    common = [*s.overrides, "selection.radiomics.lasso.cv=3", "selection.radiomics.lasso.n_alphas=10"]
    counts = {}
    for enabled in ("true", "false"):
        cfg = compose_with_reproducibility([*common, f"selection.icc.enabled={enabled}"])
        report = selection_report(Pipeline(build_selection_steps(cfg.selection, "radiomics", seed=0)).fit(X, y))
        counts[enabled] = report.set_index("step")["n_removed"].to_dict()
    assert counts["true"]["icc"] == int((~(icc["icc2_1"] >= 0.75)).sum()) > 0
    assert "icc" not in counts["false"]


def test_second_reader_patients_by_sequence_and_split():
    from cagerisk.reproducibility.interobserver import second_reader_patients, second_reader_sequences

    manifest = pd.DataFrame(
        {
            "patient_id": ["A", "B", "C", "D"],
            "split": ["train", "test", "train", "train"],
            "ct_mask_r2": ["a_ct.nii.gz", None, None, " "],
            "t2_mask_r2": ["a_t2.nii.gz", "b_t2.nii.gz", np.nan, ""],
        }
    )
    assert list(second_reader_patients(manifest, ["ct", "t2"])["patient_id"]) == ["A", "B"]
    assert list(second_reader_patients(manifest, ["ct", "t2"], splits=["train"])["patient_id"]) == ["A"]
    assert list(second_reader_patients(manifest, ["ct"])["patient_id"]) == ["A"]
    assert second_reader_sequences(manifest.iloc[1], ["ct", "t2"]) == ("t2",)
