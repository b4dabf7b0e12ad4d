"""`cagerisk deep`: fine-tune the ViT-3D on the training split, export embeddings for every patient.

Reads ``deep.manifest`` (by default the segment stage's manifest, so CT inputs are cropped with the
mask the segment stage chose - the U-Net's, as at scoring time). Writes

- ``{paths.features}/deep.parquet``: ``patient_id`` + ``{sequence}_{roi}_dl_{k}`` for every patient;
- ``deep.model_path``: the bundle ``DeepEmbedder`` loads at scoring time;
- ``deep.checkpoint_dir``: Lightning checkpoints (``last.ckpt`` resumes with ``deep.resume=last``);
- ``{paths.features}/deep_metrics.json``: AUCs of the network's own CS head (a DVC metrics file).
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
from cagerisk.deep.finetune import DeepEmbeddings, build_network, embed_cohort, fine_tune, preprocess_inputs
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
    """Train, export; returns the validation AUC of the best epoch (what a sweep would maximise)."""
    config = typed(cfg.deep, DeepConfig, "deep")
    features_dir = Path(typed(cfg.paths, PathsConfig, "paths").features)
    frame = load_manifest(config.manifest)
    if "split" not in frame.columns:
        raise ValueError(f"manifest {config.manifest}: no split column")
    seed_training(cfg.seed, config.torch_threads)
    with stage_run(cfg, "deep") as run:
        cpu_started = time.process_time()
        data = preprocess_inputs(frame, config)
        net, report = build_network(config, data.inputs)
        if run is not None and report is not None:
            log_pretrained(report)
        training = fine_tune(net, data, config, cfg.seed, active_run_logger(run), config.manifest)
        embeddings = embed_cohort(training, data, frame, config)
        metrics = embeddings.metrics
        metrics["cpu_seconds"] = time.process_time() - cpu_started  # the bundle's metrics are this dict too
        write_deep_outputs(embeddings, features_dir, config.model_path)
        if run is not None:
            mlflow.log_metrics({f"final_{k}" if k == "val_auc" else k: v for k, v in metrics.items()})
            log_torch_model(training.net, "vit3d", config.model_path)
        log.info(
            "deep stage: %d inputs, %d features; ViT head AUC val %.3f; %.0f s preprocessing, %.0f s training (wall), %.0f s CPU",
            len(data.samples),
            embeddings.table.shape[1] - 1,
            metrics.get("val_auc", float("nan")),
            data.seconds,
            training.seconds,
            metrics["cpu_seconds"],
        )
    return float(metrics.get("val_auc", float("nan")))
