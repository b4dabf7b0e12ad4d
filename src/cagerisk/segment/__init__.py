"""CT vertebral-body segmentation: MONAI 3D U-Net training, sliding-window inference, Dice."""

from cagerisk.segment.inference import CTSegmenter, segment_ct
from cagerisk.segment.manifest import ct_mask_for_features, ct_mask_sources, write_segment_manifest
from cagerisk.segment.metrics import per_label_dice, summarise_dice
from cagerisk.segment.model import (
    VERTEBRA_LABELS,
    SegmentationBundle,
    build_unet,
    label_vertebrae_bottom_up,
    load_bundle,
    save_bundle,
)
from cagerisk.segment.stage import run_segment_stage

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
