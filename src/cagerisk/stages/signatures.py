"""``cagerisk signatures``: Rad-sign and DL-sign (selection + classifier search) -> ``${paths.models}/signatures``.

Reads the manifest and both feature tables, fits the signatures (:func:`cagerisk.models.signatures.fit_signatures`),
writes each pipeline, its selection and trials tables and the out-of-fold scores, and logs them to MLflow.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from cagerisk.atomic import write_frame_atomic, write_joblib_atomic, write_text_atomic
from cagerisk.config.modelling import model_config
from cagerisk.models.crossfit import read_deep_table
from cagerisk.models.data import read_feature_table, read_manifest
from cagerisk.models.signatures import SCORES_FILE, SIGNATURES, SignaturesResult, fit_signatures
from cagerisk.tracking import stage_run
from cagerisk.tracking.trials import log_trial

log = logging.getLogger(__name__)


def write_signatures(result: SignaturesResult, out: Path) -> list[Path]:
    """Each fitted pipeline and its tables, the scores and summary.json under ``out`` (nothing unless fitted)."""
    if not result.fitted:
        return []
    written = []
    for fit in result.fits:
        target = fit.kind.target
        written += [
            write_joblib_atomic(fit.search.pipeline, out / f"{target}_pipeline.joblib"),
            write_frame_atomic(fit.selection, out / f"{target}_selection.csv"),
            write_frame_atomic(fit.features, out / f"{target}_features.csv"),
            write_frame_atomic(fit.search.trials, out / f"{target}_trials.csv"),
        ]
    written.append(write_frame_atomic(result.scores, out / SCORES_FILE))
    written.append(write_text_atomic(json.dumps(result.summary, indent=2, default=_json_default) + "\n", out / "summary.json"))
    return written


def log_signatures(result: SignaturesResult, out: Path) -> None:
    """Each signature's search metrics, and when fitted its selection metrics and the output folder."""
    import mlflow

    for fit in result.fits:
        target, entry = fit.kind.target, fit.entry
        mlflow.log_metrics({f"{target}_cv_auc": fit.search.cv_auc, f"{target}_n_trials": fit.search.n_trials_total})
        if fit.selection is None:
            continue
        mlflow.log_metrics(
            {
                f"{target}_n_selected": len(entry["selected_features"]),
                f"{target}_oof_auc_train": entry["oof_auc_train"],
                **({f"{target}_auc_val": entry["auc_val"]} if "auc_val" in entry else {}),
            }
        )
        for step in fit.selection.itertuples():
            mlflow.log_metric(f"{target}_removed_{step.step}", float(step.n_removed or 0))
    if result.fitted:
        mlflow.log_artifacts(str(out), artifact_path="signatures")


def run_signatures_stage(cfg: DictConfig) -> dict[str, Any]:
    """Stage ``signatures``: search, fit and score Rad-sign and DL-sign; write them under ``paths.models``."""
    config = model_config(cfg)
    out = Path(cfg.paths.models) / "signatures"
    manifest = read_manifest(Path(cfg.paths.cohort) / "manifest.csv")
    tables, label_seen = {}, {}
    for kind in SIGNATURES:
        path, name = Path(cfg.paths.features) / kind.table, f"{kind.feature_kind} table"
        if kind.feature_kind == "deep":
            # The deep stage's table is cross-fitted (one row per patient and fold model); a plain one is
            # a table made elsewhere, fitted like the radiomics table.
            deep = read_deep_table(path, name)
            tables[kind.target] = deep.features
            if deep.crossfitted:
                label_seen[kind.target] = deep.label_seen
        else:
            tables[kind.target] = read_feature_table(path, name)
    with stage_run(cfg, "signatures") as run:
        result = fit_signatures(config, manifest, tables, on_trial=log_trial if run is not None else None, label_seen=label_seen)
        write_signatures(result, out)
        if run is not None:
            log_signatures(result, out)
    return result.summary


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
