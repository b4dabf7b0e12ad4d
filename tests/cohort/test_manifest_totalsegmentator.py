"""`cohort.labels`: a real manifest whose masks are TotalSegmentator outputs as they come (a multi-label
file for CT, a folder of structure files for axial MR), mapped through the cohort stage voxel for voxel."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from cagerisk.cohort.schema import LABELS, mask_column
from cagerisk.cohort.totalsegmentator import STRUCTURE_SOURCES, TOTALSEGMENTATOR_IDS, label_tasks, unmapped_rois
from cagerisk.config import ConfigError
from cagerisk.stages.cohort import run_cohort_stage


def as_totalsegmentator(mask: sitk.Image, task: str) -> np.ndarray:
    """A cagerisk mask written back in ``task``'s class ids (structures the task lacks become 0)."""
    values = sitk.GetArrayFromImage(mask)
    out = np.zeros_like(values, dtype=np.uint8)
    for structure, source in STRUCTURE_SOURCES[task].items():
        out[values == LABELS[structure]] = TOTALSEGMENTATOR_IDS[task][source]
    return out


def write_like(array: np.ndarray, reference: sitk.Image, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def site_manifest(tiny_cohort: Path, tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """The tiny cohort's manifest with CT masks as `total` multi-label files and axial T1 masks as `total_mr`
    structure folders; patient 0's CT file holds a class id `total` does not have."""
    frame = pd.read_csv(tiny_cohort / "cohort" / "manifest.csv")
    base = tiny_cohort / "cohort"
    for col in [c for c in frame.columns if c.endswith(("_image", "_mask", "_mask_r2"))]:
        frame[col] = [None if pd.isna(v) else str(base / v) for v in frame[col]]
    original = frame.copy()
    site = tmp_path / "site"
    for i, row in frame.iterrows():
        pid = row["patient_id"]
        for reader in (1, 2):  # the second reader's masks (some patients) come from TotalSegmentator too
            col = mask_column("ct", reader)
            if pd.isna(row.get(col)):
                continue
            ct = sitk.ReadImage(row[col])
            labels = as_totalsegmentator(ct, "total")
            if i == 0 and reader == 1:
                labels[0, 0, 0] = 200
            write_like(labels, ct, site / pid / f"{col}_total.nii.gz")
            frame.loc[i, col] = str(site / pid / f"{col}_total.nii.gz")
            col = mask_column("t1ax", reader)
            axial = sitk.ReadImage(row[col])
            values = sitk.GetArrayFromImage(axial)
            for structure, source in STRUCTURE_SOURCES["total_mr"].items():
                write_like((values == LABELS[structure]).astype(np.uint8), axial, site / pid / col / f"{source}.nii.gz")
            frame.loc[i, col] = str(site / pid / col)
    path = tmp_path / "manifest.csv"
    frame.to_csv(path, index=False)
    return path, original


def test_totalsegmentator_masks_mapped_voxel_for_voxel_through_the_stage(site_manifest, make_config, tmp_path: Path):
    path, original = site_manifest
    cfg = make_config("cohort=manifest", f"cohort.manifest={path}", "cohort.labels={ct:totalsegmentator,t1ax:total_mr}")
    out = run_cohort_stage(cfg)
    manifest = pd.read_csv(out / "manifest.csv")
    issues = pd.read_csv(out / "validation_issues.csv")
    bad = original.loc[0, "patient_id"]
    # the unknown class id rejects that patient alone, naming the column, the file and the id
    assert set(issues["patient_id"]) == {bad}
    (problem,) = issues["problem"]
    assert issues["field"].iloc[0] == "ct_mask" and "ct_mask_total.nii.gz" in problem and "[200]" in problem
    assert bad not in set(manifest["patient_id"]) and len(manifest) == len(original) - 1
    sources = pd.read_csv(out / "mask_sources.csv", keep_default_na=False)
    n_r2 = int(original["ct_mask_r2"].notna().sum())
    assert n_r2 > 0 and set(sources["column"]) == {"ct_mask", "t1ax_mask", "ct_mask_r2", "t1ax_mask_r2"}
    assert len(sources) == 2 * (len(original) + n_r2) - 1  # every mask but the one refused
    assert set(sources.loc[sources["column"] == "t1ax_mask", "rois_not_in_task"]) == {"quadratus"}
    for _, row in manifest.iterrows():
        before = original[original["patient_id"] == row["patient_id"]].iloc[0]
        ct_new = sitk.ReadImage(str(out / row["ct_mask"]))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(ct_new), sitk.GetArrayFromImage(sitk.ReadImage(before["ct_mask"])))
        assert ct_new.GetSpacing() == sitk.ReadImage(before["ct_image"]).GetSpacing()
        axial_before = sitk.GetArrayFromImage(sitk.ReadImage(before["t1ax_mask"]))
        expected = np.where(np.isin(axial_before, [LABELS["quadratus_left"], LABELS["quadratus_right"]]), 0, axial_before)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / row["t1ax_mask"]))), expected)
        assert row["t2_mask"].endswith(Path(before["t2_mask"]).name)  # cagerisk labels: untouched
        if pd.notna(before["ct_mask_r2"]):
            r2 = sitk.GetArrayFromImage(sitk.ReadImage(str(out / row["ct_mask_r2"])))
            np.testing.assert_array_equal(r2, sitk.GetArrayFromImage(sitk.ReadImage(before["ct_mask_r2"])))


def test_label_option_values():
    assert label_tasks("totalsegmentator") == {
        "ct": "total",
        "t1": "vertebrae_mr",
        "t2": "vertebrae_mr",
        "t1ax": "total_mr",
        "t2ax": "total_mr",
    }
    assert label_tasks({"t2": "vertebrae_mr"}) == {"ct": None, "t1": None, "t2": "vertebrae_mr", "t1ax": None, "t2ax": None}
    assert unmapped_rois("vertebrae_mr", "t1") == ["disc"] and unmapped_rois("total", "ct") == []
    with pytest.raises(ConfigError, match=r"cohort.labels.ct: 'total_ct'"):
        label_tasks({"ct": "total_ct"})
    with pytest.raises(ConfigError, match=r"unknown sequence\(s\) \['flair'\]"):
        label_tasks({"flair": "total_mr"})
