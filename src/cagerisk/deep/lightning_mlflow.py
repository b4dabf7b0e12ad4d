"""Lightning's MLflow logger bound to the stage's own MLflow run.

A stage opens its run with ``cagerisk.tracking.stage_run``; Lightning must log its per-epoch metrics
into that run, not a new one, and must neither end it nor re-log parameters (the stage already
logged the flattened config, and MLflow refuses to change a logged parameter's value).
"""

from __future__ import annotations

import logging
from argparse import Namespace
from typing import Any

import mlflow
import mlflow.pytorch
from lightning.pytorch.loggers import MLFlowLogger

__all__ = ["ActiveRunMLFlowLogger", "active_run_logger", "log_torch_model"]

log = logging.getLogger(__name__)


class ActiveRunMLFlowLogger(MLFlowLogger):
    """``MLFlowLogger`` writing into an existing run; the run's owner ends it."""

    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:  # noqa: D102
        # The stage run already holds the whole flattened config as parameters.
        return None

    def finalize(self, status: str = "success") -> None:  # noqa: D102
        # Lightning would mark the run FINISHED here; the stage's ``with stage_run(...)`` block does
        # that (or FAILED) once the stage's remaining work - export, model logging - is done.
        return None


def active_run_logger(run: mlflow.ActiveRun | None, prefix: str = "") -> ActiveRunMLFlowLogger | bool:
    """The logger for the stage's run, or ``False`` (no logger) when tracking is disabled; ``prefix`` goes
    before every metric key (``fold0`` -> ``fold0-val_auc``)."""
    if run is None:
        return False
    # log_model=False: Lightning's checkpoint upload breaks on MLflow 3; stages log models explicitly.
    return ActiveRunMLFlowLogger(
        experiment_name=mlflow.get_experiment(run.info.experiment_id).name,
        tracking_uri=mlflow.get_tracking_uri(),
        run_id=run.info.run_id,
        log_model=False,
        prefix=prefix,
    )


def log_torch_model(module: Any, name: str, bundle_path: str | None = None) -> None:
    """Log a trained network with ``mlflow.pytorch`` plus our bundle file (which serving loads).

    Requirements are given explicitly: MLflow's inference of them imports and scans the whole
    environment, slow on a shared CPU and pointless here since the project pins every package.
    """
    import monai
    import torch

    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"monai=={monai.__version__}", "einops"]
    mlflow.pytorch.log_model(
        module.cpu().eval(),
        name=name,
        pip_requirements=requirements,
        extra_files=[bundle_path] if bundle_path else None,
        # "pt2" (MLflow 3's default) traces forward with an example input; our nets take several
        # inputs and serving loads our bundle anyway, so the pickled module is enough here.
        serialization_format="pickle",
    )
