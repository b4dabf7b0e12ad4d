"""Rad-sign and DL-sign: the best selection + classifier pipeline per feature table.

Each signature is one scikit-learn Pipeline (selection steps, then the classifier chosen by the
Optuna search) fitted on the training split only. Its training-split scores are out-of-fold, so
the combined model downstream never learns from in-sample signature probabilities.

DL-sign on the deep stage's cross-fitted table (:mod:`cagerisk.models.crossfit`) is K pipelines, one per
fold model: pipeline j is searched and fitted on fold model j's embeddings of the training patients that
fold model was trained on, and scores the training patients it held out. So every training patient's
DL-sign comes from a ViT and a pipeline that never saw its label; other patients get the mean of the K
pipelines' probabilities (:class:`~cagerisk.models.crossfit.CrossFittedSignature`).

Library code: :func:`fit_signatures` returns a :class:`SignaturesResult` and writes nothing; the
``signatures`` stage (:mod:`cagerisk.stages.signatures`) writes and logs it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.metrics import roc_auc_score

from cagerisk.cohort.schema import ID, OUTCOME
from cagerisk.config.modelling import ModelConfig
from cagerisk.features import LassoSelector, build_selection_steps, selected_features_table, selection_report
from cagerisk.models.crossfit import CrossFittedSignature, fold_columns
from cagerisk.models.data import InputError, common_patients
from cagerisk.models.search import SearchResult, SearchSettings, TrialLogger, positive_proba, search_classifier
from cagerisk.models.zoo import ClassifierSpec, load_zoo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignatureKind:
    target: str  # study / file prefix
    feature_kind: str  # selection.<feature_kind> steps
    table: str  # file under paths.features
    column: str  # score column


SIGNATURES: tuple[SignatureKind, ...] = (
    SignatureKind("rad", "radiomics", "radiomics.parquet", "rad_sign"),
    SignatureKind("dl", "deep", "deep.parquet", "dl_sign"),
)
SCORES_FILE = "scores.parquet"


def search_settings(config: ModelConfig, **overrides: Any) -> SearchSettings:
    """The sweep preset's search settings with the run's seed; ``overrides`` replace fields."""
    return SearchSettings.from_sweep(config.sweep, config.seed, **overrides)


def target_zoo(config: ModelConfig, target: str) -> dict[str, ClassifierSpec]:
    """The classifiers searched for ``target``: ``sweep.include.<target>`` within ``classifier.include``
    (each null = no restriction; both set = the candidates in both, in the target list's order).

    When the two share nothing, the explicit ``classifier.include`` wins (with a warning): it is what
    the user typed, the target list is the preset's default (e.g. ``classifier.include=[lr]`` for a
    quick run under the default preset, whose Rad-sign list is ``[stack]``)."""
    include = config.sweep.include.get(target)
    everywhere = config.classifier.include
    if include is not None and everywhere is not None:
        both = [name for name in include if name in set(everywhere)]
        if not both:
            log.warning(
                "sweep.include.%s=%s and classifier.include=%s have no classifier in common; searching classifier.include",
                target,
                list(include),
                list(everywhere),
            )
            both = list(everywhere)
        include = both
    return load_zoo(config.classifier, include=list(include) if include is not None else None)


def target_selection_steps(config: ModelConfig, target: str, feature_kind: str) -> list[tuple[str, BaseEstimator]]:
    """The selection steps of ``target``: ``selection.<feature_kind>``, narrowed to
    ``sweep.selection_steps.<target>`` when the sweep preset names some (null = every step)."""
    only = config.sweep.selection_steps.get(target)
    return build_selection_steps(config.selection, feature_kind, seed=config.seed, only=list(only) if only is not None else None)


def fit_signature(
    config: ModelConfig,
    kind: SignatureKind,
    X_train: pd.DataFrame,
    y_train: np.ndarray,
    on_trial: TrialLogger | None = None,
) -> SearchResult:
    """Search classifier and hyperparameters for one signature; fit the best pipeline on (X_train, y_train)."""
    steps = target_selection_steps(config, kind.target, kind.feature_kind)
    final = {f"{name}__store_path": True for name, step in steps if isinstance(step, LassoSelector)}
    zoo = target_zoo(config, kind.target)
    return search_classifier(kind.target, X_train, y_train, steps, zoo, search_settings(config), final, on_trial)


@dataclass
class SignatureFit:
    """One signature's search and, when the sweep fits the best pipeline, its tables."""

    kind: SignatureKind
    search: SearchResult
    entry: dict[str, Any]  # its part of summary.json
    selection: pd.DataFrame | None = None  # what each selection step removed
    features: pd.DataFrame | None = None  # features reaching the classifier (LASSO coefficients)


@dataclass
class SignaturesResult:
    """Both signatures; ``scores`` (training out-of-fold, held-out by the fitted pipeline) when fitted."""

    summary: dict[str, Any]
    fits: list[SignatureFit] = field(default_factory=list)
    scores: pd.DataFrame | None = None

    @property
    def fitted(self) -> bool:
        return self.scores is not None


def crossfit_signature(
    config: ModelConfig,
    kind: SignatureKind,
    X: pd.DataFrame,
    y: np.ndarray,
    train: np.ndarray,
    label_seen: pd.DataFrame,
    on_trial: TrialLogger | None = None,
) -> SearchResult:
    """DL-sign cross-fitted with the deep stage's fold models (see the module docstring).

    ``X``: the wide table (every patient, ``..._f{j}`` columns), ``y`` and ``train`` aligned with it;
    ``label_seen``: patients x fold models, whether fold model j was trained on the patient's label. The
    result's ``oof_proba`` (training patients) comes from the fold pipeline that held each one out, and its
    ``cv_auc`` is their AUC; each fold's own search CV AUC (on embeddings its ViT was trained on, optimistic)
    is in ``extra["fold_cv_auc"]``.
    """
    seen = label_seen.reindex(X.index).fillna(False).astype(bool)
    settings = search_settings(config)
    steps = target_selection_steps(config, kind.target, kind.feature_kind)
    final = {f"{name}__store_path": True for name, step in steps if isinstance(step, LassoSelector)}
    zoo = target_zoo(config, kind.target)
    ids = X.index.astype(str)
    held_by = np.full(len(X), -1)
    oof = np.full(len(X), np.nan)
    searches, columns, trained_on = [], [], []
    for fold in range(seen.shape[1]):
        fit = train & seen[fold].to_numpy()
        held = train & ~seen[fold].to_numpy()
        if held.any() and (held_by[held] >= 0).any():
            twice = ids[held & (held_by >= 0)].tolist()
            raise InputError(f"deep table: training patient(s) held out by more than one fold model: {twice[:10]}")
        held_by[held] = fold
        cols = fold_columns(X.columns, fold)
        log.info(
            "%s fold %d: fitted on %d training patients, scores %d held out", kind.column, fold, int(fit.sum()), int(held.sum())
        )
        search = search_classifier(f"{kind.target}-f{fold}", X.loc[fit, cols], y[fit], steps, zoo, settings, final, on_trial)
        if settings.fit_best:
            oof[held] = positive_proba(search.pipeline, X.loc[held, cols])
        searches.append(search)
        columns.append(cols)
        trained_on.append(ids[fit].tolist())
    missing = ids[train & (held_by < 0)].tolist()
    if missing:
        raise InputError(f"deep table: training patient(s) no fold model held out (every fold saw their label): {missing[:10]}")
    trials = pd.concat([s.trials.assign(fold=j) for j, s in enumerate(searches)], ignore_index=True)
    chosen = [s.best_classifier for s in searches]
    result = SearchResult(
        target=kind.target,
        study_name=",".join(s.study_name for s in searches),
        best_classifier=chosen[0] if len(set(chosen)) == 1 else "/".join(chosen),  # per fold when they differ
        best_params={f"fold{j}": s.best_params for j, s in enumerate(searches)},
        cv_auc=float("nan"),
        n_trials_total=int(sum(s.n_trials_total for s in searches)),
        n_trials_added=int(sum(s.n_trials_added for s in searches)),
        trials=trials,
        extra={"fold_cv_auc": [float(s.cv_auc) for s in searches], "held_out_by": held_by[train].tolist()},
    )
    if settings.fit_best:
        result.pipeline = CrossFittedSignature([s.pipeline for s in searches], columns, trained_on)
        result.oof_proba = oof[train]
        result.cv_auc = float(roc_auc_score(y[train], oof[train]))
    return result


def _per_fold(pipeline: Any, table: Any) -> pd.DataFrame:
    """``table(pipeline)`` of a signature pipeline; for a cross-fitted one, every fold's with a ``fold`` column."""
    if isinstance(pipeline, CrossFittedSignature):
        return pd.concat([table(p).assign(fold=j) for j, p in enumerate(pipeline.pipelines)], ignore_index=True)
    return table(pipeline)


def fit_signatures(
    config: ModelConfig,
    manifest: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    on_trial: TrialLogger | None = None,
    label_seen: Mapping[str, pd.DataFrame] | None = None,
) -> SignaturesResult:
    """Search, fit and score every signature of ``SIGNATURES`` on the training split.

    ``tables`` maps a signature's target (``rad``, ``dl``) to its feature table, indexed by patient;
    ``label_seen`` maps a target whose table is cross-fitted (the deep stage's) to its patients x fold
    models matrix (:class:`cagerisk.models.crossfit.DeepTable`); ``on_trial`` receives every search trial
    (see :func:`cagerisk.models.search.search_classifier`).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    patients = common_patients(manifest, {k.feature_kind: tables[k.target] for k in SIGNATURES})
    cohort = manifest.loc[patients]
    train = (cohort["split"] == "train").to_numpy()
    val = (cohort["split"] == "val").to_numpy()
    y = cohort[OUTCOME].to_numpy(dtype=int)
    fit_best = search_settings(config).fit_best
    result = SignaturesResult(summary={"n_patients": int(len(patients)), "n_train": int(train.sum()), "signatures": {}})
    scores = cohort[[ID, "split", OUTCOME]].reset_index(drop=True)
    for kind in SIGNATURES:
        X = tables[kind.target].loc[patients]
        log.info("%s: %d training patients, %d features", kind.column, int(train.sum()), X.shape[1])
        seen = (label_seen or {}).get(kind.target)
        if seen is not None:
            search = crossfit_signature(config, kind, X, y, train, seen, on_trial)
        else:
            search = fit_signature(config, kind, X.loc[train], y[train], on_trial)
        fit = SignatureFit(kind, search, {**search.summary(), "n_features_in": int(X.shape[1])})
        if seen is not None:
            fit.entry["crossfit"] = {"folds": int(seen.shape[1]), "fold_cv_auc": search.extra["fold_cv_auc"]}
        result.fits.append(fit)
        result.summary["signatures"][kind.target] = fit.entry
        if not fit_best:
            continue
        prob = np.empty(len(y))
        prob[train] = search.oof_proba
        prob[~train] = positive_proba(search.pipeline, X.loc[~train])
        scores[kind.column] = prob
        if seen is not None:
            # The fold model behind each value: a training patient's held it out; -1 = mean of the K folds.
            fold_of = np.full(len(y), -1)
            fold_of[train] = search.extra["held_out_by"]
            scores[f"{kind.column}_fold"] = fold_of
        fit.selection = _per_fold(search.pipeline, selection_report)
        fit.features = _per_fold(search.pipeline, selected_features_table)
        fit.entry["selection"] = fit.selection.to_dict(orient="records")
        fit.entry["selected_features"] = fit.features["feature"].tolist()
        fit.entry["oof_auc_train"] = float(roc_auc_score(y[train], search.oof_proba))
        # Validation only: the test split's metrics are the evaluate stage's, computed once.
        if len(np.unique(y[val])) == 2:
            fit.entry["auc_val"] = float(roc_auc_score(y[val], prob[val]))
        log.info(
            "%s: %s, %d features selected; CV AUC %.3f, OOF train AUC %.3f, val AUC %s",
            kind.column,
            search.best_classifier,
            len(fit.entry["selected_features"]),
            search.cv_auc,
            fit.entry["oof_auc_train"],
            f"{fit.entry['auc_val']:.3f}" if "auc_val" in fit.entry else "n/a",
        )
    if fit_best:
        result.scores = scores
    return result
