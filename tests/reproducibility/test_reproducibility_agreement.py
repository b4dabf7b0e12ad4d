"""Mask agreement: Dice and Hausdorff distances against hand-computed answers and the metric's definition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy.spatial import cKDTree

from cagerisk.reproducibility import hausdorff_percentile, mask_agreement, summarise_agreement


def _image(array: np.ndarray, spacing=(2.0, 1.0, 1.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    return image


def test_two_cubes_one_voxel_apart():
    a = np.zeros((20, 20, 20), np.uint8)
    a[5:15, 5:15, 5:15] = 1
    b = np.zeros_like(a)
    b[5:15, 5:15, 6:16] = 1  # shifted one voxel along x, where the spacing is 2 mm
    result = mask_agreement(_image(a), _image(b))
    assert result["dice"] == pytest.approx(2 * 900 / 2000)
    assert result["hausdorff_mm"] == pytest.approx(2.0)
    assert result["hausdorff95_mm"] == pytest.approx(2.0)
    assert result["volume_r1_ml"] == pytest.approx(1000 * 2.0 / 1000)
    assert result["volume_difference_pct"] == 0.0
    same = mask_agreement(_image(a), _image(a))
    assert same["dice"] == 1.0 and same["hausdorff_mm"] == 0.0 and same["hausdorff95_mm"] == 0.0


def _brute_force_hd(a: np.ndarray, b: np.ndarray, spacing_zyx, q: float) -> float:
    """The definition itself: boundary = mask minus its 6-connected erosion; nearest boundary point by KD-tree."""
    from scipy import ndimage

    def edge_points(m):
        edge = m & ~ndimage.binary_erosion(m)
        return np.argwhere(edge) * np.asarray(spacing_zyx)

    pa, pb = edge_points(a), edge_points(b)
    d_ab = cKDTree(pb).query(pa)[0]
    d_ba = cKDTree(pa).query(pb)[0]
    return max(np.percentile(d_ab, q), np.percentile(d_ba, q))


def test_hd95_matches_its_definition_on_irregular_shapes():
    rng = np.random.default_rng(4)
    z, y, x = np.mgrid[:24, :30, :28]
    blob = ((z - 12) / 8.0) ** 2 + ((y - 15) / 10.0) ** 2 + ((x - 14) / 9.0) ** 2
    a = blob < 1.0
    b = (blob + rng.normal(0, 0.15, blob.shape)) < 1.05
    b[2, 2, 2] = True  # one stray voxel: moves the maximum, barely the 95th percentile
    spacing_zyx = (3.0, 0.8, 0.8)
    hd95 = hausdorff_percentile(a, b, spacing_zyx, 95)
    assert hd95 == pytest.approx(_brute_force_hd(a, b, spacing_zyx, 95), rel=1e-9)
    assert hausdorff_percentile(a, b, spacing_zyx, 100) == pytest.approx(_brute_force_hd(a, b, spacing_zyx, 100), rel=1e-9)
    full = mask_agreement(_image(a, spacing_zyx[::-1]), _image(b, spacing_zyx[::-1]))
    assert full["hausdorff95_mm"] == pytest.approx(hd95)
    assert full["hausdorff95_mm"] < full["hausdorff_mm"]
    assert np.isinf(hausdorff_percentile(a, np.zeros_like(a), spacing_zyx))


def test_summary_per_roi():
    table = pd.DataFrame(
        {
            "patient_id": ["P1", "P2", "P3", "P1"],
            "sequence": ["t2", "t2", "t2", "ct"],
            "roi": ["disc", "disc", "disc", "vertebra"],
            "dice": [0.8, 0.9, 0.7, 0.95],
            "hausdorff_mm": [3.0, 2.0, 4.0, 1.0],
            "hausdorff95_mm": [2.0, 1.0, 3.0, 1.0],
            "average_hausdorff_mm": [0.3, 0.2, 0.4, 0.1],
            "volume_r1_ml": [1.0, 1.0, 1.0, 1.0],
            "volume_r2_ml": [1.1, 0.9, 1.0, 1.0],
            "volume_difference_pct": [10.0, -10.0, 0.0, 0.0],
        }
    )
    summary = summarise_agreement(table).set_index(["sequence", "roi"])
    assert summary.loc[("t2", "disc"), "n_patients"] == 3
    assert summary.loc[("t2", "disc"), "dice_median"] == pytest.approx(0.8)
    assert summary.loc[("t2", "disc"), "dice_q1"] == pytest.approx(0.75)
    assert summary.loc[("ct", "vertebra"), "hausdorff95_mm_median"] == 1.0


def test_bad_second_reader_masks_fail_only_their_rois(tmp_path):
    from cagerisk.reproducibility.agreement import AgreementTask, agreement_for_task

    labels = np.zeros((12, 10, 10), np.uint8)
    labels[2:5, 2:8, 2:8] = 4  # vertebra L4
    labels[6:9, 2:8, 2:8] = 14  # disc L4-L5
    image = _image(labels * 10.0, spacing=(1.0, 1.0, 1.0))
    paths = {}
    for name, array, spacing in (
        ("image", labels * 10, (1.0, 1.0, 1.0)),
        ("r1", labels, (1.0, 1.0, 1.0)),
        ("r2_no_disc", np.where(labels == 14, 0, labels), (1.0, 1.0, 1.0)),
        ("r2_off_grid", labels, (1.0, 1.0, 1.2)),
    ):
        paths[name] = str(tmp_path / f"{name}.nii.gz")
        sitk.WriteImage(_image(array, spacing), paths[name])
    assert image.GetSize() == (10, 10, 12)

    def task(r2: str) -> AgreementTask:
        return AgreementTask("P7", "t2", (("vertebra", (4,)), ("disc", (14,))), paths["image"], paths["r1"], paths[r2])

    rows, failures = agreement_for_task(task("r2_no_disc"))
    assert [r["roi"] for r in rows] == ["vertebra"] and rows[0]["dice"] == 1.0
    assert len(failures) == 1 and "patient P7, sequence t2, ROI disc: empty ROI in second-reader mask" in failures[0]["error"]
    rows, failures = agreement_for_task(task("r2_off_grid"))
    assert rows == [] and [f["roi"] for f in failures] == ["vertebra", "disc"]
    assert (
        "second-reader mask" in failures[0]["error"]
        and "not on the grid" in failures[0]["error"]
        and "spacing" in failures[0]["error"]
    )
