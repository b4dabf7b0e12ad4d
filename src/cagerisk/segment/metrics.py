"""Per-structure Dice and HD95 between a predicted and a reference label map (MONAI's metrics)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from cagerisk.cohort.schema import LABEL_NAMES

__all__ = ["per_label_dice", "per_label_hd95", "summarise_dice"]


def per_label_dice(prediction: np.ndarray, reference: np.ndarray, labels: Sequence[int]) -> dict[str, float]:
    """Dice of every label value, keyed by structure name (``vertebra_L4``).

    A label absent from the reference gives NaN (nothing to find), not 0 or 1, so that averages
    over patients are over the vertebrae each patient has.
    """
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} != reference shape {reference.shape}")
    pred = torch.as_tensor(np.asarray(prediction, dtype=np.int64))
    ref = torch.as_tensor(np.asarray(reference, dtype=np.int64))
    # Map label values to consecutive class indices; everything else is background.
    lut = {int(v): i + 1 for i, v in enumerate(labels)}
    pred_idx = torch.zeros_like(pred)
    ref_idx = torch.zeros_like(ref)
    for value, index in lut.items():
        pred_idx[pred == value] = index
        ref_idx[ref == value] = index
    dice = compute_dice(pred_idx[None, None], ref_idx[None, None], include_background=False, num_classes=len(labels) + 1)[0]
    return {LABEL_NAMES.get(int(v), str(v)): float(d) for v, d in zip(labels, dice.tolist(), strict=True)}


def per_label_hd95(
    prediction: np.ndarray, reference: np.ndarray, labels: Sequence[int], spacing: Sequence[float]
) -> dict[str, float]:
    """95th-percentile Hausdorff distance (mm, ``spacing`` per array axis) of every label value, keyed
    by structure name. NaN where the structure is absent from the reference or the prediction: the
    distance to nothing is undefined, and Dice (0) already counts a structure the prediction missed."""
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} != reference shape {reference.shape}")
    pred = torch.as_tensor(np.asarray(prediction, dtype=np.int64))
    ref = torch.as_tensor(np.asarray(reference, dtype=np.int64))
    out: dict[str, float] = {}
    for value in labels:
        p, r = pred == int(value), ref == int(value)
        name = LABEL_NAMES.get(int(value), str(value))
        if not bool(p.any()) or not bool(r.any()):
            out[name] = float("nan")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            distance = compute_hausdorff_distance(
                p[None, None].float(), r[None, None].float(), include_background=True, percentile=95, spacing=list(spacing)
            )
        out[name] = float(distance[0, 0])
    return out


def summarise_dice(per_patient: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean Dice per structure over patients (NaNs skipped) and the overall mean as ``mean``."""
    if not per_patient:
        return {}
    names = sorted({name for scores in per_patient.values() for name in scores})
    summary = {}
    for name in names:
        values = [scores.get(name, np.nan) for scores in per_patient.values()]
        summary[name] = float(np.nanmean(values)) if np.any(np.isfinite(values)) else float("nan")
    finite = [v for v in summary.values() if np.isfinite(v)]
    summary["mean"] = float(np.mean(finite)) if finite else float("nan")
    return summary
