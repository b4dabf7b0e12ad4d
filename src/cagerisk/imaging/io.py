"""Image I/O for NIfTI, NRRD and DICOM series, through SimpleITK (PyRadiomics' own image library).

Everything is read as a ``SimpleITK.Image`` so that geometry (origin, spacing, direction) travels with
the voxels; arrays are taken out only where a computation needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
SUPPORTED = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or a folder holding one DICOM series"


class ImageReadError(ValueError):
    """A file that is missing, not an image, or not a supported format; the message names the file."""


def image_format(path: str | Path) -> str:
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return "dicom"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(NRRD_SUFFIXES):
        return "nrrd"
    if name.endswith(".dcm"):
        return "dicom"
    return "unknown"


def read_image(path: str | Path) -> sitk.Image:
    """Read one image; a folder is read as a DICOM series (the first series found, sorted by position)."""
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: file not found")
    fmt = image_format(p)
    try:
        if fmt == "dicom":
            folder = p if p.is_dir() else p.parent
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(folder))
            if not series:
                raise ImageReadError(f"{p}: no DICOM series found")
            files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
            reader.SetFileNames(files)
            return reader.Execute()
        if fmt == "unknown":
            raise ImageReadError(f"{p}: unsupported image type; expected {SUPPORTED}")
        return sitk.ReadImage(str(p))
    except RuntimeError as err:  # SimpleITK raises RuntimeError for corrupt files
        first_line = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
        raise ImageReadError(f"{p}: not a readable {fmt} image ({first_line})") from err


def write_image(image: sitk.Image, path: str | Path) -> Path:
    """Write compressed; zlib writes no timestamp, so equal images give byte-identical files."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp" + "".join(p.suffixes))
    sitk.WriteImage(image, str(tmp), useCompression=True)
    tmp.replace(p)
    return p


def array_to_image(
    array: np.ndarray, spacing: tuple[float, ...], origin: tuple[float, ...], direction: tuple[float, ...]
) -> sitk.Image:
    """A (i, j, k)-indexed numpy array -> SimpleITK image with the given geometry (LPS)."""
    # SimpleITK's array view is (k, j, i); our arrays are indexed like the image axes.
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(float(d) for d in direction))
    return image


def image_to_array(image: sitk.Image) -> np.ndarray:
    """SimpleITK image -> numpy array indexed (i, j, k) like the image axes."""
    return np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))


def same_geometry(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-3) -> tuple[bool, str]:
    """Whether two images share size, spacing, origin and direction; the reason when not."""
    if a.GetSize() != b.GetSize():
        return False, f"size {b.GetSize()} != {a.GetSize()}"
    checks = (
        ("spacing", a.GetSpacing(), b.GetSpacing()),
        ("origin", a.GetOrigin(), b.GetOrigin()),
        ("direction", a.GetDirection(), b.GetDirection()),
    )
    for name, va, vb in checks:
        if not np.allclose(va, vb, atol=tolerance, rtol=tolerance):
            return False, f"{name} {tuple(round(v, 4) for v in vb)} != {tuple(round(v, 4) for v in va)}"
    return True, ""


@dataclass(frozen=True)
class ImageHeader:
    """Size, spacing, origin and direction of an image file, read without its voxels."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    # The accessors of sitk.Image, so that same_geometry takes a header too.
    def GetSize(self) -> tuple[int, ...]:  # noqa: N802 - SimpleITK's names
        return self.size

    def GetSpacing(self) -> tuple[float, ...]:  # noqa: N802
        return self.spacing

    def GetOrigin(self) -> tuple[float, ...]:  # noqa: N802
        return self.origin

    def GetDirection(self) -> tuple[float, ...]:  # noqa: N802
        return self.direction

    @classmethod
    def of(cls, image: Any) -> ImageHeader:
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def read_image_header(path: str) -> ImageHeader:
    """The geometry of an image file; a DICOM folder or a file SimpleITK's header reader refuses is read whole
    by ``read_image``, whose errors name the file."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return ImageHeader.of(read_image(path))
    return ImageHeader(reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())


def write_dicom_series(image: sitk.Image, folder: str | Path, series_uid: str = "1.2.826.0.1.3680043.8.498.1") -> Path:
    """Write a 3-D image as a DICOM series of axial-stack slices (one file per k index).

    Position, orientation and spacing tags are set so that ``read_image(folder)`` gives back the
    same geometry; used to convert or to test DICOM ingestion. Pixel values are stored as int16.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    direction = image.GetDirection()
    orientation = "\\".join(
        f"{v:.6f}" for v in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])
    )
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "OT",
            "0020|000d": series_uid + ".1",
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{p:.6f}" for p in position),
            "0020|0037": orientation,
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}",
        }
        for tag, value in tags.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(out / f"slice{k:04d}.dcm"))
        writer.Execute(slice_)
    return out
