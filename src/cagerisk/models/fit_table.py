"""Selection and classifier search on any feature table, by nested CV (the fit-table command).

Every fitted step (imputation, scaling, F-test, correlation pruning, LASSO, the classifier and its
hyperparameter search) runs inside each outer training fold; the outer test fold only ever meets
the finished pipeline. The estimate is therefore honest for a table from elsewhere, e.g. a CSV of
PyRadiomics features with an id and a label column.

Library code: :func:`fit_table` returns the summary and writes nothing; the ``fit-table`` stage
(:mod:`cagerisk.stages.fit_table`) reads the table, logs the summary and prints it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.pipeline import Pipeline

from cagerisk.config.modelling import FitTableConfig, ModelConfig
from cagerisk.evaluation.metrics import delong_covariance, delong_interval
from cagerisk.features import selected_feature_names
from cagerisk.models.data import InputError
from cagerisk.models.intervals import corrected_cv_interval
from cagerisk.models.search import SearchSettings, fixed_candidates, positive_proba, search_classifier
from cagerisk.models.signatures import search_settings, target_selection_steps, target_zoo
from cagerisk.models.zoo import load_zoo

log = logging.getLogger(__name__)


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: table not found")
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    if suffix in {".csv", ".txt", ".tsv"}:
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    raise InputError(f"{path}: expected a .csv, .tsv or .parquet table")


def _matches(values: pd.Series, positive_label: Any) -> pd.Series:
    """values == positive_label, comparing numbers as numbers and anything else as text."""
    numeric = pd.to_numeric(values, errors="coerce")
    try:
        target = float(positive_label)
    except (TypeError, ValueError):
        target = None
    if target is not None and numeric.notna().all():
        return numeric == target
    return values.astype(str).str.strip() == str(positive_label).strip()


def prepare_table(
    frame: pd.DataFrame,
    id_col: str,
    label_col: str,
    positive_label: Any,
    drop_prefixes: Sequence[str],
    drop_columns: Sequence[str],
    source: str = "table",
) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """(features indexed by id, 0/1 labels, dropped non-feature columns), with errors naming the field."""
    for column, what in ((id_col, "id_col"), (label_col, "label_col")):
        if column not in frame.columns:
            raise InputError(f"{source}: {what} {column!r} is not a column (columns: {list(frame.columns)[:10]}...)")
    frame = frame.copy()
    frame[id_col] = frame[id_col].astype(str)
    duplicated = frame.loc[frame[id_col].duplicated(), id_col].tolist()
    if duplicated:
        raise InputError(f"{source}: id(s) listed twice in {id_col!r}: {duplicated[:10]}")
    labels = frame[label_col]
    missing_label = frame.loc[labels.isna(), id_col].tolist()
    if missing_label:
        raise InputError(f"{source}: no {label_col!r} for id(s) {missing_label[:10]}")
    positive = _matches(labels, positive_label)
    if not positive.any():
        raise InputError(
            f"{source}: no row has {label_col} == {positive_label!r}; values are {sorted(map(str, labels.unique()))[:10]}"
        )
    if positive.all():
        raise InputError(f"{source}: every row has {label_col} == {positive_label!r}; need both outcomes")
    features = frame.drop(columns=[id_col, label_col]).set_index(frame[id_col])
    dropped = [c for c in features.columns if c in set(drop_columns) or any(str(c).startswith(p) for p in drop_prefixes)]
    non_numeric = [c for c in features.columns if c not in dropped and not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        log.warning(
            "%s: %d non-numeric column(s) are not features and are dropped: %s", source, len(non_numeric), non_numeric[:10]
        )
    dropped += non_numeric
    features = features.drop(columns=dropped).astype(np.float64)
    empty = [c for c in features.columns if features[c].isna().all()]
    if empty:
        log.warning("%s: %d all-missing column(s) dropped: %s", source, len(empty), empty[:10])
        features = features.drop(columns=empty)
        dropped += empty
    if features.shape[1] == 0:
        raise InputError(f"{source}: no numeric feature column left")
    features.index.name = id_col
    return features, positive.to_numpy().astype(int), dropped


# The signature whose sweep preset (classifiers, selection steps) a feature kind's table gets.
KIND_TARGET = {"radiomics": "rad", "deep": "dl"}


def table_zoo(config: ModelConfig, ft: FitTableConfig):
    """``fit_table.include`` when set, else the sweep preset's list for the kind's signature."""
    if ft.include is not None:
        return load_zoo(config.classifier, include=list(ft.include))
    return target_zoo(config, KIND_TARGET.get(ft.kind, "rad"))


def table_steps(config: ModelConfig, ft: FitTableConfig):
    return target_selection_steps(config, KIND_TARGET.get(ft.kind, "rad"), ft.kind)


def table_search_settings(config: ModelConfig, ft: FitTableConfig, **overrides: Any) -> SearchSettings:
    """The inner search of one fit: ``fit_table.n_trials`` trials scored by ``fit_table.inner_folds``-fold CV,
    in a throw-away in-memory study, no trial logged."""
    values = {
        "n_trials": ft.n_trials,
        "timeout": None,
        "cv_folds": ft.inner_folds,
        "cv_repeats": 1,
        "storage": None,  # one throw-away study per fit, in memory
        "log_trials": False,
    }
    return search_settings(config, **{**values, **overrides})


def fit_procedure(config: ModelConfig, ft: FitTableConfig, name: str, X: pd.DataFrame, y: np.ndarray, settings: SearchSettings):
    """The whole procedure on (X, y): a fitted pipeline and the classifier it chose.

    A single candidate with nothing to sample (the default) is fitted directly: an inner CV would
    only score it, and fit-table's estimate comes from the outer folds anyway.
    """
    zoo = table_zoo(config, ft)
    steps = table_steps(config, ft)
    if len(zoo) == 1 and fixed_candidates(zoo):
        spec = next(iter(zoo.values()))
        pipeline = Pipeline([*steps, ("classifier", spec.build(seed=settings.seed))]).fit(X, y)
        return pipeline, spec.name, {}, None
    result = search_classifier(name, X, y, steps, zoo, settings)
    return result.pipeline, result.best_classifier, result.best_params, result.cv_auc


def nested_cv(config: ModelConfig, ft: FitTableConfig, X: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
    """Outer repeated stratified folds; inside each, the whole selection + classifier search."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    inner = table_search_settings(config, ft, fit_best=True)
    n_minority = int(min(y.sum(), len(y) - y.sum()))
    outer_folds = max(2, min(ft.outer_folds, n_minority))
    outer = RepeatedStratifiedKFold(n_splits=outer_folds, n_repeats=ft.outer_repeats, random_state=config.seed)
    oof = np.full((ft.outer_repeats, len(y)), np.nan)
    fold_aucs, chosen, counts = [], Counter(), Counter()
    train_sizes, test_sizes = [], []
    for i, (train, test) in enumerate(outer.split(np.zeros(len(y)), y)):
        repeat = i // outer_folds
        pipeline, classifier, _, _ = fit_procedure(config, ft, f"outer-{i}", X.iloc[train], y[train], inner)
        prob = positive_proba(pipeline, X.iloc[test])
        oof[repeat, test] = prob
        if len(np.unique(y[test])) == 2:
            fold_aucs.append(float(roc_auc_score(y[test], prob)))
            train_sizes.append(len(train))
            test_sizes.append(len(test))
        chosen[classifier] += 1
        counts.update(selected_feature_names(pipeline))
        log.info(
            "outer fold %d/%d: %s, fold AUC %s",
            i + 1,
            outer_folds * ft.outer_repeats,
            classifier,
            f"{fold_aucs[-1]:.3f}" if fold_aucs else "n/a",
        )
    return {
        **_outer_estimates(y, oof, fold_aucs, float(np.mean(train_sizes)) if train_sizes else 0.0, test_sizes, outer_folds),
        "outer_folds": outer_folds,
        "outer_repeats": ft.outer_repeats,
        "inner_folds": ft.inner_folds,
        "n_trials_per_fold": ft.n_trials,
        "classifier_votes": dict(chosen.most_common()),
        "selection_frequency": {name: round(k / (outer_folds * ft.outer_repeats), 3) for name, k in counts.most_common(30)},
    }


def _outer_estimates(
    y: np.ndarray, oof: np.ndarray, fold_aucs: list[float], mean_train: float, test_sizes: list[int], outer_folds: int
) -> dict[str, Any]:
    """The AUC estimate and its interval from the outer folds, and the pooled out-of-fold AUC beside it."""
    aucs, variances = [], []
    for row in oof:
        auc, cov = delong_covariance(y, row)
        aucs.append(float(auc[0]))
        variances.append(float(cov[0, 0]))
    auc = float(np.mean(aucs))
    # DeLong on pooled out-of-fold scores, kept for comparison only: it treats the fold models as one
    # fixed model and under-covers (about 0.82 at nominal 0.95, benchmarks/ci_coverage.py).
    pooled = delong_interval(auc, float(np.sqrt(np.mean(variances))))
    if len(fold_aucs) >= 2:
        centre, low, high, se = corrected_cv_interval(
            fold_aucs, mean_train, float(np.mean(test_sizes)), folds_per_repeat=outer_folds
        )
    else:
        centre, low, high, se = auc, float("nan"), float("nan"), float("nan")
    return {
        # The estimate is the mean outer-fold AUC, the centre of its interval: a corrected repeated
        # k-fold t (models/intervals.py), whose coverage benchmarks/ci_coverage.py measures.
        "auc": centre,
        "auc_ci_low": low,
        "auc_ci_high": high,
        "auc_se": se,
        "auc_ci_method": "corrected repeated k-fold t (Nadeau & Bengio 2003) on the outer-fold AUCs, k - 1 df",
        # AUC of the pooled out-of-fold scores (mean over repeats), as radMLBench's README reports it,
        # and DeLong's interval on them (under-covers: it ignores the fold models' variability)
        "auc_pooled": auc,
        "auc_pooled_delong_ci_low": pooled.low,
        "auc_pooled_delong_ci_high": pooled.high,
        "auc_per_repeat": aucs,
        "fold_auc_mean": float(np.mean(fold_aucs)) if fold_aucs else None,
        "fold_auc_sd": float(np.std(fold_aucs, ddof=1)) if len(fold_aucs) > 1 else None,
    }


def fit_table(config: ModelConfig, ft: FitTableConfig, X: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
    """Nested CV of the whole procedure on (X, y) and, with ``fit_table.final_fit``, the procedure on every row.

    Returns the summary: the estimate and its interval, the classifiers the outer folds chose, how often
    each feature was selected, and the final (or most-voted) classifier and selected features.
    """
    summary = nested_cv(config, ft, X, y)
    if ft.final_fit:
        # The model one would deploy: the same procedure on every row.
        pipeline, classifier, params, cv_auc = fit_procedure(config, ft, "final", X, y, table_search_settings(config, ft))
        summary["selected_features"] = selected_feature_names(pipeline)
        summary["best_classifier"] = classifier
        summary["best_params"] = params
        summary["final_cv_auc"] = cv_auc
    else:
        summary["selected_features"] = [n for n, f in summary["selection_frequency"].items() if f >= 0.5]
        summary["best_classifier"] = next(iter(summary["classifier_votes"]))
    return summary
