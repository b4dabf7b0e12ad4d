"""`cagerisk segment`: train every sequence's U-Net, segment every patient, score Dice and HD95, write the manifest.

Reads ``segment.manifest`` (the cohort manifest) and, for every sequence of ``segment.sequences``
(CT vertebral bodies; sagittal T1/T2 bodies and discs; axial T1/T2 muscles), writes

- ``{paths.segment}/masks/{patient}_{seq}_mask_pred.nii.gz``: predicted label maps (the image's grid);
- ``{paths.segment}/manifest.csv``: the cohort manifest + ``{seq}_mask_pred`` and ``{seq}_mask_source``;
- ``{paths.segment}/dice.csv``: per patient, sequence and structure, Dice and HD95 against the manual mask;
- ``{paths.segment}/metrics.json``: their means per sequence, split and structure (a DVC metrics file);
- ``{paths.segment}/report.md``: the same as tables (and an MLflow artifact);
- ``segment.model_path`` (``{sequence}`` filled in): the bundle that serving loads per sequence.

Everything is logged to one MLflow run: per-epoch loss and validation Dice of each U-Net (through
Lightning, prefixed ``{seq}-``), Dice and HD95 per structure and split, the models (``unet_{seq}``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from cagerisk.atomic import write_frame_atomic, write_text_atomic
from cagerisk.cohort.manifest import load_manifest
from cagerisk.cohort.schema import ID
from cagerisk.config import typed
from cagerisk.config.pipeline import PathsConfig, SegmentConfig
from cagerisk.deep.lightning_mlflow import active_run_logger, log_torch_model
from cagerisk.imaging.io import write_image
from cagerisk.segment.manifest import MANUAL, mask_sources, predicted_column, source_column, write_segment_manifest
from cagerisk.segment.model import save_bundle
from cagerisk.segment.segmentation import (
    TrainedSegmenter,
    dice_metrics,
    segment_cohort,
    segmentation_inputs,
    train_segmenter,
)
from cagerisk.segment.sequences import segmented_sequences, sequence_config
from cagerisk.tracking import stage_run
from cagerisk.trainer import seed_training

__all__ = ["run_segment_stage"]

log = logging.getLogger(__name__)

SCORE_COLUMNS = [ID, "split", "sequence", "structure", "dice", "hd95"]


@dataclass
class SegmentOutputs:
    scores: pd.DataFrame
    predicted: dict[str, str]  # patient -> absolute path of the predicted mask
    inference_seconds: float


def segment_and_write(trained: TrainedSegmenter, frame: pd.DataFrame, config: SegmentConfig, out_dir: Path) -> SegmentOutputs:
    """One sequence: the model bundle, predicted masks (written as each patient is done), the scores,
    and the bundle again with its metrics."""
    sequence = trained.bundle.sequence
    # Saved before inference as well: a patient whose image fails to segment must not cost the trained model.
    save_bundle(trained.bundle, config.model_path)
    started = time.perf_counter()
    predicted: dict[str, str] = {}
    rows = []
    for patient in segment_cohort(trained.segmenter, frame, sequence):
        path = write_image(patient.labels, out_dir / "masks" / f"{patient.patient_id}_{sequence}_mask_pred.nii.gz")
        predicted[patient.patient_id] = str(path.resolve())
        rows.extend(patient.scores)
    inference_seconds = time.perf_counter() - started
    scores = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    trained.bundle.metrics = dice_metrics(scores)
    save_bundle(trained.bundle, config.model_path)
    return SegmentOutputs(scores=scores, predicted=predicted, inference_seconds=inference_seconds)


def report_markdown(metrics: dict[str, float], sequences: list[str]) -> str:
    """Dice and HD95 (mm) per sequence, structure and split, as Markdown tables."""
    lines = ["# Segmentation: Dice and HD95 (mm) against the manual masks", ""]
    for seq in sequences:
        names = sorted(
            {k.split("_", 3)[3] for k in metrics if k.startswith(f"dice_{seq}_")},
            key=lambda n: (n == "mean", "_" not in n, n),
        )
        splits = [s for s in ("train", "val", "test") if f"dice_{seq}_{s}_mean" in metrics]
        lines += [f"## {seq}", "", "| structure | " + " | ".join(f"Dice {s} | HD95 {s}" for s in splits) + " |"]
        lines.append("| --- |" + " --- | --- |" * len(splits))
        for name in names:
            cells = []
            for s in splits:
                dice, hd = metrics.get(f"dice_{seq}_{s}_{name}", np.nan), metrics.get(f"hd95_{seq}_{s}_{name}", np.nan)
                cells += [f"{dice:.3f}", f"{hd:.1f}"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def run_segment_stage(cfg: DictConfig) -> float:
    """Train, segment all, score, per sequence; returns the mean test Dice over the sequences' means
    (validation when there is no test split)."""
    config = typed(cfg.segment, SegmentConfig, "segment")
    out_dir = Path(typed(cfg.paths, PathsConfig, "paths").segment)
    frame = load_manifest(config.manifest)
    sequences = segmented_sequences(config)
    configs = {seq: sequence_config(config, seq) for seq in sequences}
    # Every sequence's inputs checked before any training: a missing column fails in seconds, not after a U-Net.
    inputs = {seq: segmentation_inputs(frame, configs[seq], config.manifest, seq) for seq in sequences}
    seed_training(cfg.seed, config.torch_threads)
    out = frame.copy()
    all_scores, metrics, timings = [], {}, {}
    with stage_run(cfg, "segment") as run:
        cpu_started = time.process_time()
        for seq in sequences:
            seq_config = configs[seq]
            seed_training(cfg.seed, seq_config.torch_threads)
            trained = train_segmenter(*inputs[seq], seq_config, cfg.seed, active_run_logger(run, prefix=seq), seq)
            outputs = segment_and_write(trained, frame, seq_config, out_dir)
            all_scores.append(outputs.scores)
            metrics.update(trained.bundle.metrics)
            timings[f"train_seconds_{seq}"] = trained.train_seconds
            timings[f"inference_seconds_{seq}"] = outputs.inference_seconds
            out[predicted_column(seq)] = [outputs.predicted.get(str(pid)) for pid in out[ID]]
            val_dice = metrics.get(f"dice_{seq}_val_mean", float("nan"))
            if not val_dice >= seq_config.min_val_dice:
                # An inaccurate U-Net would feed features (and, served, masks) worse than none: manual masks.
                log.warning(
                    "%s U-Net: validation Dice %.3f < segment.min_val_dice %.2f: its masks are not used and it is not served",
                    seq,
                    val_dice,
                    seq_config.min_val_dice,
                )
                trained.bundle.accepted = False
                save_bundle(trained.bundle, seq_config.model_path)
            preference = seq_config.masks if trained.bundle.accepted else MANUAL
            out[source_column(seq)] = mask_sources(out, preference, seq)
            if run is not None:
                log_torch_model(trained.segmenter.net, f"unet_{seq}", seq_config.model_path)
            log.info(
                "%s U-Net: training %.0f s, inference %.0f s; Dice %s",
                seq,
                trained.train_seconds,
                outputs.inference_seconds,
                ", ".join(
                    f"{s} {metrics[f'dice_{seq}_{s}_mean']:.3f}" for s in ("val", "test") if f"dice_{seq}_{s}_mean" in metrics
                ),
            )
        scores = pd.concat(all_scores, ignore_index=True) if all_scores else pd.DataFrame(columns=SCORE_COLUMNS)
        write_frame_atomic(scores, out_dir / "dice.csv")
        write_text_atomic(json.dumps(metrics, indent=2, sort_keys=True), out_dir / "metrics.json")
        write_text_atomic(report_markdown(metrics, sequences), out_dir / "report.md")
        write_segment_manifest(out, out_dir / "manifest.csv")
        cpu_seconds = time.process_time() - cpu_started
        if run is not None:
            finite = {k: v for k, v in metrics.items() if np.isfinite(v)}
            mlflow.log_metrics({**finite, **timings, "cpu_seconds": cpu_seconds})
            mlflow.log_artifact(str(out_dir / "dice.csv"))
            mlflow.log_artifact(str(out_dir / "report.md"))
        log.info(
            "segment stage (%s): training %.0f s, inference %.0f s (wall); %.0f s CPU",
            ", ".join(sequences),
            sum(v for k, v in timings.items() if k.startswith("train")),
            sum(v for k, v in timings.items() if k.startswith("inference")),
            cpu_seconds,
        )
    for split in ("test", "val"):
        means = [metrics[f"dice_{seq}_{split}_mean"] for seq in sequences if f"dice_{seq}_{split}_mean" in metrics]
        if means:
            return float(np.mean(means))
    return float("nan")
