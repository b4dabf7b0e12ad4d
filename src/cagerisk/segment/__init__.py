"""CT vertebral-body segmentation: MONAI 3D U-Net training, sliding-window inference, Dice.

Names are imported on first use (PEP 562): importing one light module of this package (what a
served model unpickles) does not import the others (stages, training, tracking).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "CTSegmenter": "cagerisk.segment.inference",
    "segment_ct": "cagerisk.segment.inference",
    "ct_mask_for_features": "cagerisk.segment.manifest",
    "ct_mask_sources": "cagerisk.segment.manifest",
    "write_segment_manifest": "cagerisk.segment.manifest",
    "per_label_dice": "cagerisk.segment.metrics",
    "summarise_dice": "cagerisk.segment.metrics",
    "VERTEBRA_LABELS": "cagerisk.segment.model",
    "SegmentationBundle": "cagerisk.segment.model",
    "build_unet": "cagerisk.segment.model",
    "label_vertebrae_bottom_up": "cagerisk.segment.model",
    "load_bundle": "cagerisk.segment.model",
    "save_bundle": "cagerisk.segment.model",
    "run_segment_stage": "cagerisk.segment.stage",
}
__all__ = [
    "CTSegmenter",
    "SegmentationBundle",
    "VERTEBRA_LABELS",
    "build_unet",
    "ct_mask_for_features",
    "ct_mask_sources",
    "label_vertebrae_bottom_up",
    "load_bundle",
    "per_label_dice",
    "run_segment_stage",
    "save_bundle",
    "segment_ct",
    "summarise_dice",
    "write_segment_manifest",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return list(__all__)
