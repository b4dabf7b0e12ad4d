"""`cagerisk cohort`: synthetic or real cohort -> manifest, label map, splits, Table 1 under ``paths.cohort``."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import mlflow
from omegaconf import DictConfig

from cagerisk.atomic import write_frame_atomic, write_text_atomic
from cagerisk.cohort.build import Cohort, manifest_cohort, synthetic_cohort
from cagerisk.cohort.manifest import ManifestError, relative_paths
from cagerisk.cohort.schema import LABELS
from cagerisk.cohort.table1 import build_table1, table1_markdown
from cagerisk.config import typed
from cagerisk.config.pipeline import PathsConfig, SyntheticCohortConfig, cohort_config
from cagerisk.tracking import stage_run

__all__ = ["MANIFEST", "run_cohort_stage", "write_cohort"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"


def write_cohort(cohort: Cohort, out: Path, source: str) -> dict[str, Path]:
    """Manifest (paths relative to ``out``), label map, Table 1; truth and oracle (synthetic) or the
    validation issues (manifest). The issues are written first: with no valid patient they are the
    only output, and the error points to them."""
    outputs: dict[str, Path] = {}
    if cohort.issues is not None:
        outputs["validation_issues.csv"] = write_frame_atomic(cohort.issues, out / "validation_issues.csv")
    if cohort.mask_sources is not None:
        outputs["mask_sources.csv"] = write_frame_atomic(
            relative_paths(cohort.mask_sources, out, ["mask"]), out / "mask_sources.csv"
        )
    if cohort.frame.empty:
        raise ManifestError(f"{source}: no valid patient left; see {out / 'validation_issues.csv'}")
    if cohort.truth is not None:
        outputs["truth.csv"] = write_text_atomic(cohort.truth.to_csv(index=False, float_format="%.6f"), out / "truth.csv")
    if cohort.oracle is not None:
        outputs["oracle.json"] = write_text_atomic(
            json.dumps(cohort.oracle, indent=2, sort_keys=True) + "\n", out / "oracle.json"
        )
    outputs[MANIFEST] = write_frame_atomic(relative_paths(cohort.frame, out), out / MANIFEST)
    outputs["labels.json"] = write_text_atomic(json.dumps(LABELS, indent=2) + "\n", out / "labels.json")
    table = build_table1(cohort.frame)
    outputs["table1.csv"] = write_frame_atomic(table, out / "table1.csv")
    outputs["table1.md"] = write_text_atomic(table1_markdown(table), out / "table1.md")
    return outputs


def log_cohort(cohort: Cohort, outputs: Mapping[str, Path]) -> None:
    mlflow.log_metrics(cohort.metrics())
    for name in (
        "manifest.csv",
        "labels.json",
        "table1.csv",
        "table1.md",
        "oracle.json",
        "validation_issues.csv",
        "mask_sources.csv",
    ):
        if name in outputs:
            mlflow.log_artifact(str(outputs[name]), artifact_path="cohort")


def run_cohort_stage(cfg: DictConfig) -> Path:
    """Write manifest, label map, Table 1 (and for synthetic cohorts truth and oracle) under paths.cohort."""
    paths = typed(cfg.paths, PathsConfig, "paths")
    config = cohort_config(cfg.cohort)
    out = Path(paths.cohort)
    out.mkdir(parents=True, exist_ok=True)
    with stage_run(cfg, "cohort", run_name=f"cohort-{config.name}") as run:
        if isinstance(config, SyntheticCohortConfig):
            cohort, source = synthetic_cohort(config, out), "synthetic cohort"
        else:
            cohort, source = manifest_cohort(config, out), config.manifest
        outputs = write_cohort(cohort, out, source)
        if run is not None:
            log_cohort(cohort, outputs)
    log.info("cohort of %d patients written to %s", len(cohort.frame), out.resolve())
    if run is not None:
        log.info("MLflow run %s at %s", run.info.run_id, mlflow.get_tracking_uri())
    return out
