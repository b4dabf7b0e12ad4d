"""Cohort: manifest schema and validation, synthetic multi-center cohort, splits, Table 1."""

from cagerisk.cohort.manifest import (
    ManifestError,
    ManifestIssue,
    ValidationResult,
    load_manifest,
    validate_manifest,
)
from cagerisk.cohort.schema import (
    CLINICAL,
    CLINICAL_NAMES,
    ID,
    LABELS,
    OUTCOME,
    ROIS,
    SEQUENCES,
    SPLITS,
    roi_label_values,
    sequence_rois,
)

__all__ = [
    "CLINICAL",
    "CLINICAL_NAMES",
    "ID",
    "LABELS",
    "OUTCOME",
    "ROIS",
    "SEQUENCES",
    "SPLITS",
    "ManifestError",
    "ManifestIssue",
    "ValidationResult",
    "load_manifest",
    "roi_label_values",
    "sequence_rois",
    "validate_manifest",
]
