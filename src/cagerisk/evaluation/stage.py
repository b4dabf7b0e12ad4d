"""Stage ``evaluate``: every statistic, table and figure of the study from the combined stage's scores."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import joblib
import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig
from sklearn.metrics import roc_auc_score

from cagerisk.cohort.schema import ID, OUTCOME
from cagerisk.evaluation.importance import permutation_auc_importance
from cagerisk.evaluation.metrics import (
    auc_ci_bootstrap,
    auc_ci_delong,
    brier_score,
    calibration_intercept_slope,
    classification_metrics,
    decision_curve,
    delong_test,
    hosmer_lemeshow,
    youden_threshold,
)
from cagerisk.evaluation.plots import plot_calibration_and_dca, plot_importance, plot_readers, plot_roc_panels, save
from cagerisk.evaluation.readers import compare_with_readers, inter_reader_kappa, reader_columns
from cagerisk.evaluation.report import html_table, render_report
from cagerisk.features import plot_lasso, selection_report
from cagerisk.models.data import InputError, read_manifest
from cagerisk.models.served import MODEL_FILE, CombinedModel
from cagerisk.models.signatures import lasso_of, selected_features_table
from cagerisk.tracking import stage_run

log = logging.getLogger(__name__)

MODELS: tuple[tuple[str, str], ...] = (
    ("clinical_model", "Clinical model"),
    ("rad_sign", "Rad-sign"),
    ("dl_sign", "DL-sign"),
    ("combined", "Combined model"),
)
LABELS = dict(MODELS)
SPLIT_TITLES = {"train": "Training (out-of-fold)", "val": "Validation", "test": "Test", "val+test": "Held-out (val + test)"}
DEFAULTS: dict[str, Any] = {
    "n_bootstrap": 2000,
    "ci_level": 0.95,
    "hl_groups": 10,
    "calibration_bins": 5,
    "permutation_repeats": 20,
    "acceptance_ratio": 0.9,
}


def evaluation_settings(cfg: DictConfig) -> dict[str, Any]:
    settings = dict(DEFAULTS)
    settings.update({k: v for k, v in (cfg.get("evaluation") or {}).items() if v is not None})
    return settings


def split_masks(scores: pd.DataFrame) -> dict[str, np.ndarray]:
    split = scores["split"].to_numpy()
    return {"train": split == "train", "val": split == "val", "test": split == "test", "val+test": split != "train"}


def performance_table(
    scores: pd.DataFrame, thresholds: Mapping[str, float], settings: Mapping[str, Any], seed: int
) -> pd.DataFrame:
    """Table 2: per model and split, AUC with DeLong and bootstrap CIs and metrics at the model's threshold."""
    y_all = scores[OUTCOME].to_numpy(dtype=int)
    rows = []
    for split, mask in split_masks(scores).items():
        y = y_all[mask]
        if len(np.unique(y)) < 2:
            log.warning("split %s has one outcome only; no AUC", split)
            continue
        for column, label in MODELS:
            p = scores.loc[mask, column].to_numpy(dtype=float)
            delong = auc_ci_delong(y, p, settings["ci_level"])
            boot = auc_ci_bootstrap(y, p, settings["ci_level"], int(settings["n_bootstrap"]), seed=seed)
            metrics = classification_metrics(y, p, thresholds[column])
            rows.append(
                {
                    "model": label,
                    "key": column,
                    "split": split,
                    "n": int(mask.sum()),
                    "n_cs": int(y.sum()),
                    "auc": delong.auc,
                    "auc_ci_low": delong.low,
                    "auc_ci_high": delong.high,
                    "auc_boot_low": boot.low,
                    "auc_boot_high": boot.high,
                    **{k: metrics[k] for k in ("threshold", "accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")},
                }
            )
    return pd.DataFrame(rows)


def table2_display(perf: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "Model": perf["model"],
            "Cohort": perf["split"].map(SPLIT_TITLES),
            "n (CS)": [f"{n} ({k})" for n, k in zip(perf["n"], perf["n_cs"], strict=False)],
            "AUC (95% CI)": [
                f"{a:.3f} ({lo:.3f}-{hi:.3f})"
                for a, lo, hi in zip(perf["auc"], perf["auc_ci_low"], perf["auc_ci_high"], strict=False)
            ],
            "Bootstrap CI": [f"{lo:.3f}-{hi:.3f}" for lo, hi in zip(perf["auc_boot_low"], perf["auc_boot_high"], strict=False)],
        }
    )
    for column, title in (
        ("accuracy", "ACC"),
        ("sensitivity", "SEN"),
        ("specificity", "SPE"),
        ("ppv", "PPV"),
        ("npv", "NPV"),
        ("f1", "F1"),
    ):
        out[title] = perf[column].to_numpy()
    return out


def delong_table(scores: pd.DataFrame) -> pd.DataFrame:
    rows = []
    y_all = scores[OUTCOME].to_numpy(dtype=int)
    for split, mask in split_masks(scores).items():
        y = y_all[mask]
        if len(np.unique(y)) < 2:
            continue
        for column, label in MODELS:
            if column == "combined":
                continue
            test = delong_test(y, scores.loc[mask, "combined"].to_numpy(float), scores.loc[mask, column].to_numpy(float))
            rows.append(
                {
                    "split": split,
                    "comparison": f"Combined vs {label}",
                    "auc_combined": test.auc1,
                    "auc_other": test.auc2,
                    "difference": test.difference,
                    "z": test.z,
                    "p_value": test.p_value,
                    "method": test.method,
                    "note": test.note,
                }
            )
    return pd.DataFrame(rows)


def calibration_table(scores: pd.DataFrame, settings: Mapping[str, Any]) -> pd.DataFrame:
    """Per model and split: Brier score, Hosmer-Lemeshow, calibration intercept and slope with CIs.

    Every score here is from a model that did not see the patient (training scores are out-of-fold),
    so Hosmer-Lemeshow is referred to chi-square on g degrees of freedom, not g - 2.
    """
    rows = []
    y_all = scores[OUTCOME].to_numpy(dtype=int)
    for split, mask in split_masks(scores).items():
        y = y_all[mask]
        for column, label in MODELS:
            p = scores.loc[mask, column].to_numpy(float)
            row: dict[str, Any] = {
                "model": label,
                "key": column,
                "split": split,
                "n": int(mask.sum()),
                "brier": brier_score(y, p),
            }
            groups = min(int(settings["hl_groups"]), max(3, len(y) // 5))
            if len(y) >= 3 * 3:
                hl = hosmer_lemeshow(y, p, groups)
                row.update(hl_statistic=hl.statistic, hl_df=hl.df, hl_groups=hl.n_groups, hl_merged=hl.merged, hl_p=hl.p_value)
            fit = calibration_intercept_slope(y, p, float(settings["ci_level"]))
            row.update(
                cal_intercept=fit.intercept,
                cal_intercept_low=fit.intercept_low,
                cal_intercept_high=fit.intercept_high,
                cal_slope=fit.slope,
                cal_slope_low=fit.slope_low,
                cal_slope_high=fit.slope_high,
                cal_note=fit.note,
            )
            rows.append(row)
    return pd.DataFrame(rows)


def calibration_display(calib: pd.DataFrame) -> pd.DataFrame:
    """The calibration table as the report shows it: estimates with their intervals in one cell."""

    def with_ci(value: float, low: float, high: float) -> str:
        return "-" if not np.isfinite(value) else f"{value:.2f} ({low:.2f} to {high:.2f})"

    out = pd.DataFrame(
        {
            "Model": calib["model"],
            "Cohort": calib["split"].map(SPLIT_TITLES),
            "n": calib["n"],
            "Brier": calib["brier"],
            "Intercept (95% CI)": [
                with_ci(*v)
                for v in zip(calib["cal_intercept"], calib["cal_intercept_low"], calib["cal_intercept_high"], strict=False)
            ],
            "Slope (95% CI)": [
                with_ci(*v) for v in zip(calib["cal_slope"], calib["cal_slope_low"], calib["cal_slope_high"], strict=False)
            ],
        }
    )
    if "hl_statistic" in calib:
        out["HL statistic"] = calib["hl_statistic"]
        out["HL df"] = [
            ("-" if not np.isfinite(d) else f"{int(d)}" + (f" ({int(m)} merged)" if m else ""))
            for d, m in zip(calib["hl_df"], calib["hl_merged"].fillna(0), strict=False)
        ]
        out["HL p"] = calib["hl_p"]
    out["Note"] = calib["cal_note"]
    return out


def acceptance_check(cfg: DictConfig, scores: pd.DataFrame, ratio_needed: float) -> dict[str, Any] | None:
    """For a synthetic cohort: combined AUC on held-out patients against the oracle (the true risk)."""
    truth_path = Path(cfg.paths.cohort) / "truth.csv"
    if not truth_path.exists():
        return None
    truth = pd.read_csv(truth_path, dtype={ID: str})
    risk_column = next((c for c in ("true_risk", "risk") if c in truth.columns), None)
    if risk_column is None:
        log.warning("%s has no true_risk column; no oracle comparison", truth_path)
        return None
    held = scores[scores["split"] != "train"].merge(truth[[ID, risk_column]], on=ID, how="inner")
    y = held[OUTCOME].to_numpy(int)
    if len(np.unique(y)) < 2:
        return None
    aucs = {column: float(roc_auc_score(y, held[column])) for column, _ in MODELS}
    oracle = float(roc_auc_score(y, held[risk_column]))
    return {
        "n": int(len(held)),
        "oracle_auc": oracle,
        "combined_auc": aucs["combined"],
        "auc": aucs,
        "ratio": aucs["combined"] / oracle,
        "ratio_ok": bool(aucs["combined"] >= ratio_needed * oracle),
        "beats_rad": bool(aucs["combined"] > aucs["rad_sign"]),
        "beats_dl": bool(aucs["combined"] > aucs["dl_sign"]),
    }


def run_evaluate_stage(cfg: DictConfig) -> dict[str, Any]:
    """Write report.html, metrics.json and the figures/tables under ``paths.reports``; log them to MLflow."""
    with stage_run(cfg, "evaluate") as run:
        metrics, perf = write_evaluation(cfg)
        if run is not None:
            reports = Path(cfg.paths.reports)
            flat = {}
            for _, row in perf.iterrows():
                prefix = f"{row['key']}_{row['split'].replace('+', '_')}"
                for k in ("auc", "auc_ci_low", "auc_ci_high", "accuracy", "sensitivity", "specificity", "f1"):
                    if math.isfinite(row[k]):
                        flat[f"{prefix}_{k}"] = float(row[k])
            for record in metrics["calibration"]:
                prefix = f"{record['key']}_{record['split'].replace('+', '_')}"
                for k in ("cal_intercept", "cal_slope", "hl_p"):
                    if record.get(k) is not None:
                        flat[f"{prefix}_{k}"] = float(record[k])
            acceptance = metrics.get("acceptance")
            if acceptance:
                flat.update(heldout_oracle_auc=acceptance["oracle_auc"], heldout_auc_ratio=acceptance["ratio"])
            mlflow.log_metrics(flat)
            mlflow.log_artifact(str(reports / "report.html"), artifact_path="report")
            mlflow.log_artifact(str(reports / "metrics.json"), artifact_path="report")
            mlflow.log_artifacts(str(reports / "evaluation"), artifact_path="report/evaluation")
    return metrics


def write_evaluation(cfg: DictConfig) -> tuple[dict[str, Any], pd.DataFrame]:
    """Compute every statistic and figure; write them; return (metrics, the performance table)."""
    settings = evaluation_settings(cfg)
    seed = int(cfg.seed)
    combined_dir = Path(cfg.paths.models) / "combined"
    scores_path, model_path = combined_dir / "scores.parquet", combined_dir / MODEL_FILE
    for path in (scores_path, model_path):
        if not path.exists():
            raise InputError(f"{path} not found (run `cagerisk combined` first)")
    scores = pd.read_parquet(scores_path)
    scores[ID] = scores[ID].astype(str)
    model: CombinedModel = joblib.load(model_path)
    manifest = read_manifest(Path(cfg.paths.cohort) / "manifest.csv")
    reports = Path(cfg.paths.reports)
    figures = reports / "evaluation"
    figures.mkdir(parents=True, exist_ok=True)
    masks = split_masks(scores)
    y_all = scores[OUTCOME].to_numpy(dtype=int)

    # Each single model gets its own Youden threshold on validation; the combined model's is the stored one.
    thresholds = {
        column: youden_threshold(y_all[masks["val"]], scores.loc[masks["val"], column].to_numpy(float)) for column, _ in MODELS
    }
    thresholds["combined"] = model.threshold

    perf = performance_table(scores, thresholds, settings, seed)
    delong = delong_table(scores)
    calib = calibration_table(scores, settings)
    dca = {
        split: decision_curve(y_all[masks[split]], {c: scores.loc[masks[split], c].to_numpy(float) for c, _ in MODELS})
        for split in ("val", "test", "val+test")
        if len(np.unique(y_all[masks[split]])) == 2
    }

    # Figure 1: LASSO of each signature.
    fig1 = []
    selection_rows = []
    for name, pipeline in (("rad", model.rad_pipeline), ("dl", model.dl_pipeline)):
        found = lasso_of(pipeline)
        if found is not None and hasattr(found[0], "coef_path_"):
            fig1.append(
                Path(
                    save(
                        plot_lasso(*found, title=f"{LABELS[name + '_sign']}: LASSO on the training split"),
                        figures / f"fig1_lasso_{name}.png",
                    )
                )
                .relative_to(reports)
                .as_posix()
            )
        report = selection_report(pipeline)
        report.insert(0, "signature", LABELS[f"{name}_sign"])
        selection_rows.append(report)
    selection = pd.concat(selection_rows, ignore_index=True)

    # Figure 2: ROC per split.
    panels = {}
    for split in ("train", "val", "test"):
        mask = masks[split]
        if len(np.unique(y_all[mask])) == 2:
            panels[SPLIT_TITLES[split]] = (y_all[mask], {c: scores.loc[mask, c].to_numpy(float) for c, _ in MODELS})
    fig2 = Path(save(plot_roc_panels(panels, LABELS), figures / "fig2_roc.png")).relative_to(reports).as_posix()

    # Figure 3: calibration and decision curves on the held-out splits.
    fig3 = []
    for split in ("val", "test"):
        mask = masks[split]
        if len(np.unique(y_all[mask])) == 2:
            fig = plot_calibration_and_dca(
                y_all[mask],
                {c: scores.loc[mask, c].to_numpy(float) for c, _ in MODELS},
                LABELS,
                SPLIT_TITLES[split],
                int(settings["calibration_bins"]),
            )
            fig3.append(Path(save(fig, figures / f"fig3_calibration_dca_{split}.png")).relative_to(reports).as_posix())

    # Feature importance: LASSO coefficients and permutation importance of the combined model on held-out patients.
    rad_features = selected_features_table(model.rad_pipeline)
    dl_features = selected_features_table(model.dl_pipeline)
    held = masks["val+test"]
    permutation = permutation_auc_importance(
        model.combined_pipeline, scores.loc[held, model.input_columns], y_all[held], int(settings["permutation_repeats"]), seed
    )
    importance_tables = {
        "Rad-sign (LASSO)": rad_features,
        "DL-sign (LASSO)": dl_features,
        "Combined (permutation, held-out)": permutation,
    }
    importance_columns = {
        "Rad-sign (LASSO)": "lasso_coef",
        "DL-sign (LASSO)": "lasso_coef",
        "Combined (permutation, held-out)": "auc_drop",
    }
    fig_importance = (
        Path(save(plot_importance(importance_tables, importance_columns), figures / "fig4_importance.png"))
        .relative_to(reports)
        .as_posix()
    )

    # Readers.
    readers_frame, kappa = pd.DataFrame(), pd.DataFrame()
    fig_readers = []
    columns = reader_columns(manifest)
    if columns:
        merged = scores.merge(
            manifest.reset_index(drop=True)[[ID, *[c for pair in columns.values() for c in pair if c]]], on=ID, how="left"
        )
        parts = []
        for split in ("test", "val+test"):
            mask = split_masks(merged)[split]
            y = merged.loc[mask, OUTCOME].to_numpy(int)
            available = {
                name: (merged.loc[mask, b].to_numpy(), merged.loc[mask, p].to_numpy(float) if p else None)
                for name, (b, p) in columns.items()
                if merged.loc[mask, b].notna().all()
            }
            if not available or len(np.unique(y)) < 2:
                continue
            table = compare_with_readers(y, merged.loc[mask, "combined"].to_numpy(float), model.threshold, available)
            table.insert(0, "split", split)
            parts.append(table)
            if split == "val+test":
                fig_readers.append(
                    Path(
                        save(
                            plot_readers(
                                y, merged.loc[mask, "combined"].to_numpy(float), model.threshold, available, SPLIT_TITLES[split]
                            ),
                            figures / "fig5_readers.png",
                        )
                    )
                    .relative_to(reports)
                    .as_posix()
                )
        readers_frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        complete = merged[[b for b, _ in columns.values()]].dropna()
        if len(columns) >= 2:
            kappa = inter_reader_kappa({name: complete[b].to_numpy() for name, (b, _) in columns.items()})

    # Table 1 and the clinical analysis come from earlier stages.
    table1_path = Path(cfg.paths.cohort) / "table1.csv"
    table1_html = None
    if table1_path.exists():
        table1_html = html_table(pd.read_csv(table1_path, dtype=str).fillna("").map(_round_text))
    else:
        log.warning("%s not found: Table 1 is missing from the report", table1_path)
    clinical_path = combined_dir / "clinical_logistic.csv"
    clinical_table = pd.read_csv(clinical_path) if clinical_path.exists() else pd.DataFrame()

    combined_calibration = calib[calib["key"] == "combined"]
    log.info(
        "combined model calibration slope (1 is ideal, below 1 too extreme): %s",
        "; ".join(
            f"{SPLIT_TITLES[r.split]} {r.cal_slope:.2f} ({r.cal_slope_low:.2f} to {r.cal_slope_high:.2f})"
            if np.isfinite(r.cal_slope)
            else f"{SPLIT_TITLES[r.split]} n/a ({r.cal_note})"
            for r in combined_calibration.itertuples()
        ),
    )
    acceptance = acceptance_check(cfg, scores, float(settings["acceptance_ratio"]))
    if acceptance:
        log.info(
            "held-out combined AUC %.3f vs oracle %.3f (ratio %.3f); beats rad %s, dl %s",
            acceptance["combined_auc"],
            acceptance["oracle_auc"],
            acceptance["ratio"],
            acceptance["beats_rad"],
            acceptance["beats_dl"],
        )

    for name, frame in (
        ("table2_performance", perf),
        ("delong", delong),
        ("calibration", calib),
        ("selection", selection),
        ("importance_combined", permutation),
        ("readers", readers_frame),
        ("reader_kappa", kappa),
    ):
        frame.to_csv(figures / f"{name}.csv", index=False)
    for split, frame in dca.items():
        frame.to_csv(figures / f"decision_curve_{split.replace('+', '_')}.csv", index=False)

    metrics = {
        "threshold": model.threshold,
        "thresholds": thresholds,
        "performance": {
            key: {
                split: _clean(row.drop(["model", "key", "split"]).to_dict())
                for split, row in group.set_index("split", drop=False).iterrows()
            }
            for key, group in perf.groupby("key")
        },
        "delong": _clean_records(delong),
        "calibration": _clean_records(calib),
        # logistic recalibration per model and split: {key: {split: {intercept, slope, CIs}}}
        "calibration_fit": {
            key: {
                row["split"]: _clean(
                    {
                        k.removeprefix("cal_"): row[k]
                        for k in (
                            "cal_intercept",
                            "cal_intercept_low",
                            "cal_intercept_high",
                            "cal_slope",
                            "cal_slope_low",
                            "cal_slope_high",
                            "cal_note",
                        )
                    }
                )
                for _, row in group.iterrows()
            }
            for key, group in calib.groupby("key")
        },
        "readers": _clean_records(readers_frame),
        "reader_kappa": _clean_records(kappa),
        "acceptance": acceptance,
    }
    (reports / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    split_counts = scores["split"].value_counts().reindex(["train", "val", "test"]).fillna(0).astype(int).to_dict()
    html = render_report(
        {
            "cohort": str(cfg.cohort.get("name", "")),
            "n_patients": int(len(scores)),
            "split_counts": split_counts,
            "cv_folds": int(cfg.sweep.cv_folds),
            "threshold": model.threshold,
            "n_bootstrap": int(settings["n_bootstrap"]),
            "acceptance": acceptance,
            "table1": table1_html,
            "table1_path": str(table1_path),
            "table2": html_table(table2_display(perf)),
            "clinical_table": html_table(clinical_table),
            "selection_table": html_table(selection),
            "fig1": fig1,
            "fig2": fig2,
            "fig3": fig3,
            "calibration_table": html_table(calibration_display(calib)),
            "delong_table": html_table(delong, "{:.4f}"),
            "fig_importance": fig_importance,
            "importance_table": html_table(permutation, "{:.4f}"),
            "readers_table": html_table(readers_frame) if not readers_frame.empty else None,
            "kappa_table": html_table(kappa),
            "fig_readers": fig_readers,
        }
    )
    (reports / "report.html").write_text(html)
    log.info("report written to %s", reports / "report.html")
    return metrics, perf


def _round_text(value: str) -> str:
    """Table 1 cells as written by the cohort stage, long p-values shortened to 3 decimals."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if "." not in value or len(value) <= 6 else f"{number:.3g}" if number < 0.001 else f"{number:.3f}"


def _clean(values: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in values.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out


def _clean_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [_clean(r) for r in frame.to_dict(orient="records")] if not frame.empty else []
