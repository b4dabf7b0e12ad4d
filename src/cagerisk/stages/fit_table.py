"""``cagerisk fit-table``: nested-CV selection and classifier search on any feature table (``conf/fit_table.yaml``).

Reads and checks the table, runs the nested CV (:func:`cagerisk.models.fit_table.fit_table`) inside one
MLflow run and logs its summary there; the entry point prints the summary. It writes no file.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from cagerisk.cohort.schema import is_blank
from cagerisk.config import typed
from cagerisk.config.modelling import FitTableConfig, TableInputConfig, model_config
from cagerisk.models.data import InputError
from cagerisk.models.fit_table import fit_table, prepare_table, read_table
from cagerisk.tracking import stage_run

log = logging.getLogger(__name__)

SUMMARY_METRICS = ("auc", "auc_ci_low", "auc_ci_high", "n", "n_features_in")


def log_fit_table(summary: dict[str, Any]) -> None:
    import mlflow

    mlflow.log_metrics({k: float(summary[k]) for k in SUMMARY_METRICS})
    mlflow.log_dict(summary, "fit_table.json")


def run_fit_table_stage(cfg: DictConfig) -> dict[str, Any]:
    """Read ``cfg.table``, run nested CV (and a final fit on all rows); return the summary dict."""
    if "fit_table" not in cfg:
        raise InputError("fit-table composes conf/fit_table.yaml (`cagerisk fit-table`), which sets the fit_table keys")
    source = typed({k: cfg[k] for k in ("table", "id_col", "label_col", "positive_label")}, TableInputConfig, "fit-table")
    if is_blank(source.table):
        raise InputError("fit-table needs table=PATH (a CSV or Parquet feature table)")
    ft = typed(cfg.fit_table, FitTableConfig, "fit_table")
    config = model_config(cfg)
    X, y, dropped = prepare_table(
        read_table(source.table),
        source.id_col,
        source.label_col,
        source.positive_label,
        ft.drop_prefixes,
        ft.drop_columns,
        source.table,
    )
    log.info("%s: %d rows (%d positive), %d feature columns", source.table, len(y), int(y.sum()), X.shape[1])
    summary: dict[str, Any] = {
        "table": source.table,
        "n": int(len(y)),
        "n_positive": int(y.sum()),
        "n_features_in": int(X.shape[1]),
        "n_columns_dropped": len(dropped),
    }
    with stage_run(cfg, "fit-table") as run:
        summary.update(fit_table(config, ft, X, y))
        if run is not None:
            log_fit_table(summary)
    return summary
