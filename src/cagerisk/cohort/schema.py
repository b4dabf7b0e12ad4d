"""The manifest contract shared by every stage: sequences, label values, ROIs and clinical columns.

One manifest row is one patient. Images and masks are referenced by path (relative to the manifest's
folder or absolute). Every mask is a label map with the values of ``LABELS``; an ROI is a set of
label values chosen per patient from the fused levels (the fused levels and their neighbours).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

# Sequence names never contain "_" so feature columns `{sequence}_{roi}_{...}` split unambiguously.
SEQUENCES: tuple[str, ...] = ("ct", "t1", "t2", "t1ax", "t2ax")
SEQUENCE_DESCRIPTIONS: dict[str, str] = {
    "ct": "CT of the lumbar spine",
    "t1": "sagittal T1-weighted MRI",
    "t2": "sagittal T2-weighted MRI",
    "t1ax": "axial T1-weighted MRI at the fused levels",
    "t2ax": "axial T2-weighted MRI at the fused levels",
}

VERTEBRAE: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5", "S1")
LEVELS: tuple[str, ...] = ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")
MUSCLES: tuple[str, ...] = ("psoas", "quadratus", "paraspinal")

# One label map for all masks. Vertebral bodies 1-6, discs 11-15, muscles 21-26 (left, right).
LABELS: dict[str, int] = {
    **{f"vertebra_{v}": i + 1 for i, v in enumerate(VERTEBRAE)},
    **{f"disc_{lv}": 11 + i for i, lv in enumerate(LEVELS)},
    "psoas_left": 21,
    "psoas_right": 22,
    "quadratus_left": 23,
    "quadratus_right": 24,
    "paraspinal_left": 25,
    "paraspinal_right": 26,
}
LABEL_NAMES: dict[int, str] = {value: name for name, value in LABELS.items()}

# Which structures each sequence's mask holds, and which ROIs are extracted from it.
SEQUENCE_STRUCTURES: dict[str, tuple[str, ...]] = {
    "ct": ("vertebra",),
    "t1": ("vertebra", "disc"),
    "t2": ("vertebra", "disc"),
    "t1ax": MUSCLES,
    "t2ax": MUSCLES,
}
ROIS: dict[str, tuple[str, ...]] = dict(SEQUENCE_STRUCTURES)


def is_blank(value: object) -> bool:
    """True for an empty manifest cell: None, pandas' NA/NaT, a float NaN, or text that is only whitespace.

    The one definition of "missing" for path and text cells (manifest validation, second-reader masks,
    serving inputs), so a cell is blank or not the same way everywhere.
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


def sequence_rois() -> list[tuple[str, str]]:
    """Every (sequence, roi) pair of the study, in a fixed order."""
    return [(seq, roi) for seq in SEQUENCES for roi in ROIS[seq]]


def parse_levels(fused_levels: str) -> list[str]:
    """``"L4-L5;L5-S1"`` -> ``["L4-L5", "L5-S1"]``; raises ValueError on an unknown level."""
    levels = [part.strip() for part in str(fused_levels).split(";") if part.strip()]
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown or not levels:
        raise ValueError(f"fused_levels {fused_levels!r}: expected ';'-separated levels among {LEVELS}")
    return sorted(levels, key=LEVELS.index)


def roi_label_values(fused_levels: str | list[str], roi: str) -> list[int]:
    """Label values of one ROI for a patient: the fused levels and their neighbours.

    Vertebrae: those bounding the fused levels plus one above and one below. Discs: the fused discs
    plus the adjacent disc above and below. Muscles: both sides (the axial volume covers the fused
    levels only).
    """
    levels = parse_levels(fused_levels) if isinstance(fused_levels, str) else list(fused_levels)
    first, last = LEVELS.index(levels[0]), LEVELS.index(levels[-1])
    if roi == "vertebra":
        lo, hi = max(first - 1, 0), min(last + 2, len(VERTEBRAE) - 1)
        return [LABELS[f"vertebra_{VERTEBRAE[i]}"] for i in range(lo, hi + 1)]
    if roi == "disc":
        lo, hi = max(first - 1, 0), min(last + 1, len(LEVELS) - 1)
        return [LABELS[f"disc_{LEVELS[i]}"] for i in range(lo, hi + 1)]
    if roi in MUSCLES:
        return [LABELS[f"{roi}_left"], LABELS[f"{roi}_right"]]
    raise ValueError(f"unknown ROI {roi!r}; expected one of vertebra, disc, {', '.join(MUSCLES)}")


def allowed_label_values(sequence: str) -> set[int]:
    """Label values that may appear in a mask of this sequence (0 is background)."""
    prefixes = SEQUENCE_STRUCTURES[sequence]
    return {0} | {v for name, v in LABELS.items() if name.split("_")[0] in prefixes}


def image_column(sequence: str) -> str:
    return f"{sequence}_image"


def mask_column(sequence: str, reader: int = 1) -> str:
    """Mask column of a sequence; reader 2 is the optional second-reader mask."""
    return f"{sequence}_mask" if reader == 1 else f"{sequence}_mask_r{reader}"


@dataclass(frozen=True)
class ClinicalVariable:
    name: str
    kind: str  # "continuous", "binary" or "categorical"
    low: float | None = None
    high: float | None = None
    categories: tuple[str, ...] = ()
    description: str = ""
    # Known before surgery. A variable measured afterwards (follow-up) describes the cohort in Table 1
    # but can never be a predictor: it is not available when the risk is needed and, for follow-up,
    # is tied to how subsidence is found (longer follow-up, more imaging, more CS detected).
    preoperative: bool = True


CLINICAL: tuple[ClinicalVariable, ...] = (
    ClinicalVariable("sex", "categorical", categories=("F", "M"), description="sex"),
    ClinicalVariable("age", "continuous", 18, 100, description="age at surgery, years"),
    ClinicalVariable("bmi", "continuous", 12, 60, description="body-mass index, kg/m^2"),
    ClinicalVariable(
        "diagnosis",
        "categorical",
        categories=("stenosis", "spondylolisthesis", "herniation"),
        description="primary diagnosis",
    ),
    ClinicalVariable("n_levels", "continuous", 1, 3, description="number of fused levels"),
    ClinicalVariable("osteoporosis", "binary", 0, 1, description="osteoporosis (DXA T-score <= -2.5)"),
    ClinicalVariable(
        "followup_months",
        "continuous",
        0,
        240,
        description="follow-up after surgery, months (Table 1 only, never a predictor)",
        preoperative=False,
    ),
)
CLINICAL_NAMES: tuple[str, ...] = tuple(v.name for v in CLINICAL)
# The clinical variables a model may use (selection.clinical.variables must be among these, or outside the schema).
CANDIDATE_PREDICTORS: tuple[str, ...] = tuple(v.name for v in CLINICAL if v.preoperative)
POSTOPERATIVE: tuple[str, ...] = tuple(v.name for v in CLINICAL if not v.preoperative)

OUTCOME = "cs"
ID = "patient_id"
SPLITS: tuple[str, ...] = ("train", "val", "test")
# Columns every manifest must have, beyond the image and mask columns.
REQUIRED_COLUMNS: tuple[str, ...] = (ID, "center", *CLINICAL_NAMES, "fused_levels", OUTCOME)
# Optional readers' predictions: reader_<name> (0/1) and reader_<name>_prob (0..1).
READER_PREFIX = "reader_"
