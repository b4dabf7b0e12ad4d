"""One volume to the ViT-3D's input cubes: the preprocessing shared by training, export and scoring.

A light module (torch, MONAI, SimpleITK; no Lightning, no data loaders): the served model's
``DeepEmbedder`` imports it, so a model loads with its own requirements only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.data import MetaTensor

from cagerisk.cohort.schema import parse_levels, roi_label_values
from cagerisk.imaging.transforms import apply_chain, roi_transforms, volume_transforms

CACHE_VERSION = 1


@dataclass(frozen=True)
class PreprocessSettings:
    input_size: int
    margin_mm: float

    def key(self) -> str:
        return f"v{CACHE_VERSION}-s{self.input_size}-m{self.margin_mm:g}"


def preprocess_volume(
    image: Any,
    mask: Any,
    fused_levels: str,
    sequence: str,
    rois: Sequence[str],
    settings: PreprocessSettings,
    patient_id: str | None = None,
) -> dict[str, torch.Tensor]:
    """``{roi: cube [1, S, S, S]}`` for one volume; ``image``/``mask`` are paths or in-memory volumes.

    The same function runs at training, export and scoring time.
    """
    levels = parse_levels(fused_levels)
    meta = {"patient_id": patient_id, "sequence": sequence}
    volume = apply_chain(volume_transforms(), {"image": image, "mask": mask, **meta})
    chain = roi_transforms(settings.input_size, settings.margin_mm, load=False)
    cubes = {}
    for roi in rois:
        data = {
            "image": volume["image"],
            "mask": volume["mask"],
            "label_values": roi_label_values(levels, roi),
            "roi": roi,
            **meta,
        }
        cube = apply_chain(chain, data)["image"]
        # A plain tensor: the cache must load with weights_only=True, and batches collate faster.
        cube = cube.as_tensor() if isinstance(cube, MetaTensor) else torch.as_tensor(cube)
        cubes[roi] = cube.float().contiguous()
    return cubes
