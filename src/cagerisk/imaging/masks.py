"""Binary ROI masks from label maps.

A manifest mask is a label map (``cagerisk.cohort.schema.LABELS``); an ROI is the union of some of its
label values (e.g. the vertebral bodies of the fused levels and their neighbours). PyRadiomics takes one
label value, so the union is turned into a binary mask with value 1 on the label map's own grid.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import SimpleITK as sitk

ROI_LABEL = 1


class EmptyRoiError(ValueError):
    """None of the ROI's label values is present in the label map."""


def label_values_present(label_map: sitk.Image) -> list[int]:
    """Non-zero label values of a label map, sorted."""
    values = np.unique(sitk.GetArrayViewFromImage(label_map))
    return [int(v) for v in values if v != 0]


def binary_roi_mask(label_map: sitk.Image, label_values: Iterable[int]) -> sitk.Image:
    """UInt8 mask, 1 where the label map holds any of ``label_values``, with the label map's geometry.

    Raises ``EmptyRoiError`` (listing the labels that are present) when the union is empty, so that an
    ROI missing from a segmentation is reported instead of silently giving NaN features.
    """
    wanted = sorted({int(v) for v in label_values})
    if not wanted:
        raise EmptyRoiError("no label values given for the ROI")
    if label_map.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"label map has {label_map.GetNumberOfComponentsPerPixel()} components per voxel; expected a scalar label map"
        )
    labels = sitk.GetArrayViewFromImage(label_map)
    inside = np.isin(labels, wanted)
    if not inside.any():
        raise EmptyRoiError(f"no voxel with label values {wanted}; labels present: {label_values_present(label_map) or 'none'}")
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(label_map)
    return mask
