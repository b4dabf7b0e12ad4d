"""The model card: a registered version's description in the MLflow registry (Markdown, as the UI renders it).

It answers what a reviewer opening the model page asks first: what is this model, what data made it,
how good is it (with intervals), where is the threshold and why, what it is for and what it must not be
trusted with. Built from the registration's own figures and, when the pipeline's ``evaluate`` stage ran,
its ``reports/metrics.json``; nothing here reads files or talks to MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from cagerisk.cohort.schema import OUTCOME

MODEL_LABELS = {"combined": "Combined model", "rad_sign": "Rad-sign", "dl_sign": "DL-sign", "clinical_model": "Clinical model"}
SPLIT_LABELS = {"train": "training (out-of-fold)", "val": "validation", "test": "test", "val+test": "held-out (val + test)"}

INTENDED_USE = (
    "Research use: the preoperative risk of cage subsidence after lumbar interbody fusion, from CT, MRI "
    "(T1, T2, axial) and clinical values, for studies and decision-support prototypes reviewed by spine "
    "surgeons. It is not a medical device and must not decide a treatment on its own."
)


def _cohort_table(manifest: pd.DataFrame) -> list[str]:
    rows = ["| split | patients | CS | centres |", "| --- | ---: | ---: | --- |"]
    for split in ("train", "val", "test"):
        part = manifest[manifest["split"] == split]
        if len(part) == 0:
            continue
        centres = (
            ", ".join(f"{c} {n}" for c, n in part["center"].astype(str).value_counts().sort_index().items())
            if "center" in part
            else ""
        )
        rows.append(f"| {split} | {len(part)} | {int(part[OUTCOME].sum())} | {centres} |")
    return rows


def _metrics_table(report: Mapping[str, Any]) -> list[str]:
    perf = report.get("performance") or {}
    rows = ["| model | split | n (CS) | AUC (95% CI) |", "| --- | --- | ---: | --- |"]
    for key, label in MODEL_LABELS.items():
        for split, values in (perf.get(key) or {}).items():
            if not isinstance(values, Mapping) or values.get("auc") is None:
                continue
            ci = ""
            if values.get("auc_ci_low") is not None and values.get("auc_ci_high") is not None:
                ci = f" ({values['auc_ci_low']:.3f}-{values['auc_ci_high']:.3f})"
            count = f"{values.get('n', '')} ({values.get('n_cs', '')})"
            rows.append(f"| {label} | {SPLIT_LABELS.get(split, split)} | {count} | {values['auc']:.3f}{ci} |")
    return rows if len(rows) > 2 else []


def _calibration_lines(report: Mapping[str, Any]) -> list[str]:
    lines = []
    for row in report.get("calibration") or []:
        if not isinstance(row, Mapping) or row.get("model") not in ("Combined model", "combined"):
            continue
        slope = row.get("cal_slope")
        parts = [f"Brier {row['brier']:.3f}"] if row.get("brier") is not None else []
        if slope is not None and math.isfinite(float(slope)):
            low, high = row.get("cal_slope_low"), row.get("cal_slope_high")
            ci = f" (95% CI {float(low):.2f}-{float(high):.2f})" if low is not None and high is not None else ""
            parts.append(f"calibration slope {float(slope):.2f}{ci}")
        if row.get("hl_p") is not None:
            parts.append(f"Hosmer-Lemeshow p {float(row['hl_p']):.3g}")
        if parts:
            lines.append(f"- {SPLIT_LABELS.get(str(row.get('split')), row.get('split'))}: " + ", ".join(parts))
    return lines


def known_limits(cohort_source: str, cohort_name: str, n_val: int, ct_segmentation: bool, image_scoring: bool) -> list[str]:
    limits = []
    if cohort_source == "synthetic":
        limits.append(
            f"Trained and validated on the **synthetic** cohort `{cohort_name}` (simulated images and outcomes): "
            "its figures say the pipeline works, not that the model predicts subsidence in real patients."
        )
    if n_val < 100:
        limits.append(f"Only {n_val} validation patients: AUC intervals are wide and the threshold is noisy.")
    if ct_segmentation:
        limits.append(
            "CT vertebral-body masks not supplied with a request are drawn by the pipeline's U-Net; its errors "
            "(Dice in the pipeline run) flow into the radiomics features."
        )
    if not image_scoring:
        limits.append("This version scores precomputed features only (no image scoring).")
    limits.append(
        "Centres, scanners and protocols outside the training cohort are untested; recalibrate before use at a new centre."
    )
    return limits


def model_card(
    *,
    name: str,
    version: str,
    run_id: str,
    experiment_id: str,
    model_uri: str,
    model_id: str | None,
    manifest: pd.DataFrame,
    cohort_source: str,
    cohort_name: str,
    val_auc: float | None,
    val_auc_ci: tuple[float, float] | None,
    n_val: int,
    threshold: float,
    threshold_rule: str,
    training_data_sha256: str,
    val_patients_sha256: str,
    decision: str,
    report: Mapping[str, Any] | None = None,
    ct_segmentation: bool = False,
    image_scoring: bool = True,
    git_commit: str | None = None,
    combined_classifier: str | None = None,
) -> str:
    """Markdown for ``MlflowClient.update_model_version(description=...)`` and ``model_card.md``."""
    run_link = f"#/experiments/{experiment_id}/runs/{run_id}"
    model_link = f"#/experiments/{experiment_id}/models/{model_id}" if model_id else run_link
    auc = "undefined (one outcome only)" if val_auc is None else f"{val_auc:.3f}"
    if val_auc is not None and val_auc_ci is not None:
        auc += f" (95% CI {val_auc_ci[0]:.3f}-{val_auc_ci[1]:.3f}, DeLong)"
    lines = [
        f"## {name} version {version}: cage subsidence risk after lumbar interbody fusion",
        "",
        f"Registered by run [{run_id}]({run_link}); logged model [{model_id or model_uri}]({model_link}) (`{model_uri}`)."
        + (f" Code: git `{git_commit}`." if git_commit else ""),
        "",
        f"**Model.** Combined model ({combined_classifier or 'classifier of the combined stage'}) of the Rad-sign "
        "(radiomics signature), the DL-sign "
        "(ViT-3D deep features signature) and the clinical model; every signature is a scikit-learn pipeline "
        "(robust scaling, F-test, correlation pruning, LASSO, classifier) fitted on the training split only.",
        "",
        f"**Cohort.** `{cohort_name}` ({cohort_source}), {len(manifest)} patients, "
        f"{int(manifest[OUTCOME].sum())} with cage subsidence:",
        "",
        *_cohort_table(manifest),
        "",
        f"**Validation AUC of this version** (scored by the registered model itself): {auc}, n = {n_val}.",
        "",
        f"**Threshold.** {threshold:.4f} ({threshold_rule}); `risk_class` is `high` at or above it.",
        "",
        f"**Gate.** {decision}",
        "",
    ]
    if report:
        table = _metrics_table(report)
        if table:
            lines += ["**Pipeline report** (`evaluate` stage, AUC with DeLong 95% CI):", "", *table, ""]
        acceptance = report.get("acceptance") or {}
        if acceptance.get("oracle_auc") is not None:
            lines += [
                f"Held-out oracle AUC (true simulated risk) {acceptance['oracle_auc']:.3f}; combined / oracle = "
                f"{acceptance.get('ratio', float('nan')):.3f}.",
                "",
            ]
        calibration = _calibration_lines(report)
        if calibration:
            lines += ["**Calibration of the combined model:**", "", *calibration, ""]
    lines += [
        f"**Training data.** sha256 `{training_data_sha256}` (manifest + radiomics + deep tables); validation "
        f"patients sha256 `{val_patients_sha256}`.",
        "",
        f"**Intended use.** {INTENDED_USE}",
        "",
        "**Known limits.**",
        "",
        *[f"- {item}" for item in known_limits(cohort_source, cohort_name, n_val, ct_segmentation, image_scoring)],
        "",
    ]
    return "\n".join(lines)
