"""One ROI of one patient's sequence -> its PyRadiomics feature vector.

This is the function every worker runs (one ROI per task). It does exactly what a user of plain
PyRadiomics would do: read the image, turn the label map into a binary ROI mask, and call
``RadiomicsFeatureExtractor(params).execute(image, mask)``; nothing else touches the voxels, so the
values are PyRadiomics' own to the last bit. Errors become an ``RoiOutcome`` naming patient, sequence,
ROI and files instead of an exception, so that one bad ROI never stops the others.
"""

from __future__ import annotations

import copy
import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from cagerisk.imaging.io import ImageReadError, read_image, same_geometry
from cagerisk.imaging.masks import ROI_LABEL, EmptyRoiError, binary_roi_mask
from cagerisk.radiomics.naming import is_diagnostic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoiTask:
    """Everything a worker needs for one ROI; small and picklable (paths, not voxels)."""

    patient_id: str
    sequence: str
    roi: str
    image: str
    mask: str
    label_values: tuple[int, ...]
    params: dict[str, Any] = field(hash=False, compare=False, repr=False)
    settings_sha256: str = ""
    image_sha256: str = ""
    mask_sha256: str = ""
    # SimpleITK threads inside the worker: 1, because parallelism comes from one process per core.
    itk_threads: int | None = 1
    # Require the label map on the image's grid (a different grid nearly always means a wrong pairing;
    # PyRadiomics itself would silently resample it when resampling is on). Not part of the cache key:
    # it decides only whether an ROI fails, never its values.
    check_geometry: bool = True

    @property
    def name(self) -> str:
        return f"patient {self.patient_id}, sequence {self.sequence}, ROI {self.roi}"


@dataclass
class RoiOutcome:
    """A worker's answer for one task: the features, or the error with where it happened."""

    task: RoiTask
    features: dict[str, float] | None
    error_type: str = ""
    error: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    detail: str = field(default="", repr=False)

    @property
    def ok(self) -> bool:
        return self.features is not None


class RoiExtractionError(RuntimeError):
    """An ROI that could not be extracted; the message names patient, sequence, ROI and the file."""


def new_extractor(params: Mapping[str, Any]):
    """A ``RadiomicsFeatureExtractor`` for a parameter dict (validated by PyRadiomics' schema)."""
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    return RadiomicsFeatureExtractor(copy.deepcopy(dict(params)))


# One extractor per settings hash per worker process, as a plain loop builds one and calls execute()
# repeatedly: building one re-validates the parameters against PyRadiomics' schema (~0.15 s), and
# execute() keeps no state between calls.
_EXTRACTORS: dict[str, Any] = {}


def extractor_for(task: RoiTask):
    if not task.settings_sha256:
        return new_extractor(task.params)
    extractor = _EXTRACTORS.get(task.settings_sha256)
    if extractor is None:
        extractor = _EXTRACTORS[task.settings_sha256] = new_extractor(task.params)
    return extractor


def quiet_pyradiomics(level: int = logging.ERROR) -> None:
    """PyRadiomics sets its logger to INFO when imported (overriding the application's logging) and logs
    every step; pykwalify logs each validation. Keep both to ``level``."""
    import radiomics  # noqa: F401 - the import is what resets the level

    for name in ("radiomics", "pykwalify"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        for handler in logger.handlers:
            handler.setLevel(level)


def read_roi_inputs(task: RoiTask) -> tuple[sitk.Image, sitk.Image]:
    """The image and the binary ROI mask of a task; errors name the file and what was expected."""
    try:
        image = read_image(task.image)
    except ImageReadError as err:
        raise RoiExtractionError(f"{task.name}: image {err}") from err
    try:
        label_map = read_image(task.mask)
    except ImageReadError as err:
        raise RoiExtractionError(f"{task.name}: mask {err}") from err
    if task.check_geometry:
        same, why = same_geometry(image, label_map)
        if not same:
            raise RoiExtractionError(
                f"{task.name}: mask {task.mask} is not on the grid of image {task.image} ({why}); "
                "expected the same size, spacing, origin and direction (radiomics.check_geometry)"
            )
    try:
        mask = binary_roi_mask(label_map, task.label_values)
    except EmptyRoiError as err:
        raise RoiExtractionError(f"{task.name}: empty ROI in mask {task.mask}: {err}") from err
    return image, mask


def extract_roi(task: RoiTask) -> dict[str, float]:
    """PyRadiomics features of one ROI (diagnostics dropped, PyRadiomics' key order); raises on failure."""
    if task.itk_threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(task.itk_threads))
    quiet_pyradiomics()
    image, mask = read_roi_inputs(task)
    extractor = extractor_for(task)
    try:
        result = extractor.execute(image, mask, label=ROI_LABEL)
    except (ValueError, RuntimeError, AssertionError) as err:
        # PyRadiomics' ValueErrors say what is wrong (geometry mismatch, ROI outside the image, too few
        # dimensions); add who and which files.
        raise RoiExtractionError(
            f"{task.name}: PyRadiomics failed on image {task.image} with mask {task.mask} "
            f"(labels {list(task.label_values)}): {err}"
        ) from err
    return {key: float(np.asarray(value)) for key, value in result.items() if not is_diagnostic(key)}


def extract_roi_outcome(task: RoiTask) -> RoiOutcome:
    """The task function of the distributed map: never raises for a bad ROI, reports it instead."""
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        features = extract_roi(task)
    except Exception as err:  # one ROI's failure of any kind must not cost the others
        return RoiOutcome(
            task=task,
            features=None,
            error_type=type(err.__cause__ or err).__name__,
            error=str(err),
            seconds=time.perf_counter() - start,
            cpu_seconds=time.process_time() - cpu_start,
            detail=traceback.format_exc(),
        )
    return RoiOutcome(
        task=task,
        features=features,
        seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu_start,
    )
