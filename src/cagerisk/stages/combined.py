"""``cagerisk combined``: clinical analysis, clinical model and combined model -> ``${paths.models}/combined``.

Reads the manifest and the signatures stage's outputs, fits the models (:func:`cagerisk.models.combined.fit_combined`),
checks that the saved model reproduces the held-out scores from the raw feature tables, writes the model,
scores and tables, and logs them to MLflow.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cagerisk.atomic import write_frame_atomic, write_joblib_atomic, write_text_atomic
from cagerisk.config.modelling import model_config
from cagerisk.models.combined import CombinedResult, check_serving_consistency, fit_combined, read_signature_outputs
from cagerisk.models.crossfit import read_deep_table
from cagerisk.models.data import read_feature_table, read_manifest
from cagerisk.models.served import MODEL_FILE
from cagerisk.tracking import stage_run
from cagerisk.tracking.trials import log_trial

log = logging.getLogger(__name__)


def write_combined(result: CombinedResult, out: Path) -> list[Path]:
    """The model, scores, clinical table, both trial tables, threshold.json and summary.json (when fitted)."""
    if not result.fitted:
        return []
    threshold = result.model.threshold
    return [
        write_joblib_atomic(result.model, out / MODEL_FILE),
        write_frame_atomic(result.scores, out / "scores.parquet"),
        write_frame_atomic(result.analysis.table, out / "clinical_logistic.csv"),
        write_frame_atomic(result.clinical.trials, out / "clinical_trials.csv"),
        write_frame_atomic(result.combined.trials, out / "combined_trials.csv"),
        write_text_atomic(
            json.dumps({"threshold": threshold, "rule": "youden_on_validation"}, indent=2) + "\n", out / "threshold.json"
        ),
        write_text_atomic(json.dumps(result.summary, indent=2, default=str) + "\n", out / "summary.json"),
    ]


def log_combined(result: CombinedResult, out: Path) -> None:
    """Both searches' metrics; when fitted, the threshold, the AUCs per split and the output folder."""
    import mlflow

    for name, search in (("clinical", result.clinical), ("combined", result.combined)):
        mlflow.log_metrics({f"{name}_cv_auc": search.cv_auc, f"{name}_n_trials": search.n_trials_total})
    if not result.fitted:
        return
    mlflow.log_metric("threshold", result.model.threshold)
    for split, values in result.summary.get("auc", {}).items():
        mlflow.log_metrics({f"{split}_auc_{k}": v for k, v in values.items()})
    mlflow.log_artifacts(str(out), artifact_path="combined")


def run_combined_stage(cfg: DictConfig) -> dict[str, Any]:
    """Stage ``combined``: clinical analysis, clinical model, combined model, threshold; written under
    ``paths.models/combined``."""
    config = model_config(cfg)
    out = Path(cfg.paths.models) / "combined"
    features = Path(cfg.paths.features)
    manifest = read_manifest(Path(cfg.paths.cohort) / "manifest.csv")
    signatures, pipelines = read_signature_outputs(Path(cfg.paths.models) / "signatures", manifest)
    cohort = manifest.loc[signatures.index]
    with stage_run(cfg, "combined") as run:
        on_trial = log_trial if run is not None else None
        result = fit_combined(config, cohort, signatures, pipelines, cfg.cohort.name, on_trial)
        if result.fitted:
            radiomics = read_feature_table(features / "radiomics.parquet", "radiomics table")
            deep = read_deep_table(features / "deep.parquet", "deep table").features
            check_serving_consistency(result, cohort, signatures, radiomics, deep)
        write_combined(result, out)
        if run is not None:
            log_combined(result, out)
    return result.summary
