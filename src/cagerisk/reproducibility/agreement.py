"""Agreement between two readers' masks of the same ROI: Dice and Hausdorff distances, in millimetres.

Dice, the Hausdorff distance and the average Hausdorff distance are SimpleITK's filters
(``LabelOverlapMeasuresImageFilter``, ``HausdorffDistanceImageFilter``), which use the image spacing.
The 95th-percentile Hausdorff distance (HD95, robust to a single stray voxel) follows MONAI's
``compute_hausdorff_distance(percentile=95)`` definition: boundary voxels are the mask minus its
erosion, distances from each boundary voxel to the other mask's boundary, the 95th percentile of each
direction, the larger of the two. It is computed here with scipy's Euclidean distance transform so that
the stage does not import torch and MONAI (~12 s of CPU) for one number; the tests check it against
MONAI.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from cagerisk.cohort import schema
from cagerisk.imaging.io import ImageReadError, read_image, read_image_header, same_geometry
from cagerisk.imaging.masks import EmptyRoiError, binary_roi_mask

log = logging.getLogger(__name__)

AGREEMENT_COLUMNS = (
    "patient_id",
    "sequence",
    "roi",
    "dice",
    "hausdorff_mm",
    "hausdorff95_mm",
    "average_hausdorff_mm",
    "volume_r1_ml",
    "volume_r2_ml",
    "volume_difference_pct",
)


class MaskAgreementError(ValueError):
    """Two readers' masks that cannot be compared; the message names patient, sequence, ROI and file."""


def _boundary(mask: np.ndarray) -> np.ndarray:
    # MONAI's get_mask_edges: the mask minus its erosion by the face-connected structuring element.
    return mask & ~ndimage.binary_erosion(mask)


def hausdorff_percentile(a: np.ndarray, b: np.ndarray, spacing_zyx: Sequence[float], percentile: float = 95.0) -> float:
    """Symmetric percentile Hausdorff distance between the boundaries of two boolean masks (array order)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if not a.any() or not b.any():
        return float("inf")
    edge_a, edge_b = _boundary(a), _boundary(b)
    # Distance of every voxel to the nearest boundary voxel of the other mask (EDT of the complement).
    to_b = ndimage.distance_transform_edt(~edge_b, sampling=spacing_zyx)
    to_a = ndimage.distance_transform_edt(~edge_a, sampling=spacing_zyx)
    return float(max(np.percentile(to_b[edge_a], percentile), np.percentile(to_a[edge_b], percentile)))


def mask_agreement(mask_r1: sitk.Image, mask_r2: sitk.Image) -> dict[str, float]:
    """Dice, Hausdorff (max, 95th percentile, average) in mm and volumes in ml of two binary masks on one grid."""
    a = sitk.GetArrayViewFromImage(mask_r1) > 0
    b = sitk.GetArrayViewFromImage(mask_r2) > 0
    voxel_ml = float(np.prod(mask_r1.GetSpacing())) / 1000.0
    v1, v2 = float(a.sum()) * voxel_ml, float(b.sum()) * voxel_ml
    r1 = sitk.Cast(mask_r1 > 0, sitk.sitkUInt8)
    r2 = sitk.Cast(mask_r2 > 0, sitk.sitkUInt8)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(r1, r2)
    hausdorff = sitk.HausdorffDistanceImageFilter()  # physical units (mm): it uses the image spacing
    hausdorff.Execute(r1, r2)
    return {
        "dice": float(overlap.GetDiceCoefficient()),
        "hausdorff_mm": float(hausdorff.GetHausdorffDistance()),
        "hausdorff95_mm": hausdorff_percentile(a, b, mask_r1.GetSpacing()[::-1], 95.0),
        "average_hausdorff_mm": float(hausdorff.GetAverageHausdorffDistance()),
        "volume_r1_ml": v1,
        "volume_r2_ml": v2,
        "volume_difference_pct": 100.0 * (v2 - v1) / v1 if v1 > 0 else float("nan"),
    }


@dataclass(frozen=True)
class AgreementTask:
    patient_id: str
    sequence: str
    rois: tuple[tuple[str, tuple[int, ...]], ...]  # (ROI, label values) of this patient's sequence
    image: str
    mask_r1: str
    mask_r2: str


def agreement_tasks(manifest: pd.DataFrame, sequences: Iterable[str]) -> tuple[list[AgreementTask], list[dict[str, str]]]:
    """One task per (patient, sequence) that has a second-reader mask; unusable rows become failures."""
    tasks: list[AgreementTask] = []
    failures: list[dict[str, str]] = []
    pairs = schema.sequence_rois()
    for _, row in manifest.iterrows():
        pid = str(row[schema.ID])
        for seq in sequences:
            r2_col = schema.mask_column(seq, 2)
            mask_r2 = row.get(r2_col)
            if mask_r2 is None or (isinstance(mask_r2, float) and np.isnan(mask_r2)) or not str(mask_r2).strip():
                continue
            rois = []
            for s, roi in pairs:
                if s != seq:
                    continue
                try:
                    rois.append((roi, tuple(schema.roi_label_values(row["fused_levels"], roi))))
                except (ValueError, KeyError) as err:
                    failures.append(
                        _failure(pid, seq, roi, type(err).__name__, f"patient {pid}, sequence {seq}, ROI {roi}: {err}")
                    )
            tasks.append(
                AgreementTask(
                    patient_id=pid,
                    sequence=seq,
                    rois=tuple(rois),
                    image=str(row[schema.image_column(seq)]),
                    mask_r1=str(row[schema.mask_column(seq, 1)]),
                    mask_r2=str(mask_r2),
                )
            )
    return tasks, failures


def _failure(pid: str, seq: str, roi: str, error_type: str, error: str) -> dict[str, str]:
    return {"patient_id": pid, "sequence": seq, "roi": roi, "step": "mask_agreement", "error_type": error_type, "error": error}


def agreement_for_task(task: AgreementTask) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Rows of every ROI of one (patient, sequence); a bad mask fails its ROIs only, named in the error."""
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    where = f"patient {task.patient_id}, sequence {task.sequence}"

    def fail_all(err: Exception, message: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        for roi, _ in task.rois:
            failures.append(_failure(task.patient_id, task.sequence, roi, type(err).__name__, f"{where}, ROI {roi}: {message}"))
        return rows, failures

    try:
        image = read_image_header(task.image)
        label_r1 = read_image(task.mask_r1)
        label_r2 = read_image(task.mask_r2)
    except ImageReadError as err:
        return fail_all(err, str(err))
    for name, path, label_map in (("first-reader", task.mask_r1, label_r1), ("second-reader", task.mask_r2, label_r2)):
        same, why = same_geometry(image, label_map)
        if not same:
            return fail_all(
                MaskAgreementError(why),
                f"{name} mask {path} is not on the grid of image {task.image} ({why}); expected the same size, "
                "spacing, origin and direction",
            )
    for roi, labels in task.rois:
        masks = []
        for name, path, label_map in (("first-reader", task.mask_r1, label_r1), ("second-reader", task.mask_r2, label_r2)):
            try:
                masks.append(binary_roi_mask(label_map, labels))
            except EmptyRoiError as err:
                failures.append(
                    _failure(
                        task.patient_id,
                        task.sequence,
                        roi,
                        "EmptyRoiError",
                        f"{where}, ROI {roi}: empty ROI in {name} mask {path}: {err}",
                    )
                )
                break
        if len(masks) == 2:
            rows.append({"patient_id": task.patient_id, "sequence": task.sequence, "roi": roi, **mask_agreement(*masks)})
    return rows, failures


def mask_agreement_table(
    manifest: pd.DataFrame, sequences: Iterable[str], show_progress: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dice and Hausdorff per (patient, sequence, ROI) with a second-reader mask, and the failures."""
    from cagerisk.radiomics.progress import RoiProgress

    tasks, failures = agreement_tasks(manifest, list(sequences))
    rows: list[dict[str, Any]] = []
    n_rois = sum(len(t.rois) for t in tasks)
    progress = RoiProgress(n_rois, "mask agreement") if show_progress and n_rois else None
    with progress or contextlib.nullcontext():
        for task in tasks:
            task_rows, task_failures = agreement_for_task(task)
            rows += task_rows
            failures += task_failures
            for failure in task_failures:
                log.error("mask agreement failed: %s", failure["error"])
            if progress is not None:
                for ok in [True] * len(task_rows) + [False] * len(task_failures):
                    progress.advance(ok)
    table = pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS))
    return table, pd.DataFrame(failures, columns=["patient_id", "sequence", "roi", "step", "error_type", "error"])


def summarise_agreement(table: pd.DataFrame) -> pd.DataFrame:
    """Per (sequence, ROI): patients, Dice median [IQR] and mean, Hausdorff and HD95 medians."""
    if table.empty:
        return pd.DataFrame(
            columns=[
                "sequence",
                "roi",
                "n_patients",
                "dice_median",
                "dice_q1",
                "dice_q3",
                "dice_mean",
                "dice_min",
                "hausdorff_mm_median",
                "hausdorff95_mm_median",
                "volume_difference_pct_median",
            ]
        )
    grouped = table.groupby(["sequence", "roi"], sort=False)
    summary = grouped.agg(
        n_patients=("patient_id", "nunique"),
        dice_median=("dice", "median"),
        dice_q1=("dice", lambda s: s.quantile(0.25)),
        dice_q3=("dice", lambda s: s.quantile(0.75)),
        dice_mean=("dice", "mean"),
        dice_min=("dice", "min"),
        hausdorff_mm_median=("hausdorff_mm", "median"),
        hausdorff95_mm_median=("hausdorff95_mm", "median"),
        volume_difference_pct_median=("volume_difference_pct", "median"),
    )
    return summary.reset_index()
