"""Geometry, label maps and determinism of the synthetic cohort."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from cagerisk.cohort.manifest import load_manifest, validate_manifest
from cagerisk.cohort.schema import LABELS, ROIS, SEQUENCES, allowed_label_values, image_column, mask_column, roi_label_values
from cagerisk.cohort.synthetic import CENTER_BY_NAME
from cagerisk.stages.cohort import run_cohort_stage


def test_tiny_cohort_outputs(tiny_cohort: Path):
    out = tiny_cohort / "cohort"
    for name in ("manifest.csv", "labels.json", "oracle.json", "truth.csv", "table1.csv", "table1.md"):
        assert (out / name).exists(), name
    assert json.loads((out / "labels.json").read_text()) == LABELS
    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == 16 and set(manifest["split"]) == {"train", "val", "test"}
    truth = pd.read_csv(out / "truth.csv")
    assert "true_risk" not in manifest.columns and set(truth["patient_id"]) == set(manifest["patient_id"])
    oracle = json.loads((out / "oracle.json").read_text())
    assert set(oracle["oracle_auc"]) >= {"train", "val", "test", "all"}
    # second-reader masks for a quarter of the patients
    assert manifest[mask_column("t2", 2)].notna().sum() == 4


def test_every_image_has_geometry_and_complete_masks(tiny_cohort: Path):
    manifest = load_manifest(tiny_cohort / "cohort" / "manifest.csv")
    # The validator re-reads every image and mask: geometry, label values, non-empty ROIs.
    result = validate_manifest(pd.read_csv(tiny_cohort / "cohort" / "manifest.csv"), tiny_cohort / "cohort")
    assert result.issues == [], result.summary()
    for _, row in manifest.iterrows():
        center = CENTER_BY_NAME[row["center"]]
        for seq in SEQUENCES:
            image = sitk.ReadImage(row[image_column(seq)])
            mask = sitk.GetArrayFromImage(sitk.ReadImage(row[mask_column(seq)]))
            assert image.GetSize()[::-1] == mask.shape
            assert np.isclose(np.linalg.det(np.reshape(image.GetDirection(), (3, 3))), 1.0)
            assert set(np.unique(mask)) <= allowed_label_values(seq)
            # Masks lie inside the field of view: no ROI touches the image border.
            for axis in range(3):
                assert not mask.take(0, axis=axis).any() or seq.endswith("ax") and axis == 0
                assert not mask.take(-1, axis=axis).any() or seq.endswith("ax") and axis == 0
            for roi in ROIS[seq]:
                roi_mask = np.isin(mask, roi_label_values(row["fused_levels"], roi))
                assert roi_mask.sum() > 20
                # a 3-D ROI: PyRadiomics' 3-D texture needs at least two voxels along every axis
                extent = [np.ptp(np.nonzero(roi_mask)[a]) + 1 for a in range(3)]
                assert min(extent) >= 2, (row["patient_id"], seq, roi, extent)
            if seq == "ct":
                assert np.allclose(image.GetSpacing(), np.array(center.ct_spacing) * 3.0)
                assert np.allclose(image.GetDirection(), center.ct_direction)


def test_ct_intensities_follow_anatomy(tiny_cohort: Path):
    row = load_manifest(tiny_cohort / "cohort" / "manifest.csv").iloc[0]
    ct = sitk.GetArrayFromImage(sitk.ReadImage(row["ct_image"])).astype(float)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(row["ct_mask"]))
    bone = ct[mask > 0].mean()
    assert 100 < bone < 700  # trabecular bone with its cortex, HU
    t2 = sitk.GetArrayFromImage(sitk.ReadImage(row["t2_image"])).astype(float)
    t2_mask = sitk.GetArrayFromImage(sitk.ReadImage(row["t2_mask"]))
    assert t2[t2_mask == LABELS["vertebra_L3"]].mean() > 0


def test_second_reader_differs_by_a_voxel_or_two(tiny_cohort: Path):
    manifest = load_manifest(tiny_cohort / "cohort" / "manifest.csv")
    row = manifest[manifest[mask_column("t2ax", 2)].notna()].iloc[0]
    for seq in ("ct", "t2ax"):
        a = sitk.GetArrayFromImage(sitk.ReadImage(row[mask_column(seq)])) > 0
        b = sitk.GetArrayFromImage(sitk.ReadImage(row[mask_column(seq, 2)])) > 0
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert 0.6 < dice < 0.99, (seq, dice)  # not a copy, still the same structures


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_same_seed_gives_byte_identical_cohort(make_config, tmp_path: Path):
    small = ["cohort=tiny", "cohort.n_patients=3", "cohort.second_reader_fraction=0.34", "tracking.enabled=false"]
    run_cohort_stage(make_config(*small, f"paths.data={tmp_path}/one", "cohort.n_jobs=1"))
    run_cohort_stage(make_config(*small, f"paths.data={tmp_path}/two", "cohort.n_jobs=2"))
    one, two = _digests(tmp_path / "one" / "cohort"), _digests(tmp_path / "two" / "cohort")
    assert len(one) > 30 and one == two
    run_cohort_stage(make_config(*small, f"paths.data={tmp_path}/three", "cohort.seed=4"))
    three = _digests(tmp_path / "three" / "cohort")
    assert three["images/P0001/ct.nii.gz"] != one["images/P0001/ct.nii.gz"]
