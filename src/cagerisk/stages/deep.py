"""`cagerisk deep`: cross-fitted ViT-3D fine-tuning over the training split, embeddings of every patient.

Reads ``deep.manifest`` (by default the segment stage's manifest, so CT inputs are cropped with the
mask the segment stage chose - the U-Net's, as at scoring time). Trains one ViT-3D per fold of the
training split (``deep.crossfit``) and writes

- ``{paths.features}/deep.parquet``: one row per (patient, fold model): ``patient_id``, ``fold_model``,
  ``label_seen`` + ``{sequence}_{roi}_dl_{k}`` (what the DL-sign is fitted on, and for analysis);
- ``deep.model_path``: the bundle of the K fold networks ``DeepEmbedder`` loads at scoring time;
- ``deep.checkpoint_dir/fold{j}``: Lightning checkpoints (``last.ckpt`` resumes with ``deep.resume=last``);
- ``{paths.features}/deep_metrics.json``: AUCs of the fold networks' own CS heads (a DVC metrics file).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import mlflow
from omegaconf import DictConfig

from cagerisk.atomic import write_frame_atomic, write_text_atomic
from cagerisk.cohort.manifest import load_manifest
from cagerisk.config import typed
from cagerisk.config.pipeline import DeepConfig, PathsConfig
from cagerisk.deep.export import save_deep_bundle
from cagerisk.deep.finetune import DeepEmbeddings, build_network, crossfit_plan, embed_cohort, fine_tune, preprocess_inputs
from cagerisk.deep.lightning_mlflow import active_run_logger, log_torch_model
from cagerisk.deep.pretrained import PretrainedReport
from cagerisk.tracking import stage_run
from cagerisk.trainer import seed_training

__all__ = ["run_deep_stage", "write_deep_outputs"]

log = logging.getLogger(__name__)


def write_deep_outputs(embeddings: DeepEmbeddings, features_dir: Path, model_path: str) -> dict[str, Path]:
    """Feature table, head metrics (a DVC metrics file) and the bundle serving loads."""
    return {
        "table": write_frame_atomic(embeddings.table, features_dir / "deep.parquet"),
        "metrics": write_text_atomic(
            json.dumps(embeddings.metrics, indent=2, sort_keys=True), features_dir / "deep_metrics.json"
        ),
        "bundle": save_deep_bundle(embeddings.bundle, model_path),
    }


def log_pretrained(report: PretrainedReport) -> None:
    details = ("loaded", "inflated", "incompatible", "unexpected", "missing")
    mlflow.log_dict({"summary": report.summary(), **{k: getattr(report, k) for k in details}}, "pretrained_report.json")
    mlflow.log_metrics({f"pretrained_{k}": float(v) for k, v in report.counts().items()})


def run_deep_stage(cfg: DictConfig) -> float:
    """Train the fold models, export; returns the heads' out-of-fold training AUC (training evidence only:
    what a sweep may maximise without touching the validation split)."""
    import torch

    config = typed(cfg.deep, DeepConfig, "deep")
    features_dir = Path(typed(cfg.paths, PathsConfig, "paths").features)
    frame = load_manifest(config.manifest)
    if "split" not in frame.columns:
        raise ValueError(f"manifest {config.manifest}: no split column")
    plans = crossfit_plan(frame, config.crossfit, cfg.seed, config.manifest)
    seed_training(cfg.seed, config.torch_threads)
    with stage_run(cfg, "deep") as run:
        cpu_started = time.process_time()
        data = preprocess_inputs(frame, config)
        trainings = []
        for plan in plans:
            # Each fold starts from its own seed: a fold's network does not depend on the folds before it.
            seed_training(cfg.seed + plan.fold, config.torch_threads)
            net, report = build_network(config, data.inputs)
            if run is not None and report is not None and plan.fold == 0:
                log_pretrained(report)
            logger = active_run_logger(run, prefix=f"fold{plan.fold}")
            trainings.append(fine_tune(net, data, config, cfg.seed, logger, config.manifest, plan))
        embeddings = embed_cohort(trainings, data, frame, config)
        metrics = embeddings.metrics
        metrics["cpu_seconds"] = time.process_time() - cpu_started  # the bundle's metrics are this dict too
        write_deep_outputs(embeddings, features_dir, config.model_path)
        if run is not None:
            mlflow.log_metrics({f"final_{k}" if k == "val_auc" else k: v for k, v in metrics.items()})
            log_torch_model(torch.nn.ModuleList([t.net for t in trainings]), "vit3d", config.model_path)
        log.info(
            "deep stage: %d inputs, %d fold models, %d features each; ViT heads' AUC out-of-fold %.3f, val %.3f; "
            "%.0f s preprocessing, %.0f s training (wall), %.0f s CPU",
            len(data.samples),
            len(trainings),
            int(metrics["n_features"]),
            metrics.get("oof_auc", float("nan")),
            metrics.get("val_auc", float("nan")),
            data.seconds,
            metrics["train_seconds"],
            metrics["cpu_seconds"],
        )
    return float(metrics.get("oof_auc", float("nan")))
