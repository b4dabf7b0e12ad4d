"""The pipeline's parent run as the page a reviewer reads.

After ``dvc repro`` the parent run (``make demo``, ``cagerisk.demo.run_pipeline``) gets the headline
figures of the stages nested under it, so nobody has to open nested runs to find an AUC:

- metrics ``{model}_{split}_auc``, ``..._auc_ci_low``, ``..._auc_ci_high`` for every model (combined,
  rad_sign, dl_sign, clinical_model) and split (train, val, test, val_test) of ``reports/metrics.json``:
  the same names the ``evaluate`` run uses, so the two compare column by column;
- ``heldout_oracle_auc`` and ``heldout_auc_ratio`` (synthetic cohorts: the true risk's AUC);
- ``{model}_{split}_calibration_slope`` / ``_calibration_intercept`` when the report has them;
- ``dice_{split}_mean`` of the CT U-Net (``segment/metrics.json``);
- the HTML report, ``metrics.json`` and the figures and tables as artifacts under ``report/``;
- the manifest and feature tables as ``mlflow.data`` datasets;
- a Markdown summary as the run's description (``mlflow.note.content``).

The DVC hashes of the inputs and outputs are tagged by the caller (``dvc_lock_hashes``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from omegaconf import DictConfig

from cagerisk.tracking.model_card import MODEL_LABELS
from cagerisk.tracking.runs import log_table_dataset

log = logging.getLogger(__name__)

# evaluate's table labels -> the keys of its metrics ("Combined model" -> "combined"), in the card's order
MODEL_KEYS = {label: key for key, label in MODEL_LABELS.items()}
AUC_FIELDS = ("auc", "auc_ci_low", "auc_ci_high")
NOTE_TAG = "mlflow.note.content"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def _split_key(split: str) -> str:
    return str(split).replace("+", "_")


def headline_metrics(report: Mapping[str, Any] | None, segment: Mapping[str, Any] | None = None) -> dict[str, float]:
    """The parent run's metrics from ``reports/metrics.json`` and ``segment/metrics.json`` contents."""
    metrics: dict[str, float] = {}
    report = report or {}
    for model, splits in (report.get("performance") or {}).items():
        for split, values in (splits or {}).items():
            for field in AUC_FIELDS:
                if _finite((values or {}).get(field)):
                    metrics[f"{model}_{_split_key(split)}_{field}"] = float(values[field])
    acceptance = report.get("acceptance") or {}
    if _finite(acceptance.get("oracle_auc")):
        metrics["heldout_oracle_auc"] = float(acceptance["oracle_auc"])
    if _finite(acceptance.get("ratio")):
        metrics["heldout_auc_ratio"] = float(acceptance["ratio"])
    for row in report.get("calibration") or []:
        model = MODEL_KEYS.get(str(row.get("model")), str(row.get("model")))
        for field, value in row.items():
            # evaluate's cal_slope / cal_intercept (and their CI bounds) -> calibration_slope, calibration_intercept, ...
            name = f"calibration_{field.removeprefix('cal_')}" if field.startswith(("cal_slope", "cal_intercept")) else None
            if name and _finite(value):
                metrics[f"{model}_{_split_key(row.get('split', ''))}_{name}"] = float(value)
    for key, value in (segment or {}).items():
        if key.startswith("dice_") and key.endswith("_mean") and _finite(value):
            metrics[key] = float(value)
    return metrics


def summary_markdown(metrics: Mapping[str, float]) -> str:
    """A short table for the run page's description: AUC (95% CI) per model and split."""
    lines = ["### Pipeline summary", "", "| model | train (OOF) | val | test |", "| --- | --- | --- | --- |"]
    for label, model in MODEL_KEYS.items():
        cells = []
        for split in ("train", "val", "test"):
            auc = metrics.get(f"{model}_{split}_auc")
            low, high = metrics.get(f"{model}_{split}_auc_ci_low"), metrics.get(f"{model}_{split}_auc_ci_high")
            cells.append(
                "–"
                if auc is None
                else f"{auc:.3f}" + (f" ({low:.3f}-{high:.3f})" if low is not None and high is not None else "")
            )
        if any(c != "–" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    extra = []
    if "heldout_auc_ratio" in metrics:
        extra.append(
            f"held-out combined / oracle AUC ratio {metrics['heldout_auc_ratio']:.3f} "
            f"(oracle {metrics.get('heldout_oracle_auc', float('nan')):.3f})"
        )
    slope = next(
        (metrics[k] for k in ("combined_val_calibration_slope", "combined_test_calibration_slope") if k in metrics), None
    )
    if slope is not None:
        extra.append(f"combined calibration slope {slope:.2f}")
    dice = [f"{k.removeprefix('dice_').removesuffix('_mean')} {v:.3f}" for k, v in metrics.items() if k.startswith("dice_")]
    if dice:
        extra.append("U-Net Dice " + ", ".join(dice))
    if extra:
        lines += ["", "; ".join(extra) + "."]
    lines += ["", "Report: artifact `report/report.html`; figures under `report/evaluation/`."]
    return "\n".join(lines)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        log.warning("%s cannot be read (%s): not logged on the pipeline run", path, error)
        return None


def log_pipeline_summary(cfg: DictConfig) -> dict[str, float]:
    """Log the headline figures, report, figures and datasets on the active (parent) run; returns the metrics."""
    if mlflow.active_run() is None:
        raise RuntimeError("log_pipeline_summary needs an active MLflow run (the pipeline's parent run)")
    reports = Path(str(cfg.paths.reports))
    report = _read_json(reports / "metrics.json")
    segment = _read_json(Path(str(cfg.paths.segment)) / "metrics.json")
    metrics = headline_metrics(report, segment)
    if metrics:
        mlflow.log_metrics(metrics)
    for name in ("report.html", "metrics.json"):
        if (reports / name).is_file():
            mlflow.log_artifact(str(reports / name), artifact_path="report")
    if (reports / "evaluation").is_dir():
        mlflow.log_artifacts(str(reports / "evaluation"), artifact_path="report/evaluation")
    from cagerisk.cohort.schema import OUTCOME

    for path, name, targets in (
        (Path(str(cfg.paths.cohort)) / "manifest.csv", "manifest", OUTCOME),
        (Path(str(cfg.paths.features)) / "radiomics.parquet", "radiomics", None),
        (Path(str(cfg.paths.features)) / "deep.parquet", "deep", None),
    ):
        if path.is_file():
            log_table_dataset(path, name, "training", targets=targets)
    mlflow.set_tag(NOTE_TAG, summary_markdown(metrics))
    log.info("pipeline run: %d headline metrics logged", len(metrics))
    return metrics
