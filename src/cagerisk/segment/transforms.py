"""The U-Nets' input chain for any sequence: the CT's (HU window) or the MRI's (percentile scaling)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.transforms import Compose, Orientationd, ScaleIntensityRangePercentilesd, Spacingd

from cagerisk.imaging.transforms import EnsureVolumed, KeepLabelsd, ct_segmentation_transforms

__all__ = ["MRI_PERCENTILES", "segmentation_transforms"]

# MRI intensities have no unit: each image is scaled by its own percentiles, so scanners and centres
# with different gains give the network the same range; the tails (fat, flow artefacts) are clipped.
MRI_PERCENTILES = (0.5, 99.5)


def segmentation_transforms(
    spacing_mm: Sequence[float],
    hu_window: Sequence[float] | None,
    label_values: Sequence[int] | None = None,
    with_mask: bool = True,
) -> Compose:
    """Load / wrap, RAS, resample to ``spacing_mm``, scale to [0, 1]: the HU window (CT) or, with
    ``hu_window=None``, the image's ``MRI_PERCENTILES``. The mask keeps ``label_values``."""
    if hu_window is not None:
        return ct_segmentation_transforms(spacing_mm, hu_window, label_values=label_values, with_mask=with_mask)
    keys = ["image", "mask"] if with_mask else ["image"]
    modes = ["bilinear", "nearest"] if with_mask else ["bilinear"]
    lower, upper = MRI_PERCENTILES
    steps: list[Any] = [
        EnsureVolumed(keys=keys),
        Orientationd(keys=keys, axcodes="RAS", labels=None),
        Spacingd(keys=keys, pixdim=[float(s) for s in spacing_mm], mode=modes),
        ScaleIntensityRangePercentilesd(keys=["image"], lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True),
    ]
    if with_mask and label_values is not None:
        steps.append(KeepLabelsd(keys=["mask"], label_values=label_values, values_key=None, binary=False))
    return Compose(steps)
