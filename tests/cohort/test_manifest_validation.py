"""Each kind of bad manifest row is reported with patient and field; good rows are kept."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from cagerisk.cohort.manifest import ManifestError, load_manifest, validate_manifest
from cagerisk.cohort.schema import LABELS, mask_column
from cagerisk.imaging.io import write_dicom_series


@pytest.fixture
def real_cohort(tiny_cohort: Path, tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    """A copy of the tiny cohort laid out as a hospital would send it (absolute paths)."""
    folder = tmp_path / "site"
    shutil.copytree(tiny_cohort / "cohort" / "images", folder / "images")
    frame = pd.read_csv(tiny_cohort / "cohort" / "manifest.csv")
    frame = frame.drop(columns=["split"])
    return frame, folder


def issues_by_patient(result) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for issue in result.issues:
        out.setdefault(issue.patient_id, set()).add(issue.field)
    return out


def test_every_bad_row_reported_at_once(real_cohort):
    frame, folder = real_cohort
    ids = list(frame["patient_id"])
    # 1: missing file
    frame.loc[0, "t2_image"] = "images/nowhere/t2.nii.gz"
    # 2: geometry mismatch (another patient's mask of a different size)
    frame.loc[1, "ct_mask"] = frame.loc[2, "t1_mask"]
    # 3: empty ROI (all discs erased from the T1 mask)
    t1_mask_path = folder / frame.loc[3, "t1_mask"]
    mask = sitk.ReadImage(str(t1_mask_path))
    arr = sitk.GetArrayFromImage(mask)
    arr[arr >= 11] = 0
    cleaned = sitk.GetImageFromArray(arr)
    cleaned.CopyInformation(mask)
    sitk.WriteImage(cleaned, str(t1_mask_path))
    # 4: unknown label value
    ax_path = folder / frame.loc[4, "t2ax_mask"]
    ax = sitk.ReadImage(str(ax_path))
    arr = sitk.GetArrayFromImage(ax)
    arr[arr == LABELS["psoas_left"]] = 77
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(ax)
    sitk.WriteImage(bad, str(ax_path))
    # 5: impossible clinical values
    frame.loc[5, "age"] = 150
    frame.loc[5, "sex"] = "X"
    frame.loc[6, "bmi"] = np.nan
    frame.loc[6, "osteoporosis"] = 2
    frame.loc[7, "fused_levels"] = "L6-S1"
    # 6: a corrupt image file
    corrupt = folder / "images" / "corrupt.nii.gz"
    corrupt.write_text("this is not an image")
    frame.loc[8, "t1ax_image"] = "images/corrupt.nii.gz"
    # 7: duplicate id
    frame.loc[9, "patient_id"] = ids[10]

    result = validate_manifest(frame, folder)
    found = issues_by_patient(result)
    assert found[ids[0]] == {"t2_image"}
    assert found[ids[1]] == {"ct_mask"}
    assert found[ids[3]] == {"t1_mask"}
    assert found[ids[4]] == {"t2ax_mask"}
    assert found[ids[5]] == {"age", "sex"}
    assert found[ids[6]] == {"bmi", "osteoporosis"}
    assert "fused_levels" in found[ids[7]]
    assert found[ids[8]] == {"t1ax_image"}
    assert "patient_id" in found[ids[10]]
    text = result.summary()
    assert f"patient {ids[1]}: ct_mask: geometry does not match" in text
    assert f"patient {ids[3]}: t1_mask: empty ROI 'disc'" in text
    assert f"patient {ids[4]}: t2ax_mask: unknown label value(s) [77]" in text
    assert f"patient {ids[5]}: age: 150" in text and "outside the possible range" in text
    assert "not a readable nifti image" in text and "file not found" in text
    kept = set(result.manifest["patient_id"])
    # both rows claiming the duplicated id are rejected: neither can be trusted to be that patient
    assert kept == set(ids) - {ids[i] for i in (0, 1, 3, 4, 5, 6, 7, 8, 9, 10)}
    assert len(kept) == 6


def test_nrrd_and_dicom_series_are_accepted(real_cohort):
    frame, folder = real_cohort
    row = frame.iloc[0]
    image = sitk.ReadImage(str(folder / row["ct_image"]))
    sitk.WriteImage(image, str(folder / "ct.nrrd"))
    sitk.WriteImage(sitk.ReadImage(str(folder / row["ct_mask"])), str(folder / "ct_mask.nrrd"))
    write_dicom_series(sitk.ReadImage(str(folder / row["t1_image"])), folder / "t1_dicom")
    frame.loc[0, ["ct_image", "ct_mask", "t1_image"]] = ["ct.nrrd", "ct_mask.nrrd", "t1_dicom"]
    result = validate_manifest(frame.iloc[:1], folder)
    assert result.issues == [], result.summary()


def test_missing_columns_are_a_manifest_error(real_cohort):
    frame, folder = real_cohort
    with pytest.raises(ManifestError, match="t2ax_mask"):
        validate_manifest(frame.drop(columns=["t2ax_mask"]), folder)
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(folder / "nope.csv")


def test_second_reader_mask_checked_too(real_cohort):
    frame, folder = real_cohort
    i = frame.index[frame[mask_column("t2", 2)].notna()][0]
    frame.loc[i, mask_column("t2", 2)] = frame.loc[i, "ct_mask"]
    result = validate_manifest(frame, folder)
    assert {(x.patient_id, x.field) for x in result.issues} == {(frame.loc[i, "patient_id"], "t2_mask_r2")}
