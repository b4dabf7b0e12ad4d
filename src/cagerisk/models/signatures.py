"""Rad-sign and DL-sign: the best selection + classifier pipeline per feature table.

Each signature is one scikit-learn Pipeline (selection steps, then the classifier chosen by the
Optuna search) fitted on the training split only. Its training-split scores are out-of-fold, so
the combined model downstream never learns from in-sample signature probabilities.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import mlflow
import numpy as np
import optuna
import pandas as pd
from omegaconf import DictConfig
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline

from cagerisk.cohort.schema import ID, OUTCOME
from cagerisk.features import LassoSelector, build_selection_steps, selection_report
from cagerisk.models.data import common_patients, read_feature_table, read_manifest
from cagerisk.models.search import SearchResult, SearchSettings, positive_proba, search_classifier
from cagerisk.models.zoo import load_zoo
from cagerisk.tracking import stage_run

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


def search_settings(cfg: DictConfig, **overrides: Any) -> SearchSettings:
    return SearchSettings.from_config(cfg.sweep, int(cfg.seed), **overrides)


def target_zoo(cfg: DictConfig, target: str):
    """The classifiers searched for ``target``: ``sweep.include.<target>`` within ``classifier.include``
    (each null = no restriction; both set = the candidates in both, in the target list's order).

    When the two share nothing, the explicit ``classifier.include`` wins (with a warning): it is what
    the user typed, the target list is the preset's default (e.g. ``classifier.include=[lr]`` for a
    quick run under the default preset, whose Rad-sign list is ``[vote]``)."""
    include = (cfg.sweep.get("include") or {}).get(target)
    everywhere = cfg.classifier.get("include")
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
    return load_zoo(cfg.classifier, include=list(include) if include is not None else None)


def target_selection_steps(cfg: DictConfig, target: str, feature_kind: str):
    """The selection steps of ``target``: ``selection.<feature_kind>``, narrowed to
    ``sweep.selection_steps.<target>`` when the sweep preset names some (null = every step)."""
    only = (cfg.sweep.get("selection_steps") or {}).get(target)
    return build_selection_steps(cfg.selection, feature_kind, seed=int(cfg.seed), only=list(only) if only is not None else None)


def fit_signature(cfg: DictConfig, kind: SignatureKind, X_train: pd.DataFrame, y_train: np.ndarray) -> SearchResult:
    """Search classifier and hyperparameters for one signature; fit the best pipeline on (X_train, y_train)."""
    steps = target_selection_steps(cfg, kind.target, kind.feature_kind)
    final = {f"{name}__store_path": True for name, step in steps if isinstance(step, LassoSelector)}
    return search_classifier(kind.target, X_train, y_train, steps, target_zoo(cfg, kind.target), search_settings(cfg), final)


def lasso_of(pipeline: Pipeline) -> tuple[LassoSelector, list[str]] | None:
    """The fitted LASSO step of a signature pipeline and the names of its input features."""
    for index, (_, step) in enumerate(pipeline.steps):
        if isinstance(step, LassoSelector):
            names = list(pipeline[:index].get_feature_names_out()) if index else list(pipeline.feature_names_in_)
            return step, [str(n) for n in names]
    return None


def selected_features_table(pipeline: Pipeline) -> pd.DataFrame:
    """Features reaching the classifier, with their LASSO coefficient when there is a LASSO step."""
    names = [str(n) for n in pipeline[:-1].get_feature_names_out()]
    frame = pd.DataFrame({"feature": names})
    found = lasso_of(pipeline)
    if found is not None:
        lasso, inputs = found
        coef = dict(zip(inputs, lasso.coef_, strict=False))
        frame["lasso_coef"] = [float(coef.get(n, np.nan)) for n in names]
    return frame


def run_signatures_stage(cfg: DictConfig) -> dict[str, Any]:
    """Stage ``signatures``: search, fit and score Rad-sign and DL-sign; write them under paths.models."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(cfg.paths.models) / "signatures"
    manifest = read_manifest(Path(cfg.paths.cohort) / "manifest.csv")
    tables = {
        kind.target: read_feature_table(Path(cfg.paths.features) / kind.table, f"{kind.feature_kind} table")
        for kind in SIGNATURES
    }
    patients = common_patients(manifest, {k.feature_kind: tables[k.target] for k in SIGNATURES})
    cohort = manifest.loc[patients]
    train = (cohort["split"] == "train").to_numpy()
    y = cohort[OUTCOME].to_numpy(dtype=int)
    settings = search_settings(cfg)
    summary: dict[str, Any] = {"n_patients": int(len(patients)), "n_train": int(train.sum()), "signatures": {}}
    scores = cohort[[ID, "split", OUTCOME]].reset_index(drop=True)
    with stage_run(cfg, "signatures") as run:
        for kind in SIGNATURES:
            X = tables[kind.target].loc[patients]
            log.info("%s: %d training patients, %d features", kind.column, int(train.sum()), X.shape[1])
            result = fit_signature(cfg, kind, X.loc[train], y[train])
            entry = {**result.summary(), "n_features_in": int(X.shape[1])}
            if run is not None:
                mlflow.log_metrics({f"{kind.target}_cv_auc": result.cv_auc, f"{kind.target}_n_trials": result.n_trials_total})
            if not settings.fit_best:
                summary["signatures"][kind.target] = entry
                continue
            out.mkdir(parents=True, exist_ok=True)
            prob = np.empty(len(y))
            prob[train] = result.oof_proba
            prob[~train] = positive_proba(result.pipeline, X.loc[~train])
            scores[kind.column] = prob
            report = selection_report(result.pipeline)
            features = selected_features_table(result.pipeline)
            entry["selection"] = report.to_dict(orient="records")
            entry["selected_features"] = features["feature"].tolist()
            entry["oof_auc_train"] = float(roc_auc_score(y[train], result.oof_proba))
            # Validation only: the test split's metrics are the evaluate stage's, computed once.
            val = (cohort["split"] == "val").to_numpy()
            if len(np.unique(y[val])) == 2:
                entry["auc_val"] = float(roc_auc_score(y[val], prob[val]))
            summary["signatures"][kind.target] = entry
            joblib.dump(result.pipeline, out / f"{kind.target}_pipeline.joblib")
            report.to_csv(out / f"{kind.target}_selection.csv", index=False)
            features.to_csv(out / f"{kind.target}_features.csv", index=False)
            result.trials.to_csv(out / f"{kind.target}_trials.csv", index=False)
            log.info(
                "%s: %s, %d features selected; CV AUC %.3f, OOF train AUC %.3f, val AUC %s",
                kind.column,
                result.best_classifier,
                len(entry["selected_features"]),
                result.cv_auc,
                entry["oof_auc_train"],
                f"{entry['auc_val']:.3f}" if "auc_val" in entry else "n/a",
            )
            if run is not None:
                mlflow.log_metrics(
                    {
                        f"{kind.target}_n_selected": len(entry["selected_features"]),
                        f"{kind.target}_oof_auc_train": entry["oof_auc_train"],
                        **({f"{kind.target}_auc_val": entry["auc_val"]} if "auc_val" in entry else {}),
                    }
                )
                for step in report.itertuples():
                    mlflow.log_metric(f"{kind.target}_removed_{step.step}", float(step.n_removed or 0))
        if settings.fit_best:
            scores.to_parquet(out / SCORES_FILE, index=False)
            (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
            if run is not None:
                mlflow.log_artifacts(str(out), artifact_path="signatures")
    return summary


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
