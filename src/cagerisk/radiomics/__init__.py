"""PyRadiomics extraction per (patient, sequence, ROI): naming, parameters, cache, dask map, stage."""

from cagerisk.radiomics.cache import RadiomicsCache, file_sha256, roi_cache_key
from cagerisk.radiomics.distributed import compute_client, map_rois
from cagerisk.radiomics.extract import (
    RoiExtractionError,
    RoiOutcome,
    RoiTask,
    extract_roi,
    extract_roi_outcome,
    new_extractor,
    read_roi_inputs,
)
from cagerisk.radiomics.naming import (
    FeatureName,
    feature_column,
    feature_groups,
    is_diagnostic,
    parse_feature_column,
    prefixed_features,
)
from cagerisk.radiomics.params import (
    RadiomicsParams,
    RadiomicsParamsError,
    library_versions,
    load_params_file,
    params_by_sequence,
    sequence_params,
    settings_hash,
)
from cagerisk.radiomics.stage import (
    RadiomicsExtraction,
    RadiomicsStageError,
    build_roi_tasks,
    extract_radiomics,
    radiomics_table,
    run_radiomics_stage,
    write_stage_outputs,
)

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
