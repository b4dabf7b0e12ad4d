"""PyRadiomics extraction per (patient, sequence, ROI): naming, parameters, cache, dask map, the wide table.

Names are imported on first use (PEP 562): importing one light module of this package (what a
served model unpickles) does not import the others (stages, training, tracking).
"""

from __future__ import annotations

from cagerisk.lazy import lazy_exports

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
    "RadiomicsExtraction": "cagerisk.radiomics.extraction",
    "build_roi_tasks": "cagerisk.radiomics.extraction",
    "extract_radiomics": "cagerisk.radiomics.extraction",
    "radiomics_table": "cagerisk.radiomics.extraction",
    "selected_sequences": "cagerisk.radiomics.extraction",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
