"""Train the vertebra U-Net on a cohort's training split, segment every patient's CT, score Dice.

``train_segmenter`` fits the network on the training split's CTs with manual masks and selects the epoch
by validation Dice; ``segment_cohort`` yields every patient's predicted label map with its Dice against
the manual mask. No output files (Lightning's checkpoints aside) and no MLflow here: the Lightning logger
is the caller's, and ``cagerisk.stages.segment`` writes masks, manifest, Dice and model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import SimpleITK as sitk
import torch
from rich.progress import Progress

from cagerisk.cohort.schema import ID, is_blank
from cagerisk.config.pipeline import SegmentConfig
from cagerisk.imaging.io import read_image
from cagerisk.segment.inference import CTSegmenter
from cagerisk.segment.metrics import per_label_dice, summarise_dice
from cagerisk.segment.model import VERTEBRA_LABELS, SegmentationBundle, build_unet
from cagerisk.segment.training import SegmentationDataModule, VertebraSegmenter, n_classes
from cagerisk.trainer import checkpoint_callbacks, make_trainer, resolve_resume

__all__ = [
    "SegmentedPatient",
    "TrainedSegmenter",
    "dice_metrics",
    "segment_cohort",
    "segmentation_inputs",
    "train_segmenter",
    "training_items",
]

log = logging.getLogger(__name__)


@dataclass
class TrainedSegmenter:
    bundle: SegmentationBundle  # what serving loads (``segment.model_path``)
    segmenter: CTSegmenter
    train_seconds: float


@dataclass
class SegmentedPatient:
    patient_id: str
    labels: sitk.Image  # the predicted label map on the CT's grid
    dice: dict[str, Any] | None  # patient_id, split and Dice per vertebra; None without a manual mask


def training_items(frame: pd.DataFrame, split: str) -> list[dict[str, Any]]:
    """``{"image", "mask", "patient_id"}`` for the patients of a split that have a CT and a manual mask."""
    rows = frame[frame["split"] == split]
    items = [
        {"image": r["ct_image"], "mask": r["ct_mask"], ID: str(r[ID])}
        for _, r in rows.iterrows()
        if not is_blank(r.get("ct_image")) and not is_blank(r.get("ct_mask"))
    ]
    skipped = len(rows) - len(items)
    if skipped:
        log.warning("%s split: %d patient(s) without a CT or a manual CT mask are not used for training", split, skipped)
    return items


def segmentation_inputs(frame: pd.DataFrame, config: SegmentConfig, source: str) -> tuple[list[dict], list[dict]]:
    """Training and validation items of the manifest ``frame`` (read from ``source``), after checking that
    manifest and network agree; errors name the manifest and what is missing."""
    missing = [c for c in ("ct_image", "ct_mask", "split") if c not in frame.columns]
    if missing:
        raise ValueError(f"manifest {source}: missing column(s) {missing} needed by the segment stage")
    unknown = sorted(set(frame["split"].dropna()) - {"train", "val", "test"})
    if unknown:
        raise ValueError(f"manifest {source}: unknown split value(s) {unknown}")
    classes = n_classes(config.mode)
    out_channels = config.net.get("out_channels", classes)
    if out_channels != classes:
        raise ValueError(f"segment.net.out_channels is {out_channels} but mode {config.mode!r} needs {classes}")
    train_items, val_items = training_items(frame, "train"), training_items(frame, "val")
    if not train_items:
        raise ValueError(f"manifest {source}: no training patient with a CT and a manual CT mask")
    if not val_items:
        raise ValueError(f"manifest {source}: no validation patient with a CT and a manual CT mask")
    return train_items, val_items


def train_segmenter(
    train_items: list[dict[str, Any]], val_items: list[dict[str, Any]], config: SegmentConfig, seed: int, logger: Any
) -> TrainedSegmenter:
    """Fit the U-Net (``logger``: a Lightning logger, or False) and keep the best epoch by validation Dice.

    Checkpoints go to ``segment.checkpoint_dir``; ``segment.resume`` continues from one."""
    started = time.perf_counter()
    classes = n_classes(config.mode)
    datamodule = SegmentationDataModule(
        train_items,
        val_items,
        spacing_mm=list(config.spacing_mm),
        hu_window=list(config.hu_window),
        roi_size=list(config.roi_size),
        mode=config.mode,
        samples_per_volume=config.samples_per_volume,
        pos_fraction=config.pos_fraction,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        seed=seed,
    )
    module = VertebraSegmenter(
        build_unet(config.net),
        classes,
        roi_size=list(config.roi_size),
        lr=config.lr,
        weight_decay=config.weight_decay,
        max_epochs=config.trainer["max_epochs"],
        sw_batch_size=config.sw_batch_size,
        overlap=config.overlap,
    )
    checkpoint_dir = Path(config.checkpoint_dir)
    checkpoint, last_checkpoint = checkpoint_callbacks(checkpoint_dir, "unet", monitor="val_dice")
    trainer = make_trainer(
        config.trainer, logger, [checkpoint, last_checkpoint], default_root_dir=checkpoint_dir, progress_bar=config.progress_bar
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_resume(config.resume, checkpoint_dir))
    train_seconds = time.perf_counter() - started
    if checkpoint.best_model_path:
        best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(best["state_dict"])
        log.info("best U-Net epoch: %s (val Dice %.3f)", checkpoint.best_model_path, float(checkpoint.best_model_score))
    bundle = SegmentationBundle(
        net=dict(config.net),
        state_dict={k: v.detach().cpu() for k, v in module.net.state_dict().items()},
        mode=config.mode,
        spacing_mm=list(config.spacing_mm),
        hu_window=list(config.hu_window),
        roi_size=list(config.roi_size),
        labels=list(VERTEBRA_LABELS),
        min_component_mm3=config.min_component_mm3,
        sw_batch_size=config.sw_batch_size,
        overlap=config.overlap,
    )
    return TrainedSegmenter(bundle=bundle, segmenter=CTSegmenter(bundle), train_seconds=train_seconds)


def segment_cohort(segmenter: CTSegmenter, frame: pd.DataFrame) -> Iterator[SegmentedPatient]:
    """Every patient's CT segmented, in manifest order (patients without a CT are skipped with a warning)."""
    with Progress(transient=True) as progress:
        task = progress.add_task("segmenting CTs", total=len(frame))
        for _, row in frame.iterrows():
            pid = str(row[ID])
            progress.advance(task)
            if is_blank(row.get("ct_image")):
                log.warning("patient %s: no CT image, no predicted mask", pid)
                continue
            try:
                labels = segmenter.segment(read_image(row["ct_image"]))
            except Exception as exc:
                raise RuntimeError(f"patient {pid}: segmenting CT {row['ct_image']} failed: {exc}") from exc
            dice = None
            if not is_blank(row.get("ct_mask")):
                reference = sitk.GetArrayFromImage(read_image(row["ct_mask"]))
                scores = per_label_dice(sitk.GetArrayFromImage(labels), reference, VERTEBRA_LABELS)
                dice = {ID: pid, "split": row.get("split"), **scores}
            yield SegmentedPatient(patient_id=pid, labels=labels, dice=dice)


def dice_metrics(dice: pd.DataFrame) -> dict[str, float]:
    """``dice_{split}_{vertebra}`` and ``dice_{split}_mean`` for every split present."""
    metrics: dict[str, float] = {}
    if dice.empty:
        return metrics
    for split, part in dice.groupby("split"):
        per_patient = {str(r[ID]): {k: float(v) for k, v in r.items() if k not in (ID, "split")} for _, r in part.iterrows()}
        for name, value in summarise_dice(per_patient).items():
            metrics[f"dice_{split}_{name.removeprefix('vertebra_')}"] = value
    return metrics
