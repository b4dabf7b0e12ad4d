"""The segment stage's manifest: the cohort manifest plus the predicted masks of every segmented sequence.

Columns added to the cohort's, per segmented sequence ``seq``:

- ``{seq}_mask_pred``: the U-Net's label map (path relative to the new manifest's folder);
- ``{seq}_mask_source``: ``predicted`` or ``manual``, which mask later stages (radiomics, deep) use for
  that patient (``segment.masks``, or ``segment.sequences.<seq>.masks``: ``predicted`` everywhere -
  serving predicts every mask it is not sent, so training features match them - or ``manual`` where
  a manual mask exists).

``{seq}_mask`` keeps the manual mask, so reader-agreement analyses (reproducibility) still find it;
``mask_for_features`` picks the mask a feature stage should read.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from cagerisk.atomic import write_frame_atomic
from cagerisk.cohort.manifest import path_columns
from cagerisk.cohort.schema import SEQUENCES, is_blank, mask_column

__all__ = [
    "MANUAL",
    "PREDICTED",
    "ct_mask_for_features",
    "ct_mask_sources",
    "mask_for_features",
    "mask_sources",
    "predicted_column",
    "source_column",
    "with_feature_masks",
    "write_segment_manifest",
]

PREDICTED, MANUAL = "predicted", "manual"


def predicted_column(sequence: str) -> str:
    return f"{sequence}_mask_pred"


def source_column(sequence: str) -> str:
    return f"{sequence}_mask_source"


def mask_sources(frame: pd.DataFrame, preference: str, sequence: str = "ct") -> list[str]:
    """Per patient, ``predicted`` or ``manual`` for ``sequence`` given its ``masks`` choice: ``manual``
    falls back to the prediction where a patient has no manual mask, ``predicted`` is ``predicted``."""
    if preference not in (PREDICTED, MANUAL):
        raise ValueError(f"segment.masks ({sequence}) must be {PREDICTED!r} or {MANUAL!r}, got {preference!r}")
    column = mask_column(sequence)
    manual = frame[column] if column in frame.columns else pd.Series([None] * len(frame), index=frame.index)
    if preference == PREDICTED:
        return [PREDICTED] * len(frame)
    return [MANUAL if not is_blank(v) else PREDICTED for v in manual]


def ct_mask_sources(frame: pd.DataFrame, preference: str) -> list[str]:
    return mask_sources(frame, preference, "ct")


def mask_for_features(frame: pd.DataFrame, sequence: str) -> pd.Series:
    """The mask path each patient's ``sequence`` features come from: the one the segment stage chose,
    or ``{sequence}_mask`` when the manifest has no choice for it (the cohort manifest itself, or a
    sequence without a U-Net)."""
    source = source_column(sequence)
    if source not in frame.columns:
        return frame[mask_column(sequence)]
    return frame[predicted_column(sequence)].where(frame[source] == PREDICTED, frame[mask_column(sequence)])


def ct_mask_for_features(frame: pd.DataFrame) -> pd.Series:
    return mask_for_features(frame, "ct")


def with_feature_masks(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """``frame`` with every ``{seq}_mask`` replaced by the mask the segment stage chose, and per sequence
    how many patients use each source (for the log). A manifest without choices comes back as is."""
    counts: dict[str, dict[str, int]] = {}
    out = frame
    for seq in SEQUENCES:
        if source_column(seq) not in frame.columns or mask_column(seq) not in frame.columns:
            continue
        if out is frame:
            out = frame.copy()
        out[mask_column(seq)] = mask_for_features(frame, seq)
        counts[seq] = {str(k): int(v) for k, v in frame[source_column(seq)].astype(str).value_counts().items()}
    return out, counts


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
