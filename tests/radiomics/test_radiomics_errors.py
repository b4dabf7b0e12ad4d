"""Bad inputs: each failing ROI is reported with patient, sequence and ROI while the others complete."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from cagerisk.config import typed
from cagerisk.config.pipeline import RadiomicsConfig
from cagerisk.imaging.masks import EmptyRoiError, binary_roi_mask
from cagerisk.radiomics import RadiomicsParamsError, extract_radiomics, sequence_params
from cagerisk.stages.radiomics import write_radiomics_outputs
from tests.conftest import compose_config
from tests.radiomics.conftest import EXTRACTION

SERIAL = {"scheduler": "synchronous"}


def _rewrite_mask(path: str, labels: np.ndarray | None = None, spacing=None, origin=None) -> None:
    mask = sitk.ReadImage(path)
    if labels is not None:
        new = sitk.GetImageFromArray(labels.astype(np.uint8))
        new.CopyInformation(mask)
        mask = new
    if spacing is not None:
        mask.SetSpacing(spacing)
    if origin is not None:
        mask.SetOrigin(origin)
    sitk.WriteImage(mask, path, useCompression=True)


def test_bad_rois_are_reported_and_the_rest_completes(roi_cohort, tiny_params, tmp_path):
    manifest = roi_cohort(n_patients=6)
    shape = sitk.GetArrayFromImage(sitk.ReadImage(manifest.loc[0, "ct_mask"])).shape
    # P000: empty CT mask. P001: CT mask on another grid. P002: CT mask outside the image.
    # P003: t2 image is not an image. P004: t2 mask file missing. P005: fine.
    _rewrite_mask(manifest.loc[0, "ct_mask"], labels=np.zeros(shape))
    _rewrite_mask(manifest.loc[1, "ct_mask"], spacing=(1.0, 1.0, 1.0))
    _rewrite_mask(manifest.loc[2, "ct_mask"], origin=(500.0, 0.0, 0.0))
    with open(manifest.loc[3, "t2_image"], "wb") as fh:
        fh.write(b"not a nifti file")
    os.remove(manifest.loc[4, "t2_mask"])

    result = extract_radiomics(manifest, tiny_params(), tmp_path / "cache", SERIAL, **EXTRACTION)

    failures = result.failures.set_index(["patient_id", "sequence", "roi"])
    assert set(failures.index) == {
        ("P000", "ct", "vertebra"),
        ("P001", "ct", "vertebra"),
        ("P002", "ct", "vertebra"),
        ("P003", "t2", "vertebra"),
        ("P003", "t2", "disc"),
        ("P004", "t2", "vertebra"),
        ("P004", "t2", "disc"),
    }
    assert "empty ROI" in failures.loc[("P000", "ct", "vertebra"), "error"]
    assert "[3, 4, 5, 6]" in failures.loc[("P000", "ct", "vertebra"), "error"]
    assert "not on the grid" in failures.loc[("P001", "ct", "vertebra"), "error"]
    assert "spacing" in failures.loc[("P001", "ct", "vertebra"), "error"]
    assert "origin" in failures.loc[("P002", "ct", "vertebra"), "error"]
    assert "not a readable nifti image" in failures.loc[("P003", "t2", "vertebra"), "error"]
    assert failures.loc[("P004", "t2", "disc"), "error_type"] == "FileNotFoundError"
    for (pid, seq, roi), row in failures.iterrows():
        assert f"patient {pid}, sequence {seq}, ROI {roi}" in row["error"]
        assert row["image"] and row["mask"]
    # Everything else was extracted: 6 patients x 3 ROIs, 7 failed, 11 computed and cached.
    assert (result.n_rois, result.n_failed, result.n_recomputed) == (18, 7, 11)
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 11
    table = result.table.set_index("patient_id")
    ct_cols = [c for c in table.columns if c.startswith("ct_vertebra_")]
    assert table.loc[["P000", "P001", "P002"], ct_cols].isna().all().all()
    assert table.loc[["P003", "P004", "P005"], ct_cols].notna().all().all()

    # Policy `error`: failures CSV and summary, no table; `nan`: the table with its holes.
    out = tmp_path / "out"
    config = typed(compose_config([f"paths.data={out}"]).radiomics, RadiomicsConfig, "radiomics")
    config = replace(config, output=f"{out}/radiomics.parquet", failures=f"{out}/radiomics_failures.csv")
    outputs = write_radiomics_outputs(result, config)
    assert "table" not in outputs and not (tmp_path / "out" / "radiomics.parquet").exists()
    written = pd.read_csv(outputs["failures"])
    assert len(written) == 7 and list(written.columns[:3]) == ["patient_id", "sequence", "roi"]
    outputs = write_radiomics_outputs(result, replace(config, on_failure="nan"))
    back = pd.read_parquet(outputs["table"])
    pd.testing.assert_frame_equal(back, result.table, check_exact=True)


def test_without_geometry_check_pyradiomics_resamples_inside_and_rejects_outside(roi_cohort, tiny_params, tmp_path):
    manifest = roi_cohort(n_patients=2, sequences=("ct",))
    _rewrite_mask(manifest.loc[0, "ct_mask"], spacing=(1.1, 1.1, 1.4))  # inside the image: resampled
    _rewrite_mask(manifest.loc[1, "ct_mask"], origin=(500.0, 0.0, 0.0))  # outside: fails
    result = extract_radiomics(
        manifest, tiny_params(("ct",)), tmp_path / "cache", SERIAL, **{**EXTRACTION, "check_geometry": False}
    )
    assert result.failures[["patient_id", "sequence", "roi"]].values.tolist() == [["P001", "ct", "vertebra"]]
    assert "larger than image space" in result.failures.loc[0, "error"]


def test_bad_manifest_and_settings_name_what_is_wrong(roi_cohort, tiny_params, tmp_path):
    manifest = roi_cohort(n_patients=2, sequences=("ct",))
    manifest.loc[1, "fused_levels"] = "L9-L10"
    result = extract_radiomics(manifest, tiny_params(("ct",)), tmp_path / "cache", SERIAL, **EXTRACTION)
    assert result.failures["patient_id"].tolist() == ["P001"]
    assert "L9-L10" in result.failures.loc[0, "error"]
    with pytest.raises(ValueError, match="duplicated patient_id"):
        extract_radiomics(pd.concat([manifest, manifest]), tiny_params(("ct",)), tmp_path / "c", SERIAL, **EXTRACTION)
    bad = tmp_path / "bad.yaml"
    bad.write_text("setting:\n  binWidth: -3\n")
    with pytest.raises(RadiomicsParamsError, match="bad.yaml"):
        sequence_params("ct", bad)
    with pytest.raises(RadiomicsParamsError, match="not found"):
        sequence_params("ct", tmp_path / "missing.yaml")


def test_binary_roi_mask_is_the_union_of_label_values():
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[0, 0, 0], labels[1, 1, 1], labels[2, 2, 2] = 3, 4, 7
    label_map = sitk.GetImageFromArray(labels)
    label_map.SetSpacing((0.5, 0.6, 0.7))
    label_map.SetOrigin((1.0, 2.0, 3.0))
    mask = binary_roi_mask(label_map, [3, 4, 5])
    expected = np.zeros_like(labels)
    expected[0, 0, 0] = expected[1, 1, 1] = 1
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), expected)
    assert mask.GetSpacing() == label_map.GetSpacing() and mask.GetOrigin() == label_map.GetOrigin()
    with pytest.raises(EmptyRoiError, match=r"labels present: \[3, 4, 7\]"):
        binary_roi_mask(label_map, [11, 12])
