"""Each Optuna trial of a stage's search as a nested MLflow run under the stage's run."""

from __future__ import annotations

import logging

import mlflow
import numpy as np

from cagerisk.models.search import TrialRecord
from cagerisk.models.zoo import CLASSIFIER_PARAM

log = logging.getLogger(__name__)


def log_trial(record: TrialRecord) -> None:
    """A nested run (``<target>-trial-<n>``) with the trial's classifier, hyperparameters and fold AUCs.

    Nothing is logged without an active run; a failure is a warning: tracking must not stop a search.
    """
    parent = mlflow.active_run()
    if parent is None:
        return
    try:
        with mlflow.start_run(
            # The parent's experiment: start_run would otherwise use the default experiment.
            experiment_id=parent.info.experiment_id,
            run_name=f"{record.target}-trial-{record.number}",
            nested=True,
            tags={"cagerisk.target": record.target, "optuna.study": record.study_name, "optuna.state": record.state},
        ):
            name = record.classifier
            mlflow.log_params(
                {CLASSIFIER_PARAM: name, **{f"{name}.{k}": v for k, v in record.params.items()}, "trial": record.number}
            )
            metrics = {"seconds": record.seconds, "folds_scored": len(record.fold_aucs)}
            if record.fold_aucs:
                metrics.update(cv_auc=float(np.mean(record.fold_aucs)), cv_auc_std=float(np.std(record.fold_aucs)))
            mlflow.log_metrics(metrics)
    except Exception as error:  # noqa: BLE001 - tracking must not stop a search
        log.warning("could not log trial %d of %s to MLflow: %s", record.number, record.target, error)
