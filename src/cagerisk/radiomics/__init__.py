"""PyRadiomics extraction per (patient, sequence, ROI): naming, parameters, cache, dask map, stage.

Names are imported on first use (PEP 562): importing one light module of this package (what a
served model unpickles) does not import the others (stages, training, tracking).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "RadiomicsCache": "cagerisk.radiomics.cache",
    "file_sha256": "cagerisk.radiomics.cache",
    "roi_cache_key": "cagerisk.radiomics.cache",
    "compute_client": "cagerisk.radiomics.distributed",
    "map_rois": "cagerisk.radiomics.distributed",
    "RoiExtractionError": "cagerisk.radiomics.extract",
    "RoiOutcome": "cagerisk.radiomics.extract",
    "RoiTask": "cagerisk.radiomics.extract",
    "extract_roi": "cagerisk.radiomics.extract",
    "extract_roi_outcome": "cagerisk.radiomics.extract",
    "new_extractor": "cagerisk.radiomics.extract",
    "read_roi_inputs": "cagerisk.radiomics.extract",
    "FeatureName": "cagerisk.radiomics.naming",
    "feature_column": "cagerisk.radiomics.naming",
    "feature_groups": "cagerisk.radiomics.naming",
    "is_diagnostic": "cagerisk.radiomics.naming",
    "parse_feature_column": "cagerisk.radiomics.naming",
    "prefixed_features": "cagerisk.radiomics.naming",
    "RadiomicsParams": "cagerisk.radiomics.params",
    "RadiomicsParamsError": "cagerisk.radiomics.params",
    "library_versions": "cagerisk.radiomics.params",
    "load_params_file": "cagerisk.radiomics.params",
    "params_by_sequence": "cagerisk.radiomics.params",
    "sequence_params": "cagerisk.radiomics.params",
    "settings_hash": "cagerisk.radiomics.params",
    "RadiomicsExtraction": "cagerisk.radiomics.stage",
    "RadiomicsStageError": "cagerisk.radiomics.stage",
    "build_roi_tasks": "cagerisk.radiomics.stage",
    "extract_radiomics": "cagerisk.radiomics.stage",
    "radiomics_table": "cagerisk.radiomics.stage",
    "run_radiomics_stage": "cagerisk.radiomics.stage",
    "write_stage_outputs": "cagerisk.radiomics.stage",
}
__all__ = [
    "FeatureName",
    "RadiomicsCache",
    "RadiomicsExtraction",
    "RadiomicsParams",
    "RadiomicsParamsError",
    "RadiomicsStageError",
    "RoiExtractionError",
    "RoiOutcome",
    "RoiTask",
    "build_roi_tasks",
    "compute_client",
    "extract_radiomics",
    "extract_roi",
    "extract_roi_outcome",
    "feature_column",
    "feature_groups",
    "file_sha256",
    "is_diagnostic",
    "library_versions",
    "load_params_file",
    "map_rois",
    "new_extractor",
    "params_by_sequence",
    "parse_feature_column",
    "prefixed_features",
    "radiomics_table",
    "read_roi_inputs",
    "roi_cache_key",
    "run_radiomics_stage",
    "sequence_params",
    "settings_hash",
    "write_stage_outputs",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return list(__all__)
