"""Checks of scoring input: clinical values, precomputed features, uploaded images and masks.

Every check raises :class:`~cagerisk.serving.errors.ScoringInputError` naming the field (``clinical.age``,
``t2_mask``, ``features``) and what was expected. Messages never repeat a patient identifier or a
file name, since they go to logs and back to the caller.
"""

from __future__ import annotations

import gzip
import math
import numbers
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from cagerisk.cohort.schema import CLINICAL, LEVELS, allowed_label_values, parse_levels
from cagerisk.imaging.io import ImageReadError, read_image, same_geometry
from cagerisk.serving.errors import ScoringInputError, missing

CLINICAL_BY_NAME = {v.name: v for v in CLINICAL}
# Counts and flags are whole numbers: they travel as integers (MLflow signature type "long").
INTEGER_CLINICAL = frozenset({"n_levels", *(v.name for v in CLINICAL if v.kind == "binary")})
FUSED_LEVELS = "fused_levels"
# Clinical JSON keys besides the model's variables: fused levels choose the ROIs of image scoring.
CLINICAL_KEYS: tuple[str, ...] = (*CLINICAL_BY_NAME, FUSED_LEVELS)
IMAGE_SUFFIXES = {"nifti": ".nii", "nifti-gz": ".nii.gz", "nrrd": ".nrrd"}
EXPECTED_IMAGE = "a NIfTI (.nii, .nii.gz) or NRRD (.nrrd) 3-D image"
# 2^28 voxels (e.g. 512 x 512 x 1024): far above any spine CT or MRI, far below what exhausts memory.
MAX_VOXELS = 1 << 28
# Largest magnitude of a feature value: far above any radiomics feature, far below what overflows the
# signature pipelines' float64 arithmetic (scaling, PCA, logistic) into inf.
FEATURE_LIMIT = 1e15


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_clinical_value(name: str, value: Any, prefix: str = "clinical") -> Any:
    """One clinical value, type- and range-checked against the cohort schema; returns it normalised."""
    field = f"{prefix}.{name}"
    if name == FUSED_LEVELS:
        if not isinstance(value, str):
            raise ScoringInputError(field, f"expected a text like 'L4-L5;L5-S1' with levels among {list(LEVELS)}")
        try:
            return ";".join(parse_levels(value))
        except ValueError:
            raise ScoringInputError(field, f"expected ';'-separated levels among {list(LEVELS)}") from None
    variable = CLINICAL_BY_NAME.get(name)
    if variable is None:
        raise ScoringInputError(field, f"unknown clinical variable; expected among {list(CLINICAL_KEYS)}")
    if variable.kind == "categorical":
        if not isinstance(value, str) or value not in variable.categories:
            raise ScoringInputError(field, f"expected one of {list(variable.categories)}")
        return value
    if not _is_number(value):
        raise ScoringInputError(field, "expected a number")
    number = float(value)
    if not math.isfinite(number):
        raise ScoringInputError(field, "is NaN or infinite; expected a finite number")
    if variable.kind == "binary":
        if number not in (0.0, 1.0):
            raise ScoringInputError(field, "expected 0 or 1")
        return int(number)
    if (variable.low is not None and number < variable.low) or (variable.high is not None and number > variable.high):
        raise ScoringInputError(field, f"{number:g} is out of range; expected {variable.low:g} to {variable.high:g}")
    if name in INTEGER_CLINICAL:
        if not number.is_integer():
            raise ScoringInputError(field, f"{number:g} is not a whole number")
        return int(number)
    return number


def check_clinical(values: Mapping[str, Any] | None, required: Iterable[str], prefix: str = "clinical") -> dict[str, Any]:
    """All clinical values of one patient: required ones present, every given one valid.

    Unknown keys are refused (a misspelt variable would otherwise be silently missing); ``None``
    counts as not given.
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ScoringInputError(prefix, "expected a JSON object of clinical values")
    given = {str(k): v for k, v in values.items() if v is not None}
    for name in required:
        if name not in given:
            raise missing(f"{prefix}.{name}", "required by the model and not given")
    checked = {name: check_clinical_value(name, value, prefix) for name, value in given.items()}
    if FUSED_LEVELS in checked and "n_levels" in checked:
        n_fused = len(checked[FUSED_LEVELS].split(";"))
        if int(checked["n_levels"]) != n_fused:
            raise ScoringInputError(f"{prefix}.n_levels", f"is {checked['n_levels']:g} but fused_levels lists {n_fused} level(s)")
    return checked


def check_features(features: Mapping[str, Any] | None, required: Sequence[str], field: str = "features") -> dict[str, float]:
    """Precomputed features: every required name present; extras are ignored.

    A value may be missing (None or NaN): the signature pipeline imputes it with the training median,
    exactly as it did for a feature PyRadiomics could not compute at training time. Anything else
    must be a finite number.
    """
    if not isinstance(features, Mapping):
        raise missing(field, "expected a JSON object mapping feature names to numbers")
    absent = [name for name in required if name not in features]
    if absent:
        raise missing(field, f"{len(absent)} required feature(s) missing, e.g. {absent[:5]}")
    out: dict[str, float] = {}
    bad: list[str] = []
    for name in required:
        value = features[name]
        if value is None:
            out[name] = math.nan
        elif not _is_number(value) or not abs(float(value)) <= FEATURE_LIMIT and not math.isnan(float(value)):
            bad.append(name)
        else:
            out[name] = float(value)
    if bad:
        raise ScoringInputError(field, f"{len(bad)} feature(s) are not numbers within +-{FEATURE_LIMIT:g}, e.g. {bad[:5]}")
    if required and all(math.isnan(v) for v in out.values()):
        raise missing(field, "every required feature is null; send the values (or the images)")
    return out


def sniff_image_format(path: str | Path) -> str | None:
    """``nifti``, ``nifti-gz`` or ``nrrd`` from the file's first bytes; None for anything else.

    Uploads arrive without a trustworthy name, and SimpleITK picks its reader by the suffix, so the
    content decides which suffix the file gets.
    """
    p = Path(path)
    with p.open("rb") as fh:
        head = fh.read(352)
    if head.startswith(b"NRRD"):
        return "nrrd"
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(p, "rb") as fh:
                inner = fh.read(352)
        except (OSError, EOFError, zlib.error):  # not gzip, truncated, or a corrupt deflate stream
            return None
        return "nifti-gz" if _nifti_magic(inner) else None
    return "nifti" if _nifti_magic(head) else None


def _nifti_magic(header: bytes) -> bool:
    return len(header) >= 348 and header[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00", b"ni2\x00")


def read_checked_image(path: str | Path, field: str, max_voxels: int = MAX_VOXELS) -> sitk.Image:
    """A 3-D scalar image, or an error naming ``field`` (never the file name).

    The header is read first: a small compressed file can declare a huge volume (a decompression
    bomb), which is refused before any voxel is decompressed.
    """
    p = Path(path)
    if p.is_file():
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise ScoringInputError(field, f"not a readable image; expected {EXPECTED_IMAGE}") from None
        voxels = math.prod(reader.GetSize()) * max(reader.GetNumberOfComponents(), 1)
        if voxels > max_voxels:
            raise ScoringInputError(field, f"image of size {reader.GetSize()} has {voxels} voxels; the limit is {max_voxels}")
    try:
        image = read_image(p)
    except ImageReadError:
        raise ScoringInputError(field, f"not a readable image; expected {EXPECTED_IMAGE}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ScoringInputError(
            field,
            f"expected a 3-D scalar image, got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel",
        )
    if min(image.GetSize()) < 2:
        raise ScoringInputError(field, f"image of size {image.GetSize()} is too small to score")
    return image


def check_mask(image: sitk.Image, mask: sitk.Image, sequence: str, field: str) -> list[int]:
    """A label map on its image's grid holding only the sequence's label values; returns those present."""
    same, why = same_geometry(image, mask)
    if not same:
        raise ScoringInputError(field, f"mask does not fit its image {sequence}_image: {why}")
    values = np.unique(sitk.GetArrayViewFromImage(mask))
    if not np.all(np.equal(np.mod(values, 1), 0)):
        raise ScoringInputError(field, "mask holds non-integer values; expected a label map")
    present = {int(v) for v in values}
    unexpected = sorted(present - allowed_label_values(sequence))
    if unexpected:
        raise ScoringInputError(
            field,
            f"label value(s) {unexpected[:10]} are not {sequence} structures; expected {sorted(allowed_label_values(sequence))}",
        )
    return sorted(present - {0})


def check_roi_present(present: Iterable[int], roi_labels: Sequence[int], roi: str, field: str) -> None:
    """The ROI (label values of the fused levels and neighbours) must have voxels in the mask."""
    if not set(roi_labels) & set(present):
        raise ScoringInputError(
            field, f"ROI {roi} is empty: none of its label values {list(roi_labels)} is in the mask (present: {sorted(present)})"
        )
