"""`cagerisk reproducibility`: second-reader radiomics -> ICC table, mask agreement and summaries, one MLflow run.

Both readers' masks are the cohort's manual ones. Reader 1's features come from the radiomics stage's
table only when that table was extracted from manual masks; when the segment stage chose predicted
masks for a sequence with second-reader masks (``segment.masks=predicted``, the default), reader 1's
ROIs are extracted here from the manual masks instead (radiomics cache), so the ICCs measure two
readers, not the U-Net against a reader.

A second-reader ROI that fails is reported with patient, sequence and ROI; every other ROI is still
extracted and cached. With ``reproducibility.on_failure=error`` the stage then writes only the failures
and stops; with ``skip`` the ICC leaves that patient out of that ROI's features.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import mlflow
from omegaconf import DictConfig

from cagerisk.atomic import write_frame_atomic, write_text_atomic
from cagerisk.cohort import schema
from cagerisk.cohort.manifest import load_manifest
from cagerisk.config import typed
from cagerisk.config.pipeline import ComputeConfig, PathsConfig, RadiomicsConfig, ReproducibilityConfig
from cagerisk.radiomics.extraction import radiomics_manifest_path, selected_sequences
from cagerisk.radiomics.params import params_by_sequence
from cagerisk.reproducibility.interobserver import Reproducibility, ReproducibilityStageError, run_reproducibility
from cagerisk.reproducibility.summary import plot_icc_histograms
from cagerisk.tracking import stage_run

__all__ = ["run_reproducibility_stage", "write_reproducibility_outputs"]

log = logging.getLogger(__name__)


def predicted_mask_sequences(manifest_path: Path, sequences: list[str]) -> list[str]:
    """Sequences among ``sequences`` for which the manifest at ``manifest_path`` (the radiomics stage's)
    chose a predicted mask for some patient (``{seq}_mask_source``)."""
    if not manifest_path.is_file():
        return []
    from cagerisk.segment.manifest import PREDICTED, source_column

    frame = load_manifest(manifest_path)
    return [
        s for s in sequences if source_column(s) in frame.columns and (frame[source_column(s)].astype(str) == PREDICTED).any()
    ]


def write_reproducibility_outputs(result: Reproducibility, config: ReproducibilityConfig, complete: bool) -> dict[str, Path]:
    """Failures always; the ICC table, reader-2 features, summaries and plot only when ``complete``."""
    report_dir = Path(config.report_dir)
    outputs = {"failures": write_frame_atomic(result.failures, report_dir / "failures.csv")}
    if not complete:
        return outputs
    outputs["icc"] = write_frame_atomic(result.icc, Path(config.output))
    outputs["reader2"] = write_frame_atomic(result.reader2, Path(config.reader2_output))
    outputs["summary"] = write_frame_atomic(result.summary, report_dir / "icc_summary.csv")
    outputs["agreement"] = write_frame_atomic(result.agreement, report_dir / "mask_agreement.csv")
    outputs["agreement_summary"] = write_frame_atomic(result.agreement_summary, report_dir / "mask_agreement_summary.csv")
    outputs["histogram"] = report_dir / "icc_histogram.png"
    plot_icc_histograms(result.icc, config.threshold, outputs["histogram"])
    metrics = json.dumps(result.metrics(config.threshold), indent=2, sort_keys=True) + "\n"
    outputs["metrics"] = write_text_atomic(metrics, report_dir / "metrics.json")
    return outputs


def log_reproducibility(result: Reproducibility, outputs: Mapping[str, Path], threshold: float) -> None:
    mlflow.log_metrics(result.metrics(threshold))
    for path in outputs.values():
        if path.exists():
            mlflow.log_artifact(str(path), "reproducibility")


def _failure_error(result: Reproducibility) -> ReproducibilityStageError:
    lines = [
        f"  - patient {r.patient_id}, sequence {r.sequence}, ROI {r.roi} ({r.step}): {r.error}"
        for r in result.failures.head(10).itertuples()
    ]
    return ReproducibilityStageError(
        f"reproducibility: {len(result.failures)} second-reader ROI check(s) failed; every other ROI is "
        f"extracted and cached. No ICC table written (reproducibility.on_failure=error); fix the masks "
        f"or rerun with reproducibility.on_failure=skip. Failures in {result.outputs['failures']}:\n" + "\n".join(lines)
    )


def run_reproducibility_stage(cfg: DictConfig) -> Reproducibility:
    """``cagerisk reproducibility``: ICC table, mask agreement and summaries, in one MLflow run."""
    if "reproducibility" not in cfg:
        raise ValueError(
            "config has no `reproducibility` group: add `- reproducibility: default` to conf/config.yaml's "
            "defaults, or pass +reproducibility=default"
        )
    config = typed(cfg.reproducibility, ReproducibilityConfig, "reproducibility")
    radiomics = typed(cfg.radiomics, RadiomicsConfig, "radiomics")
    compute = typed(cfg.compute, ComputeConfig, "compute")
    paths = typed(cfg.paths, PathsConfig, "paths")
    manifest_path = Path(config.manifest or Path(paths.cohort) / "manifest.csv")
    manifest = load_manifest(manifest_path)
    sequences = selected_sequences(manifest, radiomics.sequences)
    sequences = [s for s in sequences if schema.mask_column(s, 2) in manifest.columns]
    if not sequences:
        raise ValueError(f"{manifest_path}: no second-reader mask column ({{seq}}_mask_r2) for the radiomics sequences")
    params = params_by_sequence(radiomics.params_mapping(), sequences)
    reader1 = radiomics.output if config.reader1_source == "table" else None
    if reader1 is not None:
        automatic = predicted_mask_sequences(radiomics_manifest_path(radiomics.manifest, paths), sequences)
        if automatic:
            log.info(
                "the radiomics table's %s features come from predicted masks: reader 1 extracted from the manual masks",
                automatic,
            )
            reader1 = None
    with stage_run(cfg, "reproducibility") as run:
        result = run_reproducibility(
            manifest,
            params,
            sequences,
            reader1=reader1,
            cache_dir=radiomics.cache_dir,
            compute_cfg=asdict(compute),
            alpha=config.alpha,
            min_patients=config.min_patients,
            threshold=config.threshold,
            splits=config.splits,
            show_progress=config.progress,
            check_geometry=radiomics.check_geometry,
        )
        result.run_id = run.info.run_id if run is not None else None
        complete = len(result.failures) == 0 or config.on_failure == "skip"
        result.outputs = write_reproducibility_outputs(result, config, complete)
        if run is not None:
            log_reproducibility(result, result.outputs, config.threshold)
        if not complete:
            raise _failure_error(result)
        log.info("ICC table %s: %d features", result.outputs["icc"], len(result.icc))
    return result
