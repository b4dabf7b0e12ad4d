"""Every statistic, table and figure of the study from the combined model's scores (the evaluate command).

Library code: :func:`evaluate` takes the scores, the fitted model and the tables of earlier stages and
returns an :class:`Evaluation` (tables, figures, ``metrics.json`` content and the HTML report); it
writes nothing. The ``evaluate`` stage (:mod:`cagerisk.stages.evaluate`) reads the inputs, writes the
outputs and logs them to MLflow. Only this command ever reads the test split's outcomes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline

from cagerisk.cohort.schema import ID, OUTCOME
from cagerisk.config.modelling import EvaluationConfig
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
from cagerisk.evaluation.plots import plot_calibration_and_dca, plot_importance, plot_readers, plot_roc_panels
from cagerisk.evaluation.readers import compare_with_readers, inter_reader_kappa, reader_columns
from cagerisk.evaluation.report import html_table, render_report
from cagerisk.features import lasso_of, plot_lasso, selected_features_table, selection_report

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

FIGURES_DIR = "evaluation"  # figures and tables, under the reports folder

MODELS: tuple[tuple[str, str], ...] = (
    ("clinical_model", "Clinical model"),
    ("rad_sign", "Rad-sign"),
    ("dl_sign", "DL-sign"),
    ("combined", "Combined model"),
)
LABELS = dict(MODELS)
SPLIT_TITLES = {"train": "Training (out-of-fold)", "val": "Validation", "test": "Test", "val+test": "Held-out (val + test)"}


def split_masks(scores: pd.DataFrame) -> dict[str, np.ndarray]:
    split = scores["split"].to_numpy()
    return {"train": split == "train", "val": split == "val", "test": split == "test", "val+test": split != "train"}


def performance_table(
    scores: pd.DataFrame, thresholds: Mapping[str, float], settings: EvaluationConfig, seed: int
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
            delong = auc_ci_delong(y, p, settings.ci_level)
            boot = auc_ci_bootstrap(y, p, settings.ci_level, settings.n_bootstrap, seed=seed)
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


def calibration_table(scores: pd.DataFrame, settings: EvaluationConfig) -> pd.DataFrame:
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
            groups = min(settings.hl_groups, max(3, len(y) // 5))
            if len(y) >= 3 * 3:
                hl = hosmer_lemeshow(y, p, groups)
                row.update(hl_statistic=hl.statistic, hl_df=hl.df, hl_groups=hl.n_groups, hl_merged=hl.merged, hl_p=hl.p_value)
            fit = calibration_intercept_slope(y, p, settings.ci_level)
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


class EvaluatedModel(Protocol):
    """What the evaluation reads of the fitted combined model (``cagerisk.models.served.CombinedModel``)."""

    rad_pipeline: Pipeline
    dl_pipeline: Pipeline
    combined_pipeline: Pipeline
    threshold: float

    @property
    def input_columns(self) -> list[str]: ...


@dataclass
class StudyContext:
    """What the report says of the run and the earlier stages' tables it shows."""

    cohort: str
    cv_folds: int  # folds of the CV that gave the training (out-of-fold) scores
    table1: pd.DataFrame | None  # the cohort stage's Table 1 (text cells), None when missing
    table1_path: str
    clinical_table: pd.DataFrame  # the combined stage's clinical logistic regression (may be empty)
    truth: pd.DataFrame | None = None  # synthetic cohorts: the true risk per patient


@dataclass
class Evaluation:
    """Everything the evaluate command writes: ``tables`` and ``figures`` by path under the reports folder."""

    metrics: dict[str, Any]
    performance: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    html: str = ""


def acceptance_check(scores: pd.DataFrame, truth: pd.DataFrame | None, ratio_needed: float) -> dict[str, Any] | None:
    """For a synthetic cohort: combined AUC on held-out patients against the oracle (the true risk)."""
    if truth is None:
        return None
    risk_column = next((c for c in ("true_risk", "risk") if c in truth.columns), None)
    if risk_column is None:
        log.warning("the truth table has no true_risk column; no oracle comparison")
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


def headline_figures(
    scores: pd.DataFrame, delong: pd.DataFrame, calib: pd.DataFrame, acceptance: dict[str, Any] | None
) -> dict[str, Any]:
    """The figures that say whether the signatures' inputs are honest and the combined model earns its place:
    DL-sign's out-of-fold training AUC minus its validation AUC (a large gap = in-sample training scores),
    the combined model against each other model on the held-out patients (val + test, DeLong p),
    combined / oracle AUC (synthetic cohorts) and the combined model's calibration slope on test."""
    y = scores[OUTCOME].to_numpy(dtype=int)
    masks = split_masks(scores)
    out: dict[str, Any] = {}
    aucs = {}
    for split in ("train", "val"):
        if len(np.unique(y[masks[split]])) == 2:
            aucs[split] = float(roc_auc_score(y[masks[split]], scores.loc[masks[split], "dl_sign"]))
    if len(aucs) == 2:
        out["dl_sign_oof_train_auc"], out["dl_sign_val_auc"] = aucs["train"], aucs["val"]
        out["dl_sign_oof_minus_val_auc"] = aucs["train"] - aucs["val"]
    if len(delong):
        held = delong[delong["split"] == "val+test"]
        out["heldout_combined_vs"] = {
            str(row.comparison).removeprefix("Combined vs "): _clean(
                {"auc_combined": row.auc_combined, "auc_other": row.auc_other, "delong_p": row.p_value}
            )
            for row in held.itertuples()
        }
    if acceptance:
        out["combined_over_oracle"] = acceptance["ratio"]
    test = calib[(calib["key"] == "combined") & (calib["split"] == "test")] if len(calib) else calib
    if len(test):
        out["combined_test_calibration_slope"] = _clean({"slope": test["cal_slope"].iloc[0]})["slope"]
    return out


def headline_text(headline: Mapping[str, Any]) -> str:
    """One log line of :func:`headline_figures`."""

    def f(value: Any) -> str:
        return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"

    parts = [f"DL-sign OOF train - val AUC {f(headline.get('dl_sign_oof_minus_val_auc'))}"]
    for name, row in headline.get("heldout_combined_vs", {}).items():
        combined, other, p = (f(row.get(k)) for k in ("auc_combined", "auc_other", "delong_p"))
        parts.append(f"held-out combined {combined} vs {name} {other} (DeLong p {p})")
    parts.append(f"combined/oracle {f(headline.get('combined_over_oracle'))}")
    parts.append(f"test calibration slope {f(headline.get('combined_test_calibration_slope'))}")
    return "; ".join(parts)


def evaluate(
    scores: pd.DataFrame,
    model: EvaluatedModel,
    manifest: pd.DataFrame,
    settings: EvaluationConfig,
    seed: int,
    context: StudyContext,
) -> Evaluation:
    """Compute every statistic and figure of the study from ``scores`` (the combined stage's, one row per patient)."""
    masks = split_masks(scores)
    y_all = scores[OUTCOME].to_numpy(dtype=int)
    # Each single model gets its own Youden threshold on validation; the combined model's is the stored one.
    thresholds = {
        column: youden_threshold(y_all[masks["val"]], scores.loc[masks["val"], column].to_numpy(float)) for column, _ in MODELS
    }
    thresholds["combined"] = model.threshold
    result = Evaluation(metrics={}, performance=performance_table(scores, thresholds, settings, seed))
    delong = delong_table(scores)
    calib = calibration_table(scores, settings)
    dca = {
        split: decision_curve(y_all[masks[split]], {c: scores.loc[masks[split], c].to_numpy(float) for c, _ in MODELS})
        for split in ("val", "test", "val+test")
        if len(np.unique(y_all[masks[split]])) == 2
    }
    selection = _lasso_figures(model, result.figures)
    _roc_and_calibration_figures(scores, settings, result.figures)
    permutation = _importance(scores, model, settings, seed, result.figures)
    readers_frame, kappa = _reader_tables(scores, manifest, model.threshold, result.figures)
    _log_calibration(calib)
    acceptance = acceptance_check(scores, context.truth, settings.acceptance_ratio)
    if acceptance:
        log.info(
            "held-out combined AUC %.3f vs oracle %.3f (ratio %.3f); beats rad %s, dl %s",
            acceptance["combined_auc"],
            acceptance["oracle_auc"],
            acceptance["ratio"],
            acceptance["beats_rad"],
            acceptance["beats_dl"],
        )
    headline = headline_figures(scores, delong, calib, acceptance)
    log.info("%s", headline_text(headline))
    result.tables = {
        "table2_performance": result.performance,
        "delong": delong,
        "calibration": calib,
        "selection": selection,
        "importance_combined": permutation,
        "readers": readers_frame,
        "reader_kappa": kappa,
        **{f"decision_curve_{split.replace('+', '_')}": frame for split, frame in dca.items()},
    }
    result.metrics = _metrics_json(
        model.threshold, thresholds, result.performance, delong, calib, readers_frame, kappa, acceptance
    )
    result.metrics["headline"] = headline
    result.html = _report_html(scores, model.threshold, settings, context, result, acceptance)
    return result


def _figure(figures: dict[str, Figure], name: str, fig: Figure) -> str:
    """Keep ``fig`` as ``evaluation/<name>`` and return that path (relative to the reports folder)."""
    path = f"{FIGURES_DIR}/{name}"
    figures[path] = fig
    return path


def _lasso_figures(model: EvaluatedModel, figures: dict[str, Figure]) -> pd.DataFrame:
    """Figure 1 (the LASSO of each signature, when it has one); returns the selection table of both."""
    selection_rows = []
    for name, pipeline in (("rad", model.rad_pipeline), ("dl", model.dl_pipeline)):
        # A cross-fitted DL-sign is K fold pipelines: one selection report each, no single LASSO path.
        folds = getattr(pipeline, "pipelines", None)
        found = lasso_of(pipeline) if folds is None else None
        if found is not None and hasattr(found[0], "coef_path_"):
            title = f"{LABELS[name + '_sign']}: LASSO on the training split"
            _figure(figures, f"fig1_lasso_{name}.png", plot_lasso(*found, title=title))
        for fold, part in enumerate(folds or [pipeline]):
            report = selection_report(part)
            report.insert(0, "signature", LABELS[f"{name}_sign"] + (f" (fold model {fold})" if folds else ""))
            selection_rows.append(report)
    return pd.concat(selection_rows, ignore_index=True)


def _roc_and_calibration_figures(scores: pd.DataFrame, settings: EvaluationConfig, figures: dict[str, Figure]) -> None:
    """Figure 2 (ROC per split) and Figure 3 (calibration and decision curves on the held-out splits)."""
    masks = split_masks(scores)
    y_all = scores[OUTCOME].to_numpy(dtype=int)
    panels = {}
    for split in ("train", "val", "test"):
        mask = masks[split]
        if len(np.unique(y_all[mask])) == 2:
            panels[SPLIT_TITLES[split]] = (y_all[mask], {c: scores.loc[mask, c].to_numpy(float) for c, _ in MODELS})
    _figure(figures, "fig2_roc.png", plot_roc_panels(panels, LABELS))
    for split in ("val", "test"):
        mask = masks[split]
        if len(np.unique(y_all[mask])) == 2:
            fig = plot_calibration_and_dca(
                y_all[mask],
                {c: scores.loc[mask, c].to_numpy(float) for c, _ in MODELS},
                LABELS,
                SPLIT_TITLES[split],
                settings.calibration_bins,
            )
            _figure(figures, f"fig3_calibration_dca_{split}.png", fig)


def _importance(
    scores: pd.DataFrame, model: EvaluatedModel, settings: EvaluationConfig, seed: int, figures: dict[str, Figure]
) -> pd.DataFrame:
    """LASSO coefficients and the combined model's permutation importance on held-out patients (Fig. 4)."""
    held = split_masks(scores)["val+test"]
    y_all = scores[OUTCOME].to_numpy(dtype=int)
    permutation = permutation_auc_importance(
        model.combined_pipeline, scores.loc[held, model.input_columns], y_all[held], settings.permutation_repeats, seed
    )
    importance_tables = {
        "Rad-sign (LASSO)": selected_features_table(model.rad_pipeline),
        "DL-sign (LASSO)": pd.concat(
            [selected_features_table(p) for p in getattr(model.dl_pipeline, "pipelines", [model.dl_pipeline])],
            ignore_index=True,
        ),
        "Combined (permutation, held-out)": permutation,
    }
    importance_columns = {
        "Rad-sign (LASSO)": "lasso_coef",
        "DL-sign (LASSO)": "lasso_coef",
        "Combined (permutation, held-out)": "auc_drop",
    }
    _figure(figures, "fig4_importance.png", plot_importance(importance_tables, importance_columns))
    return permutation


def _reader_tables(
    scores: pd.DataFrame, manifest: pd.DataFrame, threshold: float, figures: dict[str, Figure]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The combined model against the manifest's readers (McNemar, AUCs; Fig. 5) and the readers' kappa."""
    readers_frame, kappa = pd.DataFrame(), pd.DataFrame()
    columns = reader_columns(manifest)
    if not columns:
        return readers_frame, kappa
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
        combined = merged.loc[mask, "combined"].to_numpy(float)
        table = compare_with_readers(y, combined, threshold, available)
        table.insert(0, "split", split)
        parts.append(table)
        if split == "val+test":
            _figure(figures, "fig5_readers.png", plot_readers(y, combined, threshold, available, SPLIT_TITLES[split]))
    readers_frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    complete = merged[[b for b, _ in columns.values()]].dropna()
    if len(columns) >= 2:
        kappa = inter_reader_kappa({name: complete[b].to_numpy() for name, (b, _) in columns.items()})
    return readers_frame, kappa


def _log_calibration(calib: pd.DataFrame) -> None:
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


CALIBRATION_FIT_KEYS = (
    "cal_intercept",
    "cal_intercept_low",
    "cal_intercept_high",
    "cal_slope",
    "cal_slope_low",
    "cal_slope_high",
    "cal_note",
)


def _metrics_json(
    threshold: float,
    thresholds: Mapping[str, float],
    perf: pd.DataFrame,
    delong: pd.DataFrame,
    calib: pd.DataFrame,
    readers_frame: pd.DataFrame,
    kappa: pd.DataFrame,
    acceptance: dict[str, Any] | None,
) -> dict[str, Any]:
    """The content of ``metrics.json`` (DVC's metrics file of the evaluate stage)."""
    return {
        "threshold": threshold,
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
                row["split"]: _clean({k.removeprefix("cal_"): row[k] for k in CALIBRATION_FIT_KEYS})
                for _, row in group.iterrows()
            }
            for key, group in calib.groupby("key")
        },
        "readers": _clean_records(readers_frame),
        "reader_kappa": _clean_records(kappa),
        "acceptance": acceptance,
    }


def _report_html(
    scores: pd.DataFrame,
    threshold: float,
    settings: EvaluationConfig,
    context: StudyContext,
    result: Evaluation,
    acceptance: dict[str, Any] | None,
) -> str:
    figures = list(result.figures)
    tables = result.tables
    readers_frame = tables["readers"]
    table1_html = None
    if context.table1 is not None:
        table1_html = html_table(context.table1.fillna("").map(_round_text))
    else:
        log.warning("%s not found: Table 1 is missing from the report", context.table1_path)
    split_counts = scores["split"].value_counts().reindex(["train", "val", "test"]).fillna(0).astype(int).to_dict()
    return render_report(
        {
            "cohort": context.cohort,
            "n_patients": int(len(scores)),
            "split_counts": split_counts,
            "cv_folds": context.cv_folds,
            "threshold": threshold,
            "n_bootstrap": settings.n_bootstrap,
            "acceptance": acceptance,
            # evaluation.acceptance_ratio: the share of the oracle's AUC the combined model must reach
            "acceptance_ratio": settings.acceptance_ratio,
            "table1": table1_html,
            "table1_path": context.table1_path,
            "table2": html_table(table2_display(result.performance)),
            "clinical_table": html_table(context.clinical_table),
            "selection_table": html_table(tables["selection"]),
            "fig1": [f for f in figures if f.startswith(f"{FIGURES_DIR}/fig1_")],
            "fig2": f"{FIGURES_DIR}/fig2_roc.png",
            "fig3": [f for f in figures if f.startswith(f"{FIGURES_DIR}/fig3_")],
            "calibration_table": html_table(calibration_display(tables["calibration"])),
            "delong_table": html_table(tables["delong"], "{:.4f}"),
            "fig_importance": f"{FIGURES_DIR}/fig4_importance.png",
            "importance_table": html_table(tables["importance_combined"], "{:.4f}"),
            "readers_table": html_table(readers_frame) if not readers_frame.empty else None,
            "kappa_table": html_table(tables["reader_kappa"]),
            "fig_readers": [f for f in figures if f.startswith(f"{FIGURES_DIR}/fig5_")],
        }
    )


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
