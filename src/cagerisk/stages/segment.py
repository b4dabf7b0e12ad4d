"""`cagerisk segment`: train the vertebra U-Net, segment every patient's CT, score Dice, write the manifest.

Reads ``segment.manifest`` (the cohort manifest) and writes

- ``{paths.segment}/masks/{patient}_ct_mask_pred.nii.gz``: predicted label maps (CT grid, values 1..6);
- ``{paths.segment}/manifest.csv``: the cohort manifest + ``ct_mask_pred`` and ``ct_mask_source``;
- ``{paths.segment}/dice.csv``: per-patient, per-vertebra Dice against the manual masks;
- ``{paths.segment}/metrics.json``: mean Dice per split and vertebra (a DVC metrics file);
- ``segment.model_path``: the bundle that ``segment_ct`` loads at scoring time.

Everything is logged to one MLflow run: per-epoch loss and validation Dice (through Lightning),
per-vertebra Dice on val and test, the model.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from omegaconf import DictConfig

from cagerisk.atomic import write_frame_atomic, write_text_atomic
from cagerisk.cohort.manifest import load_manifest
from cagerisk.cohort.schema import ID
from cagerisk.config import typed
from cagerisk.config.pipeline import PathsConfig, SegmentConfig
from cagerisk.deep.lightning_mlflow import active_run_logger, log_torch_model
from cagerisk.imaging.io import write_image
from cagerisk.segment.manifest import ct_mask_sources, write_segment_manifest
from cagerisk.segment.model import save_bundle
from cagerisk.segment.segmentation import (
    TrainedSegmenter,
    dice_metrics,
    segment_cohort,
    segmentation_inputs,
    train_segmenter,
)
from cagerisk.tracking import stage_run
from cagerisk.trainer import seed_training

__all__ = ["run_segment_stage"]

log = logging.getLogger(__name__)


@dataclass
class SegmentOutputs:
    dice: pd.DataFrame
    metrics: dict[str, float]
    inference_seconds: float


def segment_and_write(trained: TrainedSegmenter, frame: pd.DataFrame, config: SegmentConfig, out_dir: Path) -> SegmentOutputs:
    """The model bundle, predicted masks (written as each patient is done), the segment manifest, Dice
    table and metrics, and the bundle again with its metrics."""
    # Saved before inference as well: a patient whose CT fails to segment must not cost the trained model.
    save_bundle(trained.bundle, config.model_path)
    started = time.perf_counter()
    predicted: dict[str, str] = {}
    rows = []
    for patient in segment_cohort(trained.segmenter, frame):
        path = write_image(patient.labels, out_dir / "masks" / f"{patient.patient_id}_ct_mask_pred.nii.gz")
        predicted[patient.patient_id] = str(path.resolve())
        if patient.dice is not None:
            rows.append(patient.dice)
    inference_seconds = time.perf_counter() - started
    dice = pd.DataFrame(rows)
    metrics = dice_metrics(dice)
    trained.bundle.metrics = metrics
    save_bundle(trained.bundle, config.model_path)
    write_frame_atomic(dice, out_dir / "dice.csv")
    write_text_atomic(json.dumps(metrics, indent=2, sort_keys=True), out_dir / "metrics.json")
    out = frame.copy()
    out["ct_mask_pred"] = [predicted.get(str(pid)) for pid in out[ID]]
    out["ct_mask_source"] = ct_mask_sources(out, config.ct_mask)
    write_segment_manifest(out, out_dir / "manifest.csv")
    return SegmentOutputs(dice=dice, metrics=metrics, inference_seconds=inference_seconds)


def run_segment_stage(cfg: DictConfig) -> float:
    """Train, segment all, score; returns the mean test Dice (validation when there is no test split)."""
    config = typed(cfg.segment, SegmentConfig, "segment")
    out_dir = Path(typed(cfg.paths, PathsConfig, "paths").segment)
    frame = load_manifest(config.manifest)
    train_items, val_items = segmentation_inputs(frame, config, config.manifest)
    seed_training(cfg.seed, config.torch_threads)
    with stage_run(cfg, "segment") as run:
        cpu_started = time.process_time()
        trained = train_segmenter(train_items, val_items, config, cfg.seed, active_run_logger(run))
        outputs = segment_and_write(trained, frame, config, out_dir)
        metrics = outputs.metrics
        cpu_seconds = time.process_time() - cpu_started
        if run is not None:
            timings = {"train_seconds": trained.train_seconds, "inference_seconds": outputs.inference_seconds}
            mlflow.log_metrics({**metrics, **timings, "cpu_seconds": cpu_seconds})
            mlflow.log_artifact(str(out_dir / "dice.csv"))
            log_torch_model(trained.segmenter.net, "unet", config.model_path)
        for split in ("val", "test"):
            if f"dice_{split}_mean" in metrics:
                log.info("U-Net %s Dice: mean %.3f", split, metrics[f"dice_{split}_mean"])
        log.info(
            "segment stage: training %.0f s, inference %.0f s (wall); %.0f s CPU",
            trained.train_seconds,
            outputs.inference_seconds,
            cpu_seconds,
        )
    return float(metrics.get("dice_test_mean", metrics.get("dice_val_mean", float("nan"))))
