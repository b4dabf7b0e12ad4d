"""The combined stage: clinical model and combined model (Rad-sign + DL-sign + significant clinical variables).

The fitted result is a ``CombinedModel`` (in the light module :mod:`cagerisk.models.served`, which a
served model unpickles without importing this stage): both signature pipelines, the combined pipeline
and the Youden threshold chosen on the validation split.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import joblib
import mlflow
import numpy as np
import optuna
import pandas as pd
from omegaconf import DictConfig
from sklearn.metrics import roc_auc_score

from cagerisk.cohort.schema import CLINICAL_NAMES, ID, OUTCOME
from cagerisk.evaluation.metrics import youden_threshold
from cagerisk.models.clinical import ClinicalAnalysis, analyse_clinical, clinical_preprocessor
from cagerisk.models.data import InputError, read_feature_table, read_manifest
from cagerisk.models.search import SearchResult, search_classifier
from cagerisk.models.served import (  # noqa: F401 (re-exported: pickles made before served.py name this module)
    MODEL_FILE,
    RISK_HIGH,
    RISK_LOW,
    SIGNATURE_COLUMNS,
    CombinedModel,
    positive_proba,
)
from cagerisk.models.signatures import SCORES_FILE, SIGNATURES, search_settings, target_zoo
from cagerisk.tracking import stage_run

log = logging.getLogger(__name__)


# ---- stage ---------------------------------------------------------------------------------------


def _fit_target(cfg: DictConfig, target: str, X: pd.DataFrame, y: np.ndarray, steps) -> SearchResult:
    return search_classifier(target, X, y, steps, target_zoo(cfg, target), search_settings(cfg))


def _scores(result: SearchResult, X: pd.DataFrame, train: np.ndarray) -> np.ndarray:
    prob = np.empty(len(X))
    prob[train] = result.oof_proba
    prob[~train] = positive_proba(result.pipeline, X.loc[~train])
    return prob


def clinical_model_variables(analysis: ClinicalAnalysis) -> list[str]:
    """Variables of the clinical model: the significant ones, or else the best univariate one."""
    if analysis.significant:
        return list(analysis.significant)
    finite = {v: p for v, p in analysis.univariate_p.items() if np.isfinite(p)}
    if not finite:
        raise InputError("no clinical variable could be analysed (all constant or missing in the training split)")
    best = min(finite, key=finite.get)
    log.warning("no clinical variable is significant; the clinical model uses the best univariate one, %s", best)
    return [best]


def run_combined_stage(cfg: DictConfig) -> dict[str, Any]:
    """Stage ``combined``: clinical analysis, clinical model, combined model, threshold; written under
    ``paths.models/combined``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sig_dir = Path(cfg.paths.models) / "signatures"
    out = Path(cfg.paths.models) / "combined"
    manifest = read_manifest(Path(cfg.paths.cohort) / "manifest.csv")
    scores_path = sig_dir / SCORES_FILE
    if not scores_path.exists():
        raise InputError(f"{scores_path}: signature scores not found (run `cagerisk signatures` first)")
    signatures = pd.read_parquet(scores_path)
    signatures[ID] = signatures[ID].astype(str)
    signatures = signatures.set_index(ID, drop=False)
    unknown = signatures.index.difference(manifest.index)
    if len(unknown):
        raise InputError(f"{scores_path}: patient(s) not in the manifest: {list(unknown[:10])}")
    pipelines = {}
    for kind in SIGNATURES:
        path = sig_dir / f"{kind.target}_pipeline.joblib"
        if not path.exists():
            raise InputError(f"{path}: signature pipeline not found (run `cagerisk signatures` first)")
        pipelines[kind.target] = joblib.load(path)
    cohort = manifest.loc[signatures.index]
    train = (cohort["split"] == "train").to_numpy()
    val = (cohort["split"] == "val").to_numpy()
    y = cohort[OUTCOME].to_numpy(dtype=int)
    clinical_cfg = cfg.selection.clinical
    variables = [str(v) for v in clinical_cfg.variables]
    settings = search_settings(cfg)

    with stage_run(cfg, "combined") as run:
        analysis = analyse_clinical(
            cohort.loc[train], y[train], variables, float(clinical_cfg.univariate_p), float(clinical_cfg.multivariate_p)
        )
        log.info(
            "clinical variables: univariate p %s; significant in the multivariate model: %s",
            {k: round(v, 4) for k, v in analysis.univariate_p.items()},
            analysis.significant,
        )
        clinical_vars = clinical_model_variables(analysis)
        X_clin = cohort[clinical_vars]
        clin = _fit_target(
            cfg, "clinical", X_clin.loc[train], y[train], [("prepare", clinical_preprocessor(cohort, clinical_vars))]
        )

        combined_vars = list(analysis.significant)
        X_comb = pd.concat([signatures[list(SIGNATURE_COLUMNS)], cohort[combined_vars]], axis=1)
        comb = _fit_target(
            cfg,
            "combined",
            X_comb.loc[train],
            y[train],
            [("prepare", clinical_preprocessor(cohort, combined_vars, signatures=SIGNATURE_COLUMNS))],
        )
        summary: dict[str, Any] = {
            "clinical_univariate_p": analysis.univariate_p,
            "clinical_multivariate_p": analysis.multivariate_p,
            "clinical_significant": analysis.significant,
            "clinical_model_variables": clinical_vars,
            "combined_variables": [*SIGNATURE_COLUMNS, *combined_vars],
        }
        for name, result in (("clinical", clin), ("combined", comb)):
            summary[name] = result.summary()
            if run is not None:
                mlflow.log_metrics({f"{name}_cv_auc": result.cv_auc, f"{name}_n_trials": result.n_trials_total})
        if not settings.fit_best:
            return summary

        clinical_prob = _scores(clin, X_clin, train)
        combined_prob = _scores(comb, X_comb, train)
        threshold = youden_threshold(y[val], combined_prob[val])
        model = CombinedModel(
            rad_pipeline=pipelines["rad"],
            dl_pipeline=pipelines["dl"],
            combined_pipeline=comb.pipeline,
            clinical_variables=combined_vars,
            threshold=threshold,
            clinical_pipeline=clin.pipeline,
            clinical_model_variables=clinical_vars,
            info={
                "cohort": str(cfg.cohort.get("name", "")),
                "threshold_rule": "Youden index on the validation split",
                "n_train": int(train.sum()),
                "clinical": summary["clinical"],
                "combined": summary["combined"],
            },
        )
        check_serving_consistency(cfg, model, cohort, signatures, combined_prob, ~train)

        scores = cohort[[ID, "split", OUTCOME]].reset_index(drop=True)
        scores["rad_sign"] = signatures["rad_sign"].to_numpy()
        scores["dl_sign"] = signatures["dl_sign"].to_numpy()
        for column in CLINICAL_NAMES:
            if column in cohort.columns:
                scores[column] = cohort[column].to_numpy()
        scores["clinical_model"] = clinical_prob
        scores["combined"] = combined_prob
        scores["risk_class"] = np.where(combined_prob >= threshold, RISK_HIGH, RISK_LOW)
        summary["threshold"] = threshold
        # Training (out-of-fold) and validation only: test-split metrics are the evaluate stage's.
        for split in ("train", "val"):
            mask = (cohort["split"] == split).to_numpy()
            if len(np.unique(y[mask])) == 2:
                for column in ("rad_sign", "dl_sign", "clinical_model", "combined"):
                    summary.setdefault("auc", {}).setdefault(split, {})[column] = float(
                        roc_auc_score(y[mask], scores.loc[mask, column])
                    )

        out.mkdir(parents=True, exist_ok=True)
        joblib.dump(model, out / MODEL_FILE)
        scores.to_parquet(out / "scores.parquet", index=False)
        analysis.table.to_csv(out / "clinical_logistic.csv", index=False)
        clin.trials.to_csv(out / "clinical_trials.csv", index=False)
        comb.trials.to_csv(out / "combined_trials.csv", index=False)
        (out / "threshold.json").write_text(json.dumps({"threshold": threshold, "rule": "youden_on_validation"}, indent=2) + "\n")
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        if run is not None:
            mlflow.log_metric("threshold", threshold)
            for split, values in summary.get("auc", {}).items():
                mlflow.log_metrics({f"{split}_auc_{k}": v for k, v in values.items()})
            mlflow.log_artifacts(str(out), artifact_path="combined")
        log.info(
            "combined model: %s on %s, CV AUC %.3f, threshold %.3f; val AUC %s",
            comb.best_classifier,
            summary["combined_variables"],
            comb.cv_auc,
            threshold,
            summary.get("auc", {}).get("val", {}).get("combined"),
        )
    return summary


def check_serving_consistency(
    cfg: DictConfig,
    model: CombinedModel,
    cohort: pd.DataFrame,
    signatures: pd.DataFrame,
    combined_prob: np.ndarray,
    held_out: np.ndarray,
) -> None:
    """The saved model, fed the raw feature tables, must reproduce the stage's held-out scores.

    Guards against training/serving skew (e.g. a column order or encoding that differs between the
    stage and :meth:`CombinedModel.predict_from_features`).
    """
    patients = cohort.index[held_out]
    if len(patients) == 0:
        return
    radiomics = read_feature_table(Path(cfg.paths.features) / "radiomics.parquet", "radiomics table").loc[patients]
    deep = read_feature_table(Path(cfg.paths.features) / "deep.parquet", "deep table").loc[patients]
    served = model.predict_from_features(
        radiomics, deep, cohort.loc[patients, model.clinical_variables] if model.clinical_variables else None
    )
    for column in SIGNATURE_COLUMNS:
        if not np.allclose(served[column].to_numpy(), signatures.loc[patients, column].to_numpy(), atol=1e-9):
            raise RuntimeError(f"{column} from the saved model differs from the signatures stage's scores")
    if not np.allclose(served["prob"].to_numpy(), combined_prob[held_out], atol=1e-9):
        raise RuntimeError("the saved combined model does not reproduce the stage's held-out probabilities")
