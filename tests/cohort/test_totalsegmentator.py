"""TotalSegmentator adapters: small label maps with TotalSegmentator's class ids, checked voxel for voxel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cagerisk.cohort.schema import LABELS
from cagerisk.cohort.totalsegmentator import (
    TOTALSEGMENTATOR_IDS,
    AdapterError,
    adapt_multilabel,
    adapt_structure_folder,
)

SHAPE = (12, 10, 8)  # z, y, x


def image_of(array: np.ndarray, origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing((1.5, 1.0, 2.0))
    image.SetOrigin(origin)
    return image


def ct_total_map() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A 'total' multi-label map: L3, L4, L5, S1 stacked in z, sacrum below, both psoas, one liver voxel."""
    ids = TOTALSEGMENTATOR_IDS["total"]
    arr = np.zeros(SHAPE, dtype=np.uint8)
    blocks = {"vertebrae_L3": 8, "vertebrae_L4": 6, "vertebrae_L5": 4, "vertebrae_S1": 2, "sacrum": 0}
    for name, z in blocks.items():
        arr[z : z + 2, 3:7, 3:6] = ids[name]
    arr[4:8, 1:3, 0:2] = ids["iliopsoas_left"]
    arr[4:8, 1:3, 6:8] = ids["iliopsoas_right"]
    arr[11, 9, 7] = 5  # liver: a class cagerisk does not use
    return arr, {name: arr == ids[name] for name in ids}


def test_multilabel_total_ct_voxel_for_voxel(tmp_path: Path):
    arr, where = ct_total_map()
    path = tmp_path / "ts.nii.gz"
    sitk.WriteImage(image_of(arr), str(path))
    out = adapt_multilabel(path, "total", "ct", patient="P001")
    got = sitk.GetArrayFromImage(out.image)
    expected = np.zeros(SHAPE, dtype=np.uint8)
    for level in ("L3", "L4", "L5", "S1"):
        expected[where[f"vertebrae_{level}"]] = LABELS[f"vertebra_{level}"]
    np.testing.assert_array_equal(got, expected)  # muscles, sacrum and liver are not CT structures
    assert out.found == ["vertebra_L3", "vertebra_L4", "vertebra_L5", "vertebra_S1"]
    assert out.missing == ["vertebra_L1", "vertebra_L2"]
    assert out.image.GetSpacing() == (1.5, 1.0, 2.0)


def test_multilabel_total_mr_axial_muscles(tmp_path: Path):
    ids = TOTALSEGMENTATOR_IDS["total_mr"]
    arr = np.zeros(SHAPE, dtype=np.uint8)
    arr[2:6, 1:4, 0:3] = ids["iliopsoas_left"]
    arr[2:6, 1:4, 5:8] = ids["iliopsoas_right"]
    arr[2:6, 6:9, 0:3] = ids["autochthon_left"]
    arr[2:6, 6:9, 5:8] = ids["autochthon_right"]
    arr[0, 0, 0] = ids["vertebrae"]
    sitk.WriteImage(image_of(arr), str(tmp_path / "mr.nii.gz"))
    out = adapt_multilabel(tmp_path / "mr.nii.gz", "total_mr", "t2ax", patient="P002")
    got = sitk.GetArrayFromImage(out.image)
    expected = np.zeros(SHAPE, dtype=np.uint8)
    for ts, ours in [
        ("iliopsoas_left", "psoas_left"),
        ("iliopsoas_right", "psoas_right"),
        ("autochthon_left", "paraspinal_left"),
        ("autochthon_right", "paraspinal_right"),
    ]:
        expected[arr == ids[ts]] = LABELS[ours]
    np.testing.assert_array_equal(got, expected)
    assert out.missing == ["quadratus_left", "quadratus_right"]


def test_vertebrae_mr_sacrum_stands_in_for_s1_and_says_so(tmp_path: Path):
    ids = TOTALSEGMENTATOR_IDS["vertebrae_mr"]
    arr = np.zeros(SHAPE, dtype=np.uint8)
    arr[0:3, 3:7, 3:6] = ids["sacrum"]
    arr[4:6, 3:7, 3:6] = ids["vertebrae_L5"]
    sitk.WriteImage(image_of(arr), str(tmp_path / "v.nii.gz"))
    out = adapt_multilabel(tmp_path / "v.nii.gz", "vertebrae_mr", "t2")
    got = sitk.GetArrayFromImage(out.image)
    assert (got[arr == ids["sacrum"]] == LABELS["vertebra_S1"]).all()
    assert (got[arr == ids["vertebrae_L5"]] == LABELS["vertebra_L5"]).all()
    assert "disc_L4-L5" in out.missing and any("sacrum" in n for n in out.notes)


def test_folder_of_structures_equals_the_multilabel_file(tmp_path: Path):
    arr, where = ct_total_map()
    folder = tmp_path / "segmentations"
    folder.mkdir()
    for name, voxels in where.items():
        if voxels.any():
            sitk.WriteImage(image_of(voxels), str(folder / f"{name}.nii.gz"))
    sitk.WriteImage(image_of(arr), str(tmp_path / "ts.nii.gz"))
    from_folder = adapt_structure_folder(folder, "total", "ct", patient="P001", reference=image_of(np.zeros(SHAPE)))
    from_file = adapt_multilabel(tmp_path / "ts.nii.gz", "total", "ct", patient="P001")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(from_folder.image), sitk.GetArrayFromImage(from_file.image))
    assert from_folder.missing == from_file.missing


def test_unknown_label_id_names_patient_and_file(tmp_path: Path):
    arr, _ = ct_total_map()
    arr[0, 0, 0] = 200
    sitk.WriteImage(image_of(arr), str(tmp_path / "bad.nii.gz"))
    with pytest.raises(AdapterError, match=r"patient P009.*bad\.nii\.gz.*\[200\]"):
        adapt_multilabel(tmp_path / "bad.nii.gz", "total", "ct", patient="P009")


def test_no_lumbar_vertebra_is_an_error(tmp_path: Path):
    arr = np.zeros(SHAPE, dtype=np.uint8)
    arr[2:4, 2:4, 2:4] = TOTALSEGMENTATOR_IDS["total"]["sacrum"]
    sitk.WriteImage(image_of(arr), str(tmp_path / "thorax.nii.gz"))
    with pytest.raises(AdapterError, match=r"patient P010.*no lumbar vertebra"):
        adapt_multilabel(tmp_path / "thorax.nii.gz", "total", "ct", patient="P010")


def test_folder_file_on_another_grid_is_named(tmp_path: Path):
    folder = tmp_path / "seg"
    folder.mkdir()
    block = np.zeros(SHAPE, dtype=np.uint8)
    block[4:6, 3:7, 3:6] = 1
    sitk.WriteImage(image_of(block, origin=(9.0, 0.0, 0.0)), str(folder / "vertebrae_L4.nii.gz"))
    with pytest.raises(AdapterError, match=r"patient P011.*vertebrae_L4\.nii\.gz is not on the image's grid"):
        adapt_structure_folder(folder, "total", "ct", patient="P011", reference=image_of(np.zeros(SHAPE)))


def test_overlapping_structure_files_are_refused(tmp_path: Path):
    folder = tmp_path / "seg"
    folder.mkdir()
    block = np.zeros(SHAPE, dtype=np.uint8)
    block[4:6, 3:7, 3:6] = 1
    sitk.WriteImage(image_of(block), str(folder / "vertebrae_L4.nii.gz"))
    sitk.WriteImage(image_of(block), str(folder / "vertebrae_L5.nii.gz"))
    with pytest.raises(AdapterError, match="overlaps"):
        adapt_structure_folder(folder, "total", "ct", patient="P012")
