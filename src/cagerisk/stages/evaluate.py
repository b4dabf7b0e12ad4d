"""``cagerisk evaluate``: statistics, Table 1-2 and the figures -> ``${paths.reports}/report.html``, ``metrics.json``.

Reads the combined stage's scores and model, the manifest and the tables of earlier stages, evaluates
(:func:`cagerisk.evaluation.evaluate.evaluate`), writes the report, tables and figures, and logs them to MLflow.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from omegaconf import DictConfig

from cagerisk.atomic import write_frame_atomic, write_text_atomic
from cagerisk.cohort.schema import ID
from cagerisk.config import typed
from cagerisk.config.modelling import EvaluationConfig, SweepConfig, run_seed
from cagerisk.evaluation.evaluate import FIGURES_DIR, Evaluation, StudyContext, evaluate
from cagerisk.evaluation.plots import save
from cagerisk.models.data import InputError, read_manifest
from cagerisk.models.served import MODEL_FILE
from cagerisk.tracking import stage_run

log = logging.getLogger(__name__)


def read_context(cfg: DictConfig, combined_dir: Path) -> StudyContext:
    """Table 1, the clinical analysis and (synthetic cohorts) the truth, when the earlier stages wrote them."""
    cohort_dir = Path(cfg.paths.cohort)
    table1_path = cohort_dir / "table1.csv"
    clinical_path = combined_dir / "clinical_logistic.csv"
    truth_path = cohort_dir / "truth.csv"
    return StudyContext(
        cohort=cfg.cohort.name,
        cv_folds=typed(cfg.sweep, SweepConfig, "sweep").cv_folds,
        table1=pd.read_csv(table1_path, dtype=str) if table1_path.exists() else None,
        table1_path=str(table1_path),
        clinical_table=pd.read_csv(clinical_path) if clinical_path.exists() else pd.DataFrame(),
        truth=pd.read_csv(truth_path, dtype={ID: str}) if truth_path.exists() else None,
    )


def write_evaluation(result: Evaluation, reports: Path) -> None:
    """Figures and tables under ``reports/evaluation``, then ``metrics.json`` and ``report.html``."""
    (reports / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    for path, fig in result.figures.items():
        save(fig, reports / path)
    for name, frame in result.tables.items():
        write_frame_atomic(frame, reports / FIGURES_DIR / f"{name}.csv")
    write_text_atomic(json.dumps(result.metrics, indent=2, sort_keys=True) + "\n", reports / "metrics.json")
    write_text_atomic(result.html, reports / "report.html")
    log.info("report written to %s", reports / "report.html")


def log_evaluation(result: Evaluation, reports: Path) -> None:
    """AUCs, CIs and threshold metrics per model and split, calibration, the oracle ratio; the report as artifacts."""
    import mlflow

    flat = {}
    for _, row in result.performance.iterrows():
        prefix = f"{row['key']}_{row['split'].replace('+', '_')}"
        for k in ("auc", "auc_ci_low", "auc_ci_high", "accuracy", "sensitivity", "specificity", "f1"):
            if math.isfinite(row[k]):
                flat[f"{prefix}_{k}"] = float(row[k])
    for record in result.metrics["calibration"]:
        prefix = f"{record['key']}_{record['split'].replace('+', '_')}"
        for k in ("cal_intercept", "cal_slope", "hl_p"):
            if record.get(k) is not None:
                flat[f"{prefix}_{k}"] = float(record[k])
    acceptance = result.metrics.get("acceptance")
    if acceptance:
        flat.update(heldout_oracle_auc=acceptance["oracle_auc"], heldout_auc_ratio=acceptance["ratio"])
    mlflow.log_metrics(flat)
    mlflow.log_artifact(str(reports / "report.html"), artifact_path="report")
    mlflow.log_artifact(str(reports / "metrics.json"), artifact_path="report")
    mlflow.log_artifacts(str(reports / FIGURES_DIR), artifact_path=f"report/{FIGURES_DIR}")


def run_evaluate_stage(cfg: DictConfig) -> dict[str, Any]:
    """Write report.html, metrics.json and the figures/tables under ``paths.reports``; log them to MLflow."""
    settings = typed(cfg.evaluation, EvaluationConfig, "evaluation")
    seed = run_seed(cfg)
    combined_dir = Path(cfg.paths.models) / "combined"
    scores_path, model_path = combined_dir / "scores.parquet", combined_dir / MODEL_FILE
    for path in (scores_path, model_path):
        if not path.exists():
            raise InputError(f"{path} not found (run `cagerisk combined` first)")
    reports = Path(cfg.paths.reports)
    with stage_run(cfg, "evaluate") as run:
        scores = pd.read_parquet(scores_path)
        scores[ID] = scores[ID].astype(str)
        manifest = read_manifest(Path(cfg.paths.cohort) / "manifest.csv")
        result = evaluate(scores, joblib.load(model_path), manifest, settings, seed, read_context(cfg, combined_dir))
        write_evaluation(result, reports)
        if run is not None:
            log_evaluation(result, reports)
    return result.metrics
