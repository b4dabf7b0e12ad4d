"""The segmentation U-Net of one sequence, its saved bundle, and the label post-processing.

Two modes (``segment.mode``), for any sequence:

- ``bottom_up`` (``binary`` is its old name): one output class per structure (vertebral body, disc);
  the connected components of each class are numbered from the bottom of the scan up (S1, L5, ...,
  L1; discs L5-S1 first). A lumbar scan always ends at the sacrum, so counting from the bottom names
  the bodies without the network having to tell L2 from L3 by shape alone, which small training
  patches cannot see. This learns quickly on CPU.
- ``multiclass``: one output class per label value (the muscles, left and right); the network names
  the structures itself, which needs patches that see enough context (a whole axial slice).

The bundle (one ``torch.save`` file) holds the weights, the network's config, the labels of each class
and the preprocessing parameters, so that ``Segmenter`` rebuilds exactly what was trained.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from scipy import ndimage
from torch import nn

from cagerisk.atomic import load_torch_bundle, save_torch_bundle
from cagerisk.cohort.schema import LABELS, VERTEBRAE

__all__ = [
    "MODES",
    "VERTEBRA_LABELS",
    "SegmentationBundle",
    "build_unet",
    "canonical_mode",
    "class_labels",
    "structure_labels",
    "label_vertebrae_bottom_up",
    "name_structures",
    "load_bundle",
    "save_bundle",
    "split_tall_bodies",
    "split_touching_bodies",
]

log = logging.getLogger(__name__)

VERTEBRA_LABELS: tuple[int, ...] = tuple(LABELS[f"vertebra_{v}"] for v in VERTEBRAE)  # L1..S1 = 1..6
BUNDLE_FORMAT = "cagerisk-segment-1"
MODES = ("bottom_up", "multiclass")


def canonical_mode(mode: str) -> str:
    """``binary`` (the CT-only name) is ``bottom_up``; anything else not in ``MODES`` is an error."""
    mode = "bottom_up" if mode == "binary" else mode
    if mode not in MODES:
        raise ValueError(f"segment.mode must be one of {MODES} (or 'binary'), got {mode!r}")
    return mode


def structure_labels(structures: Sequence[str]) -> list[list[int]]:
    """Label values of each structure (``vertebra`` -> L1..S1, ``psoas`` -> left, right), schema order."""
    groups = [[v for name, v in LABELS.items() if name.split("_")[0] == s] for s in structures]
    empty = [s for s, g in zip(structures, groups, strict=True) if not g]
    if empty:
        raise ValueError(f"unknown structure(s) {empty}; the label map has {sorted({n.split('_')[0] for n in LABELS})}")
    return groups


def class_labels(mode: str, groups: Sequence[Sequence[int]]) -> list[list[int]]:
    """The label values of each network class (class ``i + 1``; 0 is background): one class per
    structure (``bottom_up``) or per label value (``multiclass``)."""
    if canonical_mode(mode) == "bottom_up":
        return [[int(v) for v in g] for g in groups]
    return [[int(v)] for g in groups for v in g]


@dataclass
class SegmentationBundle:
    """Everything ``segment_ct`` needs: weights, network config, preprocessing and post-processing."""

    net: dict[str, Any]  # the ``_target_`` node of the network
    state_dict: dict[str, torch.Tensor]
    mode: str
    spacing_mm: list[float]
    hu_window: list[float] | None  # None: percentile scaling (MRI)
    roi_size: list[int]
    labels: list[int] = field(default_factory=lambda: list(VERTEBRA_LABELS))
    min_component_mm3: float = 1500.0
    sw_batch_size: int = 2
    overlap: float = 0.25
    metrics: dict[str, float] = field(default_factory=dict)
    sequence: str = "ct"
    # Label values of each network class; None (a bundle from before per-sequence U-Nets): ``labels``.
    classes: list[list[int]] | None = None
    # False when its validation Dice is below ``segment.min_val_dice``: not served, its masks not used.
    accepted: bool = True

    @property
    def class_labels(self) -> list[list[int]]:
        if self.classes is not None:
            return [list(c) for c in self.classes]
        return class_labels(self.mode, [self.labels])

    def build(self) -> nn.Module:
        net = build_unet(self.net)
        net.load_state_dict(self.state_dict)
        return net.eval()


def build_unet(net_cfg: Mapping[str, Any]) -> nn.Module:
    """Instantiate the ``segment.net`` node (a MONAI network ``_target_``)."""
    net = instantiate(dict(net_cfg), _convert_="all")
    if not isinstance(net, nn.Module):
        raise TypeError(f"segment.net must build a torch module, got {type(net).__name__}")
    return net


def save_bundle(bundle: SegmentationBundle, path: str | Path) -> Path:
    return save_torch_bundle(asdict(bundle), BUNDLE_FORMAT, path)


def load_bundle(path: str | Path) -> SegmentationBundle:
    return SegmentationBundle(**load_torch_bundle(path, BUNDLE_FORMAT, "segmentation model", "cagerisk segment"))


def _erode_in_plane(mask: np.ndarray, affine: np.ndarray, erosion_mm: float) -> np.ndarray:
    if erosion_mm <= 0:
        return mask
    spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    # The array axis closest to superior-inferior is left alone: bodies are only ~25 mm tall.
    axial = _axial_axis(affine)
    radius = [0 if a == axial else max(int(round(erosion_mm / spacing[a])), 1) for a in range(3)]
    return ndimage.binary_erosion(mask, structure=np.ones([2 * r + 1 for r in radius], dtype=bool))


def _axial_axis(affine: np.ndarray) -> int:
    """The array axis closest to superior-inferior."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    return int(np.argmax(np.abs(a[2]) / np.linalg.norm(a, axis=0)))


def split_tall_bodies(components: np.ndarray, probability: np.ndarray, affine: np.ndarray, max_bodies: int) -> np.ndarray:
    """Cut components much taller than a body at their weakest slice, while bodies are missing.

    A degenerated (thin) disc can fall in a single thick slice that also holds endplate bone; the
    network then calls that slice bone and two bodies form one tall component. Such a component is
    at least 1.5 times the median height of the others; it is cut at the slice of least summed
    probability in its middle half.
    """
    axis = _axial_axis(affine)
    out = components.copy()
    for _ in range(max_bodies):
        values, counts = np.unique(out[out > 0], return_counts=True)
        # Noise specks are not bodies: they neither count nor set the typical height.
        ids = [int(v) for v, c in zip(values, counts, strict=True) if c >= 0.25 * np.median(counts)]
        if len(ids) >= max_bodies or len(ids) < 2:
            break
        extents = {}
        for i in ids:
            slices = np.flatnonzero(np.moveaxis(out == i, axis, 0).reshape(out.shape[axis], -1).any(axis=1))
            extents[i] = (int(slices.min()), int(slices.max()))
        heights = {i: hi - lo + 1 for i, (lo, hi) in extents.items()}
        tallest = max(heights, key=heights.get)
        others = [h for i, h in heights.items() if i != tallest]
        if heights[tallest] < 1.5 * float(np.median(others)) or heights[tallest] < 4:
            break
        lo, hi = extents[tallest]
        inner = np.arange(lo + (hi - lo) // 4 + 1, hi - (hi - lo) // 4)
        member = np.moveaxis(out == tallest, axis, 0)
        weight = np.moveaxis(np.where(out == tallest, probability, 0.0), axis, 0).reshape(out.shape[axis], -1).sum(axis=1)
        cut = int(inner[np.argmin(weight[inner])]) if len(inner) else (lo + hi) // 2
        moved = np.moveaxis(out, axis, 0)  # a view: writes go to `out`
        new_id = int(out.max()) + 1
        upper = member.copy()
        upper[: cut + 1] = False
        moved[upper] = new_id
        moved[cut][member[cut]] = 0  # the cut slice is the disc
    return out


def split_touching_bodies(
    probability: np.ndarray,
    affine: np.ndarray,
    max_bodies: int = len(VERTEBRA_LABELS),
    min_seed_mm3: float = 1000.0,
    thresholds: Sequence[float] = (0.5, 0.7, 0.85, 0.95),
    erosions_mm: Sequence[float] = (0.0, 3.0, 6.0),
) -> np.ndarray:
    """Connected bodies of a body-probability map, split where bodies touch across a disc.

    Thick CT slices put part of a disc in a slice that also holds bone, so the ``p >= 0.5`` mask can
    join two bodies. Bridges through a disc are less certain (lower probability) and narrower than a
    body, so seeds are taken at a stricter threshold and after an in-plane erosion: the first
    (threshold, erosion) pair, mildest first, whose seeds number the most bodies up to
    ``max_bodies``. Every voxel of the ``p >= 0.5`` mask then joins its nearest seed.
    """
    mask = probability >= 0.5
    voxel_mm3 = float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))
    spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)

    def big_components(candidate: np.ndarray) -> tuple[np.ndarray, int]:
        labelled, n = ndimage.label(candidate)
        if n == 0:
            return labelled, 0
        sizes = np.asarray(ndimage.sum_labels(np.ones(labelled.shape, np.float32), labelled, np.arange(1, n + 1)))
        keep = np.flatnonzero(sizes * voxel_mm3 >= min_seed_mm3) + 1
        relabel = np.zeros(n + 1, dtype=np.int32)
        relabel[keep] = np.arange(1, len(keep) + 1)
        return relabel[labelled], len(keep)

    whole, _ = ndimage.label(mask)
    best, best_count = None, 0
    for erosion in erosions_mm:
        for threshold in thresholds:
            seeds, count = big_components(_erode_in_plane(probability >= threshold, affine, erosion))
            if best_count < count <= max_bodies:
                best, best_count = seeds, count
        if best_count == max_bodies:
            break
    if best is None:
        return split_tall_bodies(whole, probability, affine, max_bodies)
    # Every voxel of a seeded component joins its nearest seed; unseeded components (noise, or a
    # body the seeds missed) keep labels of their own, after the seeds', for the size filter.
    _, (ii, jj, kk) = ndimage.distance_transform_edt(best == 0, sampling=spacing, return_indices=True)
    seeded = np.isin(whole, np.unique(whole[best > 0]))
    out = np.where(mask & seeded, best[ii, jj, kk], 0)
    orphans = mask & ~seeded
    if orphans.any():
        _, orphan_ids = np.unique(whole[orphans], return_inverse=True)
        out[orphans] = best_count + 1 + orphan_ids.ravel()
    if best_count < max_bodies:
        out = split_tall_bodies(out, probability, affine, max_bodies)
    return out


def label_vertebrae_bottom_up(
    probability: np.ndarray,
    affine: np.ndarray,
    labels: Sequence[int] = VERTEBRA_LABELS,
    min_component_mm3: float = 1500.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Number the vertebral bodies of a body-probability map from the bottom of the scan up.

    ``labels`` run top to bottom (L1..S1); the lowest body gets the last label. Bodies are connected
    components, split where a thin bridge crosses a disc (``split_touching_bodies``). Components
    smaller than ``min_component_mm3`` (noise) are dropped; components beyond the number of labels
    (e.g. T12 at the top of a long scan) are left unlabelled. ``affine`` is the RAS affine of the
    array. Returns the label map and a summary (components found / kept / dropped) for the log.
    """
    voxel_mm3 = float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))
    components = split_touching_bodies(probability, affine, max_bodies=len(labels))
    n = int(components.max())
    out = np.zeros(probability.shape, dtype=np.uint8)
    if n == 0:
        return out, {"components": 0, "kept": 0, "small": 0, "unlabelled": 0}
    index = np.arange(1, n + 1)
    ones = np.ones(components.shape, dtype=np.float32)
    sizes = np.asarray(ndimage.sum_labels(ones, components, index)) * voxel_mm3
    centres = np.asarray(ndimage.center_of_mass(ones, components, index))  # voxel (i, j, k)
    world = (np.c_[centres, np.ones(len(centres))] @ np.asarray(affine, dtype=np.float64).T)[:, :3]
    big = sizes >= min_component_mm3
    # RAS: world z points superior, so ascending z is bottom-up.
    order = [int(i) for i in np.argsort(world[:, 2]) if big[i]]
    bottom_up_labels = list(labels)[::-1]
    for rank, comp in enumerate(order[: len(bottom_up_labels)]):
        out[components == comp + 1] = bottom_up_labels[rank]
    summary = {
        "components": n,
        "kept": min(len(order), len(bottom_up_labels)),
        "small": int((~big).sum()),
        "unlabelled": max(len(order) - len(bottom_up_labels), 0),
    }
    return out, summary


def name_structures(
    probabilities: np.ndarray,
    affine: np.ndarray,
    mode: str,
    classes: Sequence[Sequence[int]],
    min_component_mm3: float = 1500.0,
) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """Label map (values of ``classes``) from class probabilities ``[C, i, j, k]`` (class 0 background).

    ``bottom_up``: each class's components numbered from the bottom up onto its label values
    (``label_vertebrae_bottom_up``); a voxel two classes claim keeps the first's. ``multiclass``: argmax,
    class ``i + 1`` -> ``classes[i][0]``. The summary counts, per ``bottom_up`` class, the components kept
    and expected.
    """
    if canonical_mode(mode) == "bottom_up":
        labels = np.zeros(probabilities.shape[1:], dtype=np.uint8)
        summary: dict[str, dict[str, int]] = {}
        for index, members in enumerate(classes, start=1):
            numbered, found = label_vertebrae_bottom_up(probabilities[index], affine, members, min_component_mm3)
            labels = np.where(labels == 0, numbered, labels)
            summary[str(index)] = {**found, "expected": len(members)}
        return labels, summary
    lut = np.array([0, *(int(c[0]) for c in classes)], dtype=np.uint8)
    return lut[np.asarray(probabilities).argmax(axis=0)], {}
