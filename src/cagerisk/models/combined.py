"""The combined model: clinical analysis, clinical model and combined model (Rad-sign + DL-sign + significant
clinical variables), and the Youden threshold chosen on the validation split.

The fitted result is a ``CombinedModel`` (in the light module :mod:`cagerisk.models.served`, which a
served model unpickles without importing this module): both signature pipelines, the combined pipeline
and the threshold. Library code: :func:`fit_combined` returns a :class:`CombinedResult` and writes
nothing; the ``combined`` stage (:mod:`cagerisk.stages.combined`) writes and logs it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import roc_auc_score

from cagerisk.cohort.schema import CLINICAL_NAMES, ID, OUTCOME
from cagerisk.config.modelling import ModelConfig
from cagerisk.evaluation.metrics import youden_threshold
from cagerisk.models.clinical import ClinicalAnalysis, analyse_clinical, clinical_preprocessor
from cagerisk.models.data import InputError
from cagerisk.models.search import SearchResult, TrialLogger, search_classifier
from cagerisk.models.served import RISK_HIGH, RISK_LOW, SIGNATURE_COLUMNS, CombinedModel, positive_proba
from cagerisk.models.signatures import SCORES_FILE, SIGNATURES, search_settings, target_zoo

log = logging.getLogger(__name__)


@dataclass
class CombinedResult:
    """The clinical analysis, both searches and, when the sweep fits the best pipelines, the model and scores."""

    summary: dict[str, Any]
    analysis: ClinicalAnalysis
    clinical: SearchResult
    combined: SearchResult
    model: CombinedModel | None = None
    scores: pd.DataFrame | None = None  # per patient: signatures, clinical values, both models, risk class

    @property
    def fitted(self) -> bool:
        return self.model is not None


def read_signature_outputs(sig_dir: Path, manifest: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The signatures stage's scores (indexed by patient) and fitted pipelines, with errors naming the file."""
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
    return signatures, pipelines


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


def _clinical_analysis(config: ModelConfig, train_rows: pd.DataFrame, y_train: np.ndarray) -> ClinicalAnalysis:
    clinical_cfg = config.selection.clinical
    analysis = analyse_clinical(
        train_rows, y_train, list(clinical_cfg.variables), clinical_cfg.univariate_p, clinical_cfg.multivariate_p
    )
    log.info(
        "clinical variables: univariate p %s; significant in the multivariate model: %s",
        {k: round(v, 4) for k, v in analysis.univariate_p.items()},
        analysis.significant,
    )
    return analysis


def _check_out_of_fold(signatures: pd.DataFrame, train: np.ndarray) -> None:
    """Every training patient's signature value must come from a model that never saw its label: a
    cross-fitted DL-sign names the fold model behind each value (``dl_sign_fold``; -1 = the mean of all
    fold models, which include the ones trained on the patient: right for new patients only)."""
    if "dl_sign_fold" not in signatures.columns:
        return
    bad = signatures.index[train & (signatures["dl_sign_fold"].to_numpy() < 0)].tolist()
    if bad:
        raise InputError(f"training patient(s) whose DL-sign is not out-of-fold: {bad[:10]} (rerun `cagerisk signatures`)")


def _fit_target(config: ModelConfig, target: str, X: pd.DataFrame, y: np.ndarray, steps, on_trial) -> SearchResult:
    return search_classifier(target, X, y, steps, target_zoo(config, target), search_settings(config), on_trial=on_trial)


def _scores(result: SearchResult, X: pd.DataFrame, train: np.ndarray) -> np.ndarray:
    prob = np.empty(len(X))
    prob[train] = result.oof_proba
    prob[~train] = positive_proba(result.pipeline, X.loc[~train])
    return prob


def fit_combined(
    config: ModelConfig,
    cohort: pd.DataFrame,
    signatures: pd.DataFrame,
    pipelines: Mapping[str, Any],
    cohort_name: str,
    on_trial: TrialLogger | None = None,
) -> CombinedResult:
    """Clinical analysis on the training split, then the clinical and combined models' searches; when the
    sweep fits the best pipelines, the ``CombinedModel`` with its validation Youden threshold and the scores.

    ``cohort``: the manifest rows of the patients in ``signatures`` (the signatures stage's scores), same order;
    ``on_trial`` receives every search trial (see :func:`cagerisk.models.search.search_classifier`).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    train = (cohort["split"] == "train").to_numpy()
    y = cohort[OUTCOME].to_numpy(dtype=int)
    _check_out_of_fold(signatures, train)
    analysis = _clinical_analysis(config, cohort.loc[train], y[train])
    clinical_vars = clinical_model_variables(analysis)
    X_clin = cohort[clinical_vars]
    clin = _fit_target(
        config, "clinical", X_clin.loc[train], y[train], [("prepare", clinical_preprocessor(cohort, clinical_vars))], on_trial
    )
    combined_vars = list(analysis.significant)
    X_comb = pd.concat([signatures[list(SIGNATURE_COLUMNS)], cohort[combined_vars]], axis=1)
    comb = _fit_target(
        config,
        "combined",
        X_comb.loc[train],
        y[train],
        [("prepare", clinical_preprocessor(cohort, combined_vars, signatures=SIGNATURE_COLUMNS))],
        on_trial,
    )
    summary: dict[str, Any] = {
        "clinical_univariate_p": analysis.univariate_p,
        "clinical_multivariate_p": analysis.multivariate_p,
        "clinical_significant": analysis.significant,
        "clinical_model_variables": clinical_vars,
        "combined_variables": [*SIGNATURE_COLUMNS, *combined_vars],
        "clinical": clin.summary(),
        "combined": comb.summary(),
    }
    result = CombinedResult(summary, analysis, clin, comb)
    if not search_settings(config).fit_best:
        return result
    clinical_prob = _scores(clin, X_clin, train)
    combined_prob = _scores(comb, X_comb, train)
    val = (cohort["split"] == "val").to_numpy()
    threshold = youden_threshold(y[val], combined_prob[val])
    result.model = CombinedModel(
        rad_pipeline=pipelines["rad"],
        dl_pipeline=pipelines["dl"],
        combined_pipeline=comb.pipeline,
        clinical_variables=combined_vars,
        threshold=threshold,
        clinical_pipeline=clin.pipeline,
        clinical_model_variables=clinical_vars,
        info={
            "cohort": cohort_name,
            "threshold_rule": "Youden index on the validation split",
            "n_train": int(train.sum()),
            "clinical": summary["clinical"],
            "combined": summary["combined"],
        },
    )
    result.scores = _score_table(cohort, signatures, clinical_prob, combined_prob, threshold)
    summary["threshold"] = threshold
    _add_aucs(summary, cohort, result.scores)
    log.info(
        "combined model: %s on %s, CV AUC %.3f, threshold %.3f; val AUC %s",
        comb.best_classifier,
        summary["combined_variables"],
        comb.cv_auc,
        threshold,
        summary.get("auc", {}).get("val", {}).get("combined"),
    )
    return result


def _score_table(
    cohort: pd.DataFrame, signatures: pd.DataFrame, clinical_prob: np.ndarray, combined_prob: np.ndarray, threshold: float
) -> pd.DataFrame:
    scores = cohort[[ID, "split", OUTCOME]].reset_index(drop=True)
    scores["rad_sign"] = signatures["rad_sign"].to_numpy()
    scores["dl_sign"] = signatures["dl_sign"].to_numpy()
    for column in CLINICAL_NAMES:
        if column in cohort.columns:
            scores[column] = cohort[column].to_numpy()
    scores["clinical_model"] = clinical_prob
    scores["combined"] = combined_prob
    scores["risk_class"] = np.where(combined_prob >= threshold, RISK_HIGH, RISK_LOW)
    return scores


def _add_aucs(summary: dict[str, Any], cohort: pd.DataFrame, scores: pd.DataFrame) -> None:
    """Training (out-of-fold) and validation AUCs: test-split metrics are the evaluate stage's."""
    y = cohort[OUTCOME].to_numpy(dtype=int)
    for split in ("train", "val"):
        mask = (cohort["split"] == split).to_numpy()
        if len(np.unique(y[mask])) == 2:
            for column in ("rad_sign", "dl_sign", "clinical_model", "combined"):
                summary.setdefault("auc", {}).setdefault(split, {})[column] = float(
                    roc_auc_score(y[mask], scores.loc[mask, column])
                )


def check_serving_consistency(
    result: CombinedResult,
    cohort: pd.DataFrame,
    signatures: pd.DataFrame,
    radiomics: pd.DataFrame,
    deep: pd.DataFrame,
) -> None:
    """The fitted model, fed the raw feature tables, must reproduce the held-out scores of ``result``.

    Guards against training/serving skew (e.g. a column order or encoding that differs between the
    stage and :meth:`CombinedModel.predict_from_features`). ``radiomics`` and ``deep``: the feature
    tables indexed by patient.
    """
    model, held_out = result.model, (cohort["split"] != "train").to_numpy()
    patients = cohort.index[held_out]
    if model is None or len(patients) == 0:
        return
    served = model.predict_from_features(
        radiomics.loc[patients],
        deep.loc[patients],
        cohort.loc[patients, model.clinical_variables] if model.clinical_variables else None,
    )
    for column in SIGNATURE_COLUMNS:
        if not np.allclose(served[column].to_numpy(), signatures.loc[patients, column].to_numpy(), atol=1e-9):
            raise RuntimeError(f"{column} from the saved model differs from the signatures stage's scores")
    if not np.allclose(served["prob"].to_numpy(), result.scores["combined"].to_numpy()[held_out], atol=1e-9):
        raise RuntimeError("the saved combined model does not reproduce the stage's held-out probabilities")
