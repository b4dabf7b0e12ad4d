"""Label-map adapters: TotalSegmentator masks mapped onto cagerisk's label map, structure by structure.

TotalSegmentator (Wasserthal et al., Radiology: AI 2023) writes either one multi-label NIfTI (``--ml``)
or a folder with one binary file per structure (``<class name>.nii.gz``). Its class ids are those of
its own ``totalsegmentator/map_to_binary.py`` (``class_map``, v2 maps); the ones cagerisk uses are in
:data:`TOTALSEGMENTATOR_IDS`, and docs/manifest.md lists them.

Mapping (what each cagerisk structure is made of, per task):

- ``total`` (CT): ``vertebrae_L1`` .. ``vertebrae_L5``, ``vertebrae_S1`` -> vertebra L1..S1;
  ``iliopsoas_left/right`` -> psoas; ``autochthon_left/right`` -> paraspinal.
- ``vertebrae_mr`` (MR): ``vertebrae_L1`` .. ``vertebrae_L5`` -> vertebra L1..L5; ``sacrum`` -> vertebra S1
  (the task has no separate S1: the whole sacrum stands for it, and the result says so).
- ``total_mr`` (MR): ``iliopsoas_left/right`` -> psoas; ``autochthon_left/right`` -> paraspinal. Its
  vertebrae and discs are one label each (no level), so they are not mapped: they come from another
  source (``vertebrae_mr``, the platform's U-Nets) or are reported missing.

TotalSegmentator's vertebra classes are whole vertebrae (body and posterior elements), where cagerisk's
own masks hold vertebral bodies; quadratus lumborum and per-level discs exist in none of these tasks.
Nothing is filled in silently: every structure the sequence needs and the source lacks is listed in
:attr:`AdaptedMask.missing`, and one that is only stood in for is listed in :attr:`AdaptedMask.notes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from cagerisk.cohort.schema import LABEL_NAMES, LABELS, SEQUENCE_STRUCTURES, SEQUENCES, VERTEBRAE
from cagerisk.imaging.io import ImageReadError, read_image, same_geometry

# TotalSegmentator class id of every class cagerisk maps, per task (from its map_to_binary.class_map),
# and the number of classes of the task (ids above it cannot come from that task).
TOTALSEGMENTATOR_IDS: dict[str, dict[str, int]] = {
    "total": {
        "sacrum": 25,
        "vertebrae_S1": 26,
        "vertebrae_L5": 27,
        "vertebrae_L4": 28,
        "vertebrae_L3": 29,
        "vertebrae_L2": 30,
        "vertebrae_L1": 31,
        "autochthon_left": 86,
        "autochthon_right": 87,
        "iliopsoas_left": 88,
        "iliopsoas_right": 89,
    },
    "total_mr": {
        "sacrum": 18,
        "vertebrae": 19,
        "intervertebral_discs": 20,
        "autochthon_left": 46,
        "autochthon_right": 47,
        "iliopsoas_left": 48,
        "iliopsoas_right": 49,
    },
    "vertebrae_mr": {
        "sacrum": 1,
        "vertebrae_L5": 2,
        "vertebrae_L4": 3,
        "vertebrae_L3": 4,
        "vertebrae_L2": 5,
        "vertebrae_L1": 6,
    },
}
TASK_CLASSES: dict[str, int] = {"total": 117, "total_mr": 50, "vertebrae_mr": 25}

_MUSCLES = {
    "psoas_left": "iliopsoas_left",
    "psoas_right": "iliopsoas_right",
    "paraspinal_left": "autochthon_left",
    "paraspinal_right": "autochthon_right",
}
# cagerisk structure -> TotalSegmentator class, per task.
STRUCTURE_SOURCES: dict[str, dict[str, str]] = {
    "total": {**{f"vertebra_{v}": f"vertebrae_{v}" for v in VERTEBRAE}, **_MUSCLES},
    "vertebrae_mr": {**{f"vertebra_{v}": f"vertebrae_{v}" for v in VERTEBRAE[:-1]}, "vertebra_S1": "sacrum"},
    "total_mr": dict(_MUSCLES),
}
# Structures that are stood in for by a larger one, with what the result's notes say.
STAND_INS: dict[tuple[str, str], str] = {
    ("vertebrae_mr", "vertebra_S1"): "vertebra_S1 is TotalSegmentator's whole sacrum (vertebrae_mr has no separate S1)",
}
LUMBAR = tuple(f"vertebra_{v}" for v in VERTEBRAE[:-1])
# `cohort.labels: totalsegmentator`: the task whose output a site would have for each sequence (whole
# vertebrae with levels for sagittal MR; muscles for axial MR).
DEFAULT_TASKS: dict[str, str] = {
    "ct": "total",
    "t1": "vertebrae_mr",
    "t2": "vertebrae_mr",
    "t1ax": "total_mr",
    "t2ax": "total_mr",
}
OWN_LABELS = "cagerisk"


def label_tasks(labels: str | Mapping[str, str]) -> dict[str, str | None]:
    """``cohort.labels`` as the TotalSegmentator task of each sequence (None: cagerisk's own label values).

    ``labels`` is one value for every sequence or a mapping ``{sequence: value}`` (sequences left out keep
    cagerisk's labels); a value is ``cagerisk``, ``totalsegmentator`` (the sequence's task in
    :data:`DEFAULT_TASKS`) or a task name (``total``, ``total_mr``, ``vertebrae_mr``).
    """
    # Imported here, not at the top: cohort.manifest imports this module, and the served model reaches
    # cohort.schema through the cohort package, which must not pull omegaconf into its requirements.
    from cagerisk.config import ConfigError

    per_sequence = dict(labels) if isinstance(labels, Mapping) else dict.fromkeys(SEQUENCES, labels)
    unknown = sorted(set(per_sequence) - set(SEQUENCES))
    if unknown:
        raise ConfigError(f"config cohort.labels: unknown sequence(s) {unknown}; expected some of {list(SEQUENCES)}")
    tasks: dict[str, str | None] = {}
    for sequence in SEQUENCES:
        value = per_sequence.get(sequence, OWN_LABELS)
        if value == OWN_LABELS:
            tasks[sequence] = None
        elif value == "totalsegmentator":
            tasks[sequence] = DEFAULT_TASKS[sequence]
        elif value in TOTALSEGMENTATOR_IDS:
            tasks[sequence] = value
        else:
            allowed = [OWN_LABELS, "totalsegmentator", *TOTALSEGMENTATOR_IDS]
            raise ConfigError(f"config cohort.labels.{sequence}: {value!r}; expected one of {allowed}")
    return tasks


def unmapped_rois(task: str, sequence: str) -> list[str]:
    """ROIs of ``sequence`` of which ``task`` gives no structure at all (e.g. discs from ``vertebrae_mr``)."""
    mapped = {name.split("_")[0] for name in STRUCTURE_SOURCES[task]}
    return [roi for roi in SEQUENCE_STRUCTURES[sequence] if roi not in mapped]


class AdapterError(ValueError):
    """A TotalSegmentator output cannot be mapped; the message names the patient and the file."""


@dataclass
class AdaptedMask:
    """A cagerisk label map made from a TotalSegmentator output, and what it lacks."""

    image: sitk.Image  # uint8, cagerisk label values, the source's grid
    found: list[str]  # cagerisk structures with at least one voxel
    missing: list[str]  # structures the sequence holds that the source does not give (or gives empty)
    notes: list[str] = field(default_factory=list)


def _needed(sequence: str) -> list[str]:
    prefixes = SEQUENCE_STRUCTURES[sequence]
    return [name for name in LABELS if name.split("_")[0] in prefixes]


def _sources_needed(task: str, sequence: str) -> set[str]:
    """The TotalSegmentator classes of ``task`` that make the structures ``sequence`` holds."""
    return {STRUCTURE_SOURCES[task][s] for s in _needed(sequence) if s in STRUCTURE_SOURCES[task]}


def _check_task(task: str) -> None:
    if task not in TOTALSEGMENTATOR_IDS:
        raise ValueError(f"unknown TotalSegmentator task {task!r}; expected one of {sorted(TOTALSEGMENTATOR_IDS)}")


def _assemble(masks: Mapping[str, np.ndarray], reference: sitk.Image, task: str, sequence: str, where: str) -> AdaptedMask:
    """cagerisk label map from one boolean array per TotalSegmentator class (same grid as ``reference``)."""
    out = np.zeros(sitk.GetArrayViewFromImage(reference).shape, dtype=np.uint8)
    found, missing, notes = [], [], []
    for structure in _needed(sequence):
        source = STRUCTURE_SOURCES[task].get(structure)
        voxels = masks.get(source) if source else None
        if voxels is None or not voxels.any():
            missing.append(structure)
            continue
        clash = voxels & (out > 0)
        if clash.any():
            other = sorted(STRUCTURE_SOURCES[task][LABEL_NAMES[int(v)]] for v in np.unique(out[clash]))
            raise AdapterError(f"{where}: {source} overlaps {', '.join(other)} in {int(clash.sum())} voxels")
        out[voxels] = LABELS[structure]
        found.append(structure)
        if (task, structure) in STAND_INS:
            notes.append(STAND_INS[(task, structure)])
    if "vertebra" in SEQUENCE_STRUCTURES[sequence] and STRUCTURE_SOURCES[task].keys() & set(LUMBAR):
        if not set(found) & set(LUMBAR):
            raise AdapterError(f"{where}: no lumbar vertebra (L1-L5) in the TotalSegmentator {task!r} output")
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(reference)
    return AdaptedMask(image=image, found=found, missing=missing, notes=notes)


def adapt_multilabel(path: str | Path, task: str, sequence: str, patient: str = "?") -> AdaptedMask:
    """cagerisk label map from TotalSegmentator's multi-label file (``--ml``) of ``task``."""
    _check_task(task)
    where = f"patient {patient}, {sequence} mask {path}"
    try:
        labels = read_image(path)
    except ImageReadError as exc:
        raise AdapterError(f"{where}: {exc}") from None
    values = sitk.GetArrayViewFromImage(labels)
    if not np.array_equal(values, np.round(values)):
        raise AdapterError(f"{where}: not a label map (non-integer values)")
    present = {int(v) for v in np.unique(values)} - {0}
    unknown = sorted(v for v in present if v < 0 or v > TASK_CLASSES[task])
    if unknown:
        raise AdapterError(f"{where}: label ids {unknown} are not TotalSegmentator {task!r} classes (1..{TASK_CLASSES[task]})")
    # one boolean volume per class the sequence uses (not per mapped class: a CT is large)
    ids = TOTALSEGMENTATOR_IDS[task]
    masks = {name: values == ids[name] for name in _sources_needed(task, sequence)}
    return _assemble(masks, labels, task, sequence, where)


def adapt_mask(
    path: str | Path, task: str, sequence: str, patient: str = "?", reference: sitk.Image | None = None
) -> AdaptedMask:
    """A TotalSegmentator output as it comes: a folder of structure files, else the multi-label file.

    ``reference`` (the image the mask belongs to) must share the output's grid.
    """
    if Path(path).is_dir():
        return adapt_structure_folder(path, task, sequence, patient, reference)
    adapted = adapt_multilabel(path, task, sequence, patient)
    if reference is not None:
        same, why = same_geometry(reference, adapted.image)
        if not same:
            raise AdapterError(f"patient {patient}, {sequence} mask {path}: not on the image's grid ({why})")
    return adapted


def adapt_structure_folder(
    folder: str | Path, task: str, sequence: str, patient: str = "?", reference: sitk.Image | None = None
) -> AdaptedMask:
    """cagerisk label map from TotalSegmentator's folder of one ``<class>.nii.gz`` per structure.

    Only the classes cagerisk maps are read; a class without its file counts as absent. Every file read
    must share one grid (and ``reference``'s, when given: the image the mask belongs to).
    """
    _check_task(task)
    folder = Path(folder)
    where = f"patient {patient}, {sequence} mask folder {folder}"
    if not folder.is_dir():
        raise AdapterError(f"{where}: not a folder")
    wanted = set(STRUCTURE_SOURCES[task].values())
    masks: dict[str, np.ndarray] = {}
    grid = reference
    for name in sorted(wanted):
        path = folder / f"{name}.nii.gz"
        if not path.exists():
            continue
        try:
            image = read_image(path)
        except ImageReadError as exc:
            raise AdapterError(f"{where}: {exc}") from None
        if grid is not None:
            same, why = same_geometry(grid, image)
            if not same:
                raise AdapterError(f"{where}: {path.name} is not on the image's grid ({why})")
        grid = grid or image
        values = sitk.GetArrayViewFromImage(image)
        extra = sorted({int(v) for v in np.unique(values)} - {0, 1})
        if extra:
            raise AdapterError(f"{where}: {path.name} is not binary (values {extra[:5]})")
        masks[name] = values == 1
    if grid is None:
        raise AdapterError(f"{where}: none of {sorted(wanted)} found (files <class>.nii.gz)")
    return _assemble(masks, grid, task, sequence, where)
