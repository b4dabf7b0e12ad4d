"""The segment stage's manifest: the cohort manifest plus the predicted CT masks.

Columns added to the cohort's:

- ``ct_mask_pred``: the U-Net's label map (path relative to the new manifest's folder);
- ``ct_mask_source``: ``predicted`` or ``manual``, which CT mask later stages use for that patient
  (``segment.ct_mask``: ``predicted`` everywhere - serving has only predicted masks, so training
  features match them - or ``manual`` where a manual mask exists).

``ct_mask`` keeps the manual mask, so reader-agreement analyses still find it;
``ct_mask_for_features`` picks the mask a feature stage should read.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from cagerisk.atomic import write_frame_atomic
from cagerisk.cohort.manifest import path_columns
from cagerisk.cohort.schema import is_blank

__all__ = ["PREDICTED", "MANUAL", "ct_mask_for_features", "ct_mask_sources", "write_segment_manifest"]

PREDICTED, MANUAL = "predicted", "manual"


def ct_mask_sources(frame: pd.DataFrame, preference: str) -> list[str]:
    """Per patient, ``predicted`` or ``manual`` given ``segment.ct_mask`` (predicted / manual)."""
    if preference not in (PREDICTED, MANUAL):
        raise ValueError(f"segment.ct_mask must be {PREDICTED!r} or {MANUAL!r}, got {preference!r}")
    manual = frame["ct_mask"] if "ct_mask" in frame.columns else pd.Series([None] * len(frame), index=frame.index)
    if preference == PREDICTED:
        return [PREDICTED] * len(frame)
    return [MANUAL if not is_blank(v) else PREDICTED for v in manual]


def ct_mask_for_features(frame: pd.DataFrame) -> pd.Series:
    """The CT mask path each patient's features come from (``ct_mask`` when the manifest has no
    ``ct_mask_source``, i.e. the cohort manifest itself)."""
    if "ct_mask_source" not in frame.columns:
        return frame["ct_mask"]
    return frame["ct_mask_pred"].where(frame["ct_mask_source"] == PREDICTED, frame["ct_mask"])


def write_segment_manifest(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` (absolute paths) with image and mask paths relative to ``path``'s folder."""
    out_path = Path(path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    base = out_path.parent.resolve()
    out = frame.copy()
    for col in path_columns(out):
        out[col] = [os.path.relpath(str(v), base) if not is_blank(v) else None for v in out[col]]
    write_frame_atomic(out, out_path)
    return out_path
