"""Segment one sequence's image with its saved U-Net: at the stage's end and at scoring time."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import Invertd

from cagerisk.imaging.io import read_image
from cagerisk.imaging.transforms import apply_chain, sitk_to_metatensor
from cagerisk.segment.model import SegmentationBundle, canonical_mode, load_bundle, name_structures
from cagerisk.segment.transforms import segmentation_transforms

__all__ = ["CTSegmenter", "Segmenter", "segment_ct", "segment_image"]

log = logging.getLogger(__name__)


class Segmenter:
    """A loaded U-Net of one sequence; ``segment`` maps an image to a label map on the image's own grid."""

    def __init__(self, bundle: SegmentationBundle, device: str | torch.device = "cpu") -> None:
        self.bundle = bundle
        self.sequence = bundle.sequence
        self.mode = canonical_mode(bundle.mode)
        self.classes = bundle.class_labels
        self.device = torch.device(device)
        self.net = bundle.build().to(self.device)
        self.pre = segmentation_transforms(bundle.spacing_mm, bundle.hu_window, with_mask=False)
        # Probabilities go back through the inverse of orientation + resampling (linear, then argmax).
        self.invert = Invertd(keys="pred", transform=self.pre, orig_keys="image", nearest_interp=False)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Segmenter:
        return cls(load_bundle(path), device=device)

    @torch.no_grad()
    def probabilities(self, image: Any) -> MetaTensor:
        """Class probabilities ``[C, i, j, k]`` on the input image's grid (RAS affine in the meta)."""
        data = apply_chain(self.pre, {"image": image})
        volume = data["image"]
        logits = sliding_window_inference(
            volume[None].to(self.device),
            self.bundle.roi_size,
            self.bundle.sw_batch_size,
            self.net,
            overlap=self.bundle.overlap,
            mode="gaussian",
        )
        probs = torch.softmax(logits[0].float(), dim=0).cpu()
        data["pred"] = MetaTensor(probs, meta=volume.meta, applied_operations=volume.applied_operations)
        return self.invert(data)["pred"]

    def segment_array(self, image: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """``(label map indexed (i, j, k), its RAS affine, post-processing summary)``."""
        probs = self.probabilities(image)
        affine = np.asarray(probs.affine, dtype=np.float64)
        labels, summary = name_structures(probs.numpy(), affine, self.mode, self.classes, self.bundle.min_component_mm3)
        return labels, affine, summary

    def segment(self, image: str | Path | sitk.Image) -> sitk.Image:
        """Label map (``LABELS`` values of the sequence's structures) with exactly the input image's geometry."""
        reference = read_image(image) if isinstance(image, (str, Path)) else image
        if not isinstance(reference, sitk.Image):
            raise TypeError(f"segment expects an image path or SimpleITK image, got {type(image).__name__}")
        labels, _, summary = self.segment_array(sitk_to_metatensor(reference))
        if labels.shape != tuple(reference.GetSize()):
            raise RuntimeError(f"segmentation grid {labels.shape} does not match the image {reference.GetSize()}")
        for found in summary.values():
            if found["kept"] < found["expected"]:
                log.warning(
                    "%s segmentation found %d of %d structures (%s)", self.sequence, found["kept"], found["expected"], found
                )
        out = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(labels, (2, 1, 0))).astype(np.uint8))
        out.CopyInformation(reference)
        return out


# The CT's was the only one before per-sequence U-Nets; the name stays for callers and saved pickles.
CTSegmenter = Segmenter


@lru_cache(maxsize=8)
def _cached_segmenter(path: str, mtime: float) -> Segmenter:
    return Segmenter.load(path)


def segment_image(image: str | Path | sitk.Image, model_path: str | Path) -> sitk.Image:
    """Label map of one image (path or SimpleITK image) with the saved U-Net at ``model_path``.

    The model is loaded once per file (and again when the file changes), so a service can call this
    per request.
    """
    p = Path(model_path)
    if not p.is_file():
        raise FileNotFoundError(f"segmentation model {p} does not exist; run `cagerisk segment` first")
    return _cached_segmenter(str(p.resolve()), p.stat().st_mtime).segment(image)


segment_ct = segment_image
