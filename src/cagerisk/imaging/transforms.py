"""MONAI dictionary transforms shared by training, embedding export and serving.

Two chains live here so that every consumer preprocesses a volume the same way:

- ``roi_transforms``: one (sequence, ROI) input of the ViT-3D. Load (or wrap an in-memory array),
  orient to RAS, keep the ROI's label values, crop to the ROI's bounding box plus a margin in mm,
  resize linearly to the network's cube, z-score. Works on file paths, nibabel images or
  ``MetaTensor``s, so the serving code can feed it uploaded arrays.
- ``ct_segmentation_transforms``: the CT input of the vertebra U-Net. Load, orient to RAS,
  resample to the network's spacing, window the Hounsfield units to [0, 1]; the mask (when
  present) keeps the vertebral-body labels only. Invertible, so a prediction maps back to the
  original CT grid with ``monai.transforms.Invertd``.

A dict passed through ``roi_transforms`` has ``image`` and ``mask`` (path / nibabel image /
array+affine) and ``label_values`` (the ROI's label values, e.g. from
``cagerisk.cohort.schema.roi_label_values``); ``patient_id``, ``sequence`` and ``roi`` are optional
and only name the input in error messages.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    Resized,
    ScaleIntensityRanged,
    Spacingd,
    SpatialCrop,
)
from monai.transforms.utils import generate_spatial_bounding_box

from cagerisk.imaging.io import ImageReadError, read_image

__all__ = [
    "CropToRoid",
    "EnsureVolumed",
    "KeepLabelsd",
    "apply_chain",
    "augment_transforms",
    "ct_segmentation_transforms",
    "describe_input",
    "metatensor_to_sitk",
    "roi_transforms",
    "sitk_to_metatensor",
    "volume_transforms",
]


def describe_input(data: Mapping[Hashable, Any]) -> str:
    """``patient P0001, t2 disc`` for error messages; empty parts are left out."""
    parts = []
    if data.get("patient_id") is not None:
        parts.append(f"patient {data['patient_id']}")
    seq_roi = " ".join(str(data[k]) for k in ("sequence", "roi") if data.get(k) is not None)
    if seq_roi:
        parts.append(seq_roi)
    return ", ".join(parts) or "input"


# SimpleITK works in LPS world coordinates, MONAI and nibabel in RAS.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def sitk_to_metatensor(image: sitk.Image) -> MetaTensor:
    """SimpleITK image -> channel-first float32 ``MetaTensor`` indexed (i, j, k) with its RAS affine."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"expected a scalar 3-D image, got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)).astype(np.float32, copy=False)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)[None, :]
    affine[:3, 3] = image.GetOrigin()
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None], affine=torch.as_tensor(_LPS_TO_RAS @ affine))


def metatensor_to_sitk(volume: MetaTensor, dtype: Any = np.float32) -> sitk.Image:
    """Channel-first ``MetaTensor`` (one channel) -> SimpleITK image with the same geometry."""
    array = np.asarray(volume.detach().cpu().numpy()[0], dtype=dtype)
    affine = _LPS_TO_RAS @ np.asarray(volume.affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in affine[:3, 3]))
    image.SetDirection(tuple(float(d) for d in (affine[:3, :3] / spacing[None, :]).ravel()))
    return image


def _as_channel_first(value: Any, key: Hashable, data: Mapping[Hashable, Any]) -> MetaTensor:
    """A path, SimpleITK / nibabel image, (array, affine) pair or MetaTensor -> channel-first MetaTensor."""
    if isinstance(value, (str, Path)):
        # Read through the project's reader (SimpleITK) so that radiomics, deep features and
        # serving agree on the geometry of every format (NIfTI, NRRD, DICOM series).
        try:
            return sitk_to_metatensor(read_image(value))
        except (ImageReadError, ValueError) as exc:
            raise ValueError(f"{describe_input(data)}: {key}: {exc}") from exc
    if isinstance(value, sitk.Image):
        return sitk_to_metatensor(value)
    if isinstance(value, MetaTensor):
        return value if value.ndim == 4 else value.unsqueeze(0)
    if hasattr(value, "affine") and hasattr(value, "dataobj"):  # nibabel image
        array = np.asarray(value.dataobj, dtype=np.float32)
        return MetaTensor(torch.from_numpy(array)[None], affine=torch.as_tensor(np.asarray(value.affine)))
    if isinstance(value, tuple) and len(value) == 2:
        array, affine = value
        tensor = torch.as_tensor(np.asarray(array, dtype=np.float32))
        return MetaTensor(tensor[None], affine=torch.as_tensor(np.asarray(affine, dtype=np.float64)))
    raise TypeError(
        f"{describe_input(data)}: {key} must be a path, a SimpleITK or nibabel image, an (array, RAS affine) "
        f"pair or a MetaTensor, got {type(value).__name__}"
    )


class EnsureVolumed(MapTransform):
    """Load each key from a file, or wrap an in-memory volume, as a channel-first ``MetaTensor``.

    The same chain then serves training (paths in a manifest) and scoring (arrays in a request).
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = _as_channel_first(d[key], key, d)
        return d


class KeepLabelsd(MapTransform):
    """Keep chosen label values of a label map.

    ``binary=True``: 1 where the value is one of the labels (an ROI mask); otherwise labels not in the
    set become 0 and the rest keep their value (the U-Net's class map). The values come from
    ``label_values`` or, per sample, from ``data[values_key]`` (each patient's ROI differs).
    """

    def __init__(
        self,
        keys: Sequence[str],
        label_values: Sequence[int] | None = None,
        values_key: str | None = "label_values",
        binary: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_values = None if label_values is None else [int(v) for v in label_values]
        self.values_key = values_key
        self.binary = binary

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        values = self.label_values
        if values is None:
            if self.values_key is None or self.values_key not in d:
                raise KeyError(f"{describe_input(d)}: no label values given (key {self.values_key!r} missing)")
            values = [int(v) for v in d[self.values_key]]
        for key in self.key_iterator(d):
            mask = d[key]
            # Label maps are read as float; round so that 5.9999 from a resampled file is still 6.
            labels = torch.round(torch.as_tensor(mask)).to(torch.int64)
            keep = torch.isin(labels, torch.tensor(values, dtype=torch.int64))
            out = keep.to(torch.float32) if self.binary else torch.where(keep, labels, 0).to(torch.float32)
            d[key] = MetaTensor(out, meta=mask.meta) if isinstance(mask, MetaTensor) else out
        return d


class CropToRoid(MapTransform):
    """Crop every key to the bounding box of ``source_key > 0`` plus ``margin_mm`` on each side.

    The margin is converted to voxels with each input's own spacing, so the context kept around an
    ROI is the same in millimetres whatever the scanner's resolution. An empty ROI is an error that
    names the input, since a silent full-volume crop would feed the network a different picture.
    """

    def __init__(
        self, keys: Sequence[str], source_key: str = "mask", margin_mm: float = 10.0, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key = source_key
        self.margin_mm = float(margin_mm)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = d[self.source_key]
        if not bool((torch.as_tensor(source) > 0).any()):
            raise ValueError(
                f"{describe_input(d)}: the ROI is empty in the mask (label values {list(d.get('label_values', []))} not found)"
            )
        spacing = _spacing(source)
        margin = [int(np.ceil(self.margin_mm / s)) for s in spacing]
        start, end = generate_spatial_bounding_box(source, margin=margin, allow_smaller=True)
        cropper = SpatialCrop(roi_start=start, roi_end=end)
        reference_shape = tuple(source.shape[1:])
        for key in self.key_iterator(d):
            if tuple(d[key].shape[1:]) != reference_shape:
                raise ValueError(
                    f"{describe_input(d)}: {key} has shape {tuple(d[key].shape[1:])} but the mask has "
                    f"{reference_shape}; image and mask must share one voxel grid"
                )
            d[key] = cropper(d[key])
        return d


def _spacing(volume: Any) -> list[float]:
    if isinstance(volume, MetaTensor):
        return [float(s) for s in volume.pixdim[: volume.ndim - 1]]
    return [1.0] * (volume.ndim - 1)


def apply_chain(chain: Compose, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
    """Run a transform chain; a failure re-raises the first error raised by our own code or a reader.

    MONAI wraps every error in ``RuntimeError("applying transform ...")``; unwrapping keeps the message
    that names the patient and file at the top of the traceback.
    """
    try:
        return chain(dict(data))
    except RuntimeError as exc:
        cause: BaseException | None = exc
        while isinstance(cause, RuntimeError) and str(cause).startswith("applying transform"):
            cause = cause.__cause__
        if cause is None or cause is exc:
            raise
        raise cause.with_traceback(cause.__traceback__) from None


def volume_transforms(keys: Sequence[str] = ("image", "mask")) -> Compose:
    """Load / wrap and orient to RAS: the part of ``roi_transforms`` shared by all ROIs of a volume.

    Export and serving run this once per (patient, sequence) and ``roi_transforms(load=False)``
    once per ROI, instead of reading the same file for every ROI.
    """
    return Compose([EnsureVolumed(keys=list(keys)), Orientationd(keys=list(keys), axcodes="RAS", labels=None)])


def roi_transforms(
    input_size: int | Sequence[int],
    margin_mm: float = 10.0,
    load: bool = True,
    keep_mask: bool = False,
) -> Compose:
    """The ViT-3D input chain for one (sequence, ROI): crop with margin, linear resize, z-score.

    Args:
        input_size: edge of the network's input cube (or its three edges).
        margin_mm: context kept around the ROI's bounding box, in millimetres.
        load: include ``volume_transforms`` (load / wrap, RAS orientation). ``False`` when the
            volumes already went through it.
        keep_mask: keep the cropped, resized ROI mask under ``mask`` (for inspection); by default
            it is dropped once the crop is done.
    """
    size = [int(input_size)] * 3 if isinstance(input_size, (int, np.integer)) else [int(s) for s in input_size]
    steps: list[Any] = list(volume_transforms().transforms) if load else []
    steps += [
        KeepLabelsd(keys=["mask"], binary=True),
        CropToRoid(keys=["image", "mask"], source_key="mask", margin_mm=margin_mm),
        # Linear resize; anti-aliasing because crops are mostly shrunk to the input cube.
        Resized(keys=["image"], spatial_size=size, mode="trilinear", anti_aliasing=True),
        NormalizeIntensityd(keys=["image"]),
    ]
    if keep_mask:
        steps.append(Resized(keys=["mask"], spatial_size=size, mode="nearest"))
    else:
        steps.append(_DropKeysd(keys=["mask"]))
    return Compose(steps)


class _DropKeysd(MapTransform):
    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            del d[key]
        return d


def augment_transforms(flip_prob: float = 0.5, rotate_deg: float = 5.0, noise_std: float = 0.05) -> Compose:
    """Training-time augmentation of a preprocessed ViT input (``image`` only).

    A left-right flip is anatomically plausible for the lumbar spine; small rotations and noise
    stand in for positioning and scanner differences between centres.
    """
    angle = float(np.deg2rad(rotate_deg))
    steps: list[Any] = []
    if flip_prob > 0:
        steps.append(RandFlipd(keys=["image"], prob=flip_prob, spatial_axis=0))
    if angle > 0:
        steps.append(RandAffined(keys=["image"], prob=0.5, rotate_range=(angle,) * 3, padding_mode="border"))
    if noise_std > 0:
        steps.append(RandGaussianNoised(keys=["image"], prob=0.5, std=noise_std))
    return Compose(steps)


def ct_segmentation_transforms(
    spacing_mm: Sequence[float],
    hu_window: Sequence[float] = (-200.0, 1300.0),
    label_values: Sequence[int] | None = None,
    with_mask: bool = True,
) -> Compose:
    """CT (and mask) for the vertebra U-Net: load / wrap, RAS, resample to ``spacing_mm``, window HU.

    The mask keeps ``label_values`` (vertebral bodies) with their values, so labels 1..6 are the
    class indices of a multi-class U-Net. Without ``with_mask`` only ``image`` is processed
    (inference on a new patient).
    """
    keys = ["image", "mask"] if with_mask else ["image"]
    modes = ["bilinear", "nearest"] if with_mask else ["bilinear"]
    steps: list[Any] = [
        EnsureVolumed(keys=keys),
        Orientationd(keys=keys, axcodes="RAS", labels=None),
        Spacingd(keys=keys, pixdim=[float(s) for s in spacing_mm], mode=modes),
        ScaleIntensityRanged(
            keys=["image"], a_min=float(hu_window[0]), a_max=float(hu_window[1]), b_min=0.0, b_max=1.0, clip=True
        ),
    ]
    if with_mask and label_values is not None:
        steps.append(KeepLabelsd(keys=["mask"], label_values=label_values, values_key=None, binary=False))
    return Compose(steps)
