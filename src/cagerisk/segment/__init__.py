"""Segmentation of every sequence's ROIs: MONAI 3D U-Nets, sliding-window inference, Dice and HD95.

Names are imported on first use (PEP 562): importing one light module of this package (what a
served model unpickles) does not import the others (training, Lightning).
"""

from __future__ import annotations

from cagerisk.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "CTSegmenter": "cagerisk.segment.inference",
    "Segmenter": "cagerisk.segment.inference",
    "segment_ct": "cagerisk.segment.inference",
    "segment_image": "cagerisk.segment.inference",
    "ct_mask_for_features": "cagerisk.segment.manifest",
    "ct_mask_sources": "cagerisk.segment.manifest",
    "mask_for_features": "cagerisk.segment.manifest",
    "mask_sources": "cagerisk.segment.manifest",
    "with_feature_masks": "cagerisk.segment.manifest",
    "write_segment_manifest": "cagerisk.segment.manifest",
    "per_label_dice": "cagerisk.segment.metrics",
    "per_label_hd95": "cagerisk.segment.metrics",
    "model_path_for": "cagerisk.segment.sequences",
    "segmented_sequences": "cagerisk.segment.sequences",
    "sequence_config": "cagerisk.segment.sequences",
    "summarise_dice": "cagerisk.segment.metrics",
    "VERTEBRA_LABELS": "cagerisk.segment.model",
    "SegmentationBundle": "cagerisk.segment.model",
    "build_unet": "cagerisk.segment.model",
    "label_vertebrae_bottom_up": "cagerisk.segment.model",
    "load_bundle": "cagerisk.segment.model",
    "save_bundle": "cagerisk.segment.model",
    "dice_metrics": "cagerisk.segment.segmentation",
    "segment_cohort": "cagerisk.segment.segmentation",
    "train_segmenter": "cagerisk.segment.segmentation",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
