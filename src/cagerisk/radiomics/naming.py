"""Radiomics feature column names: ``{sequence}_{roi}_{image_type}_{feature_class}_{feature}``.

The part after ``{sequence}_{roi}_`` is PyRadiomics' own key (``original_shape_Sphericity``,
``log-sigma-4-0-mm-3D_firstorder_Mean``, ``wavelet-LLH_glcm_Contrast``), so a column can be traced
back to PyRadiomics' documentation without a lookup table. Sequence, ROI, image type and feature
names contain no ``_``, which makes the split unambiguous.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DIAGNOSTIC_PREFIX = "diagnostics_"


@dataclass(frozen=True)
class FeatureName:
    sequence: str
    roi: str
    image_type: str
    feature_class: str
    feature: str

    @property
    def group(self) -> tuple[str, str]:
        return (self.sequence, self.roi)

    @property
    def pyradiomics_key(self) -> str:
        return f"{self.image_type}_{self.feature_class}_{self.feature}"


def is_diagnostic(key: str) -> bool:
    """PyRadiomics' provenance entries (versions, hashes, bounding boxes) are not features."""
    return key.startswith(DIAGNOSTIC_PREFIX)


def feature_column(sequence: str, roi: str, pyradiomics_key: str) -> str:
    if "_" in sequence or "_" in roi:
        raise ValueError(f"sequence {sequence!r} and ROI {roi!r} must not contain '_'")
    return f"{sequence}_{roi}_{pyradiomics_key}"


def parse_feature_column(column: str) -> FeatureName:
    """``t2_disc_wavelet-LLH_glcm_Contrast`` -> its five parts; ValueError for anything else."""
    parts = column.split("_")
    if len(parts) != 5 or not all(parts):
        raise ValueError(
            f"{column!r} is not a radiomics column; expected {{sequence}}_{{roi}}_{{image_type}}_{{feature_class}}_{{feature}}"
        )
    return FeatureName(*parts)


def prefixed_features(sequence: str, roi: str, features: Mapping[str, float]) -> dict[str, float]:
    """One ROI's PyRadiomics result -> table columns, diagnostics dropped, PyRadiomics' order kept."""
    return {feature_column(sequence, roi, k): v for k, v in features.items() if not is_diagnostic(k)}


def feature_groups(columns: Iterable[str]) -> dict[tuple[str, str], list[str]]:
    """Radiomics columns grouped by (sequence, ROI), in column order; other columns are skipped."""
    groups: dict[tuple[str, str], list[str]] = {}
    for column in columns:
        try:
            name = parse_feature_column(column)
        except ValueError:
            continue
        groups.setdefault(name.group, []).append(column)
    return groups
