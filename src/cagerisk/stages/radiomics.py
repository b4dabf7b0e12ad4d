"""`cagerisk radiomics`: manifest -> ``radiomics.output`` (one wide Parquet table), with cache, dask map, MLflow run.

Failed ROIs: every good ROI is still extracted and cached, the failures go to ``radiomics.failures`` and
MLflow with patient, sequence, ROI, files and error. With ``radiomics.on_failure=error`` the stage then
stops with a summary and writes no table, so that DVC never records, and downstream stages never train
on, a table with silent holes; fix the inputs (or drop the patient from the manifest) and rerun: only the
failed ROIs are computed again. ``on_failure=nan`` writes the table with NaN in the failed ROIs' columns.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import mlflow
import yaml
from omegaconf import DictConfig

from cagerisk.atomic import write_frame_atomic, write_text_atomic
from cagerisk.cohort.manifest import load_manifest
from cagerisk.config import typed
from cagerisk.config.pipeline import ComputeConfig, PathsConfig, RadiomicsConfig
from cagerisk.radiomics.extraction import (
    RadiomicsExtraction,
    extract_radiomics,
    failure_summary,
    radiomics_manifest_path,
    selected_sequences,
    with_feature_masks,
)
from cagerisk.radiomics.params import RadiomicsParams, params_by_sequence
from cagerisk.tracking import stage_run

__all__ = ["RadiomicsStageError", "run_radiomics_stage", "write_radiomics_outputs"]

log = logging.getLogger(__name__)


class RadiomicsStageError(RuntimeError):
    """ROIs failed; every other ROI is cached and the failures table says which and why."""


def write_radiomics_outputs(
    extraction: RadiomicsExtraction, config: RadiomicsConfig, params: Mapping[str, RadiomicsParams] | None = None
) -> dict[str, Path]:
    """Failures CSV and summary JSON always; the table only when complete or ``on_failure=nan``.

    The summary records each sequence's settings hash, so that whoever later extracts features for this
    table's models (``cagerisk register`` for serving) can check it uses the same settings."""
    outputs: dict[str, Path] = {"failures": write_frame_atomic(extraction.failures, Path(config.failures))}
    summary = {**extraction.metrics(), "feature_counts": extraction.feature_counts, "on_failure": config.on_failure}
    if params:
        summary["settings_sha256"] = {seq: p.sha256 for seq, p in params.items()}
    outputs["summary"] = write_text_atomic(json.dumps(summary, indent=2, sort_keys=True) + "\n", config.summary)
    output = Path(config.output)
    if extraction.n_failed == 0 or config.on_failure == "nan":
        outputs["table"] = write_frame_atomic(extraction.table, output)
        log.info("radiomics table %s: %d patients x %d features", output, *extraction.table.shape)
    elif output.exists():
        log.warning("%s is left as it was, from an earlier run: this run had failed ROIs", output)
    return outputs


def log_radiomics(extraction: RadiomicsExtraction, params: Mapping[str, RadiomicsParams], outputs: Mapping[str, Path]) -> None:
    mlflow.log_metrics({k: float(v) for k, v in extraction.metrics().items()})
    mlflow.log_dict(extraction.feature_counts, "radiomics/feature_counts.json")
    mlflow.log_artifact(str(outputs["failures"]), "radiomics")
    mlflow.log_artifact(str(outputs["summary"]), "radiomics")
    with tempfile.TemporaryDirectory() as tmp:
        for seq, p in params.items():
            header = f"# PyRadiomics parameters of sequence {seq}: {p.path}, settings sha256 {p.sha256}\n"
            (Path(tmp) / f"{seq}.yaml").write_text(header + yaml.safe_dump(p.params, sort_keys=False))
        mlflow.log_artifacts(tmp, "radiomics/params")


def run_radiomics_stage(cfg: DictConfig) -> RadiomicsExtraction:
    """``cagerisk radiomics``: manifest -> ``radiomics.parquet`` with cache, dask map, MLflow run."""
    config = typed(cfg.radiomics, RadiomicsConfig, "radiomics")
    compute = typed(cfg.compute, ComputeConfig, "compute")
    paths = typed(cfg.paths, PathsConfig, "paths")
    manifest = load_manifest(radiomics_manifest_path(config.manifest, paths))
    manifest = with_feature_masks(manifest, config.reader)
    sequences = selected_sequences(manifest, config.sequences)
    params = params_by_sequence(config.params_mapping(), sequences)
    with stage_run(cfg, "radiomics") as run:
        extraction = extract_radiomics(
            manifest,
            params,
            cache_dir=config.cache_dir,
            compute_cfg=asdict(compute),
            sequences=sequences,
            reader=config.reader,
            show_progress=config.progress,
            check_geometry=config.check_geometry,
        )
        outputs = write_radiomics_outputs(extraction, config, params)
        if run is not None:
            log_radiomics(extraction, params, outputs)
        if extraction.n_failed and config.on_failure == "error":
            raise RadiomicsStageError(
                f"radiomics: {extraction.n_failed} of {extraction.n_rois} ROIs failed; the other "
                f"{extraction.n_rois - extraction.n_failed} are cached and a rerun computes only the failed "
                f"ones. No table written (radiomics.on_failure=error). Failures in {outputs['failures']}:\n"
                + failure_summary(extraction.failures)
            )
    return extraction
