"""The shared MONAI preprocessing: geometry, ROI crop with margin, in-memory parity, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from cagerisk.imaging.transforms import (
    CropToRoid,
    KeepLabelsd,
    apply_chain,
    metatensor_to_sitk,
    roi_transforms,
    sitk_to_metatensor,
    volume_transforms,
)


def make_volume(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), spacing=(2.0, 1.5, 3.0), origin=(10.0, -20.0, 5.0)):
    """A 30x40x20 (i, j, k) image with a box of label 3 at i 10..19, j 15..24, k 5..9 and label 4 above it."""
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 10.0, size=(30, 40, 20)).astype(np.float32)
    labels = np.zeros((30, 40, 20), dtype=np.uint8)
    labels[10:20, 15:25, 5:10] = 3
    labels[10:20, 15:25, 12:16] = 4
    image[labels > 0] += 300.0

    def to_sitk(array):
        img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
        img.SetSpacing(spacing)
        img.SetOrigin(origin)
        img.SetDirection(direction)
        return img

    return to_sitk(image), to_sitk(labels)


def test_sitk_round_trip_keeps_geometry_and_voxels():
    image, _ = make_volume(direction=(0, 0, -1, 1, 0, 0, 0, -1, 0))  # a sagittal-like rotation
    volume = sitk_to_metatensor(image)
    assert tuple(volume.shape) == (1, 30, 40, 20)
    # Voxel (i, j, k) -> LPS point of SimpleITK -> RAS = diag(-1, -1, 1) * LPS.
    index = (3, 7, 11)
    lps = np.asarray(image.TransformIndexToPhysicalPoint(index))
    ras = (np.asarray(volume.affine) @ np.array([*index, 1.0]))[:3]
    np.testing.assert_allclose(ras, lps * np.array([-1, -1, 1]), atol=1e-6)
    back = metatensor_to_sitk(volume)
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing())
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


def test_crop_to_roi_adds_the_margin_in_millimetres():
    image, labels = make_volume()
    data = {"image": sitk_to_metatensor(image), "mask": sitk_to_metatensor(labels), "label_values": [3]}
    data = KeepLabelsd(keys=["mask"])(data)
    out = CropToRoid(keys=["image", "mask"], margin_mm=6.0)(data)
    # Box of 10 x 10 x 5 voxels; 6 mm is 3 voxels at 2 mm, 4 at 1.5 mm, 2 at 3 mm on each side.
    assert tuple(out["image"].shape[1:]) == (10 + 6, 10 + 8, 5 + 4)
    assert float(out["mask"].sum()) == 10 * 10 * 5
    # The crop's origin moved by (start voxel) * spacing along each axis.
    start = np.array([10 - 3, 15 - 4, 5 - 2])
    expected = np.asarray(data["image"].affine) @ np.array([*start, 1.0])
    np.testing.assert_allclose(np.asarray(out["image"].affine)[:, 3], expected, atol=1e-6)


def test_roi_transforms_output_is_a_z_scored_cube_and_path_equals_memory(tmp_path: Path):
    image, labels = make_volume(direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(tmp_path / "image.nii.gz"))
    sitk.WriteImage(labels, str(tmp_path / "mask.nii.gz"))
    chain = roi_transforms(16, margin_mm=5.0)
    from_files = apply_chain(
        chain, {"image": str(tmp_path / "image.nii.gz"), "mask": str(tmp_path / "mask.nii.gz"), "label_values": [3, 4]}
    )["image"]
    from_memory = apply_chain(chain, {"image": image, "mask": labels, "label_values": [3, 4]})["image"]
    assert tuple(from_files.shape) == (1, 16, 16, 16)
    assert abs(float(from_files.mean())) < 1e-4 and abs(float(from_files.std()) - 1.0) < 1e-2
    torch.testing.assert_close(torch.as_tensor(from_files), torch.as_tensor(from_memory))


def test_volume_transforms_orient_to_ras():
    image, labels = make_volume(direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))  # RAS-stored
    out = volume_transforms()({"image": image, "mask": labels})
    affine = np.asarray(out["image"].affine)[:3, :3]
    assert np.all(np.diag(affine) > 0), "RAS: every axis increases along R, A, S"


def test_empty_roi_and_bad_files_name_the_patient(tmp_path: Path):
    image, labels = make_volume()
    with pytest.raises(ValueError, match=r"patient P0042, t2 disc: the ROI is empty"):
        apply_chain(
            roi_transforms(16),
            {"image": image, "mask": labels, "label_values": [11], "patient_id": "P0042", "sequence": "t2", "roi": "disc"},
        )
    missing = tmp_path / "nope.nii.gz"
    with pytest.raises(ValueError, match=r"patient P0042.*nope\.nii\.gz"):
        apply_chain(roi_transforms(16), {"image": str(missing), "mask": labels, "label_values": [3], "patient_id": "P0042"})
    small = sitk.Image(5, 5, 5, sitk.sitkUInt8)
    with pytest.raises(ValueError, match=r"image has shape .* but the mask has"):
        apply_chain(roi_transforms(16, load=True), {"image": image, "mask": _with_label(small), "label_values": [1]})


def _with_label(img: sitk.Image) -> sitk.Image:
    arr = sitk.GetArrayFromImage(img)
    arr[1:3, 1:3, 1:3] = 1
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out
