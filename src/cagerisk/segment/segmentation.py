"""Train one sequence's U-Net on a cohort's training split, segment every patient, score Dice and HD95.

``train_segmenter`` fits the network on the training split's images with manual masks and selects the
epoch by validation Dice; ``segment_cohort`` yields every patient's predicted label map with its Dice
and HD95 against the manual mask. The same functions serve every sequence (CT, sagittal and axial MRI);
what differs is the per-sequence config (``cagerisk.segment.sequences``). No output files (Lightning's
checkpoints aside) and no MLflow here: the Lightning logger is the caller's, and
``cagerisk.stages.segment`` writes masks, manifest, scores and models.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from rich.progress import Progress

from cagerisk.cohort.schema import ID, LABEL_NAMES, allowed_label_values, image_column, is_blank, mask_column
from cagerisk.config.pipeline import SegmentConfig
from cagerisk.imaging.io import read_image, read_image_header, same_geometry
from cagerisk.segment.inference import Segmenter
from cagerisk.segment.metrics import per_label_dice, per_label_hd95, summarise_dice
from cagerisk.segment.model import SegmentationBundle, build_unet, class_labels, structure_labels
from cagerisk.segment.training import SegmentationDataModule, VertebraSegmenter
from cagerisk.trainer import checkpoint_callbacks, make_trainer, resolve_resume

__all__ = [
    "SegmentedPatient",
    "TrainedSegmenter",
    "check_manual_masks",
    "dice_metrics",
    "segment_cohort",
    "segmentation_inputs",
    "train_segmenter",
    "training_items",
]

log = logging.getLogger(__name__)


@dataclass
class TrainedSegmenter:
    bundle: SegmentationBundle  # what serving loads (``segment.model_path`` of the sequence)
    segmenter: Segmenter
    train_seconds: float


@dataclass
class SegmentedPatient:
    patient_id: str
    labels: sitk.Image  # the predicted label map on the image's grid
    # One row per structure: patient_id, split, sequence, structure, dice, hd95; empty without a manual mask.
    scores: list[dict[str, Any]]


def _classes(config: SegmentConfig, sequence: str) -> list[list[int]]:
    from cagerisk.cohort.schema import SEQUENCE_STRUCTURES

    return class_labels(config.mode, structure_labels(SEQUENCE_STRUCTURES[sequence]))


def training_items(frame: pd.DataFrame, split: str, sequence: str = "ct") -> list[dict[str, Any]]:
    """``{"image", "mask", "patient_id"}`` for the patients of a split that have the sequence's image and a
    manual mask."""
    image_col, mask_col = image_column(sequence), mask_column(sequence)
    rows = frame[frame["split"] == split]
    items = [
        {"image": r[image_col], "mask": r[mask_col], ID: str(r[ID])}
        for _, r in rows.iterrows()
        if not is_blank(r.get(image_col)) and not is_blank(r.get(mask_col))
    ]
    skipped = len(rows) - len(items)
    if skipped:
        log.warning(
            "%s split: %d patient(s) without a %s image or a manual %s mask are not used for training",
            split,
            skipped,
            sequence,
            sequence,
        )
    return items


def check_manual_masks(frame: pd.DataFrame, sequence: str, source: str, limit: int = 10) -> None:
    """Every manual mask of ``sequence`` lies on its image's grid and holds only that sequence's label
    values; otherwise one error lists each bad file with its patient (before any training)."""
    image_col, mask_col = image_column(sequence), mask_column(sequence)
    allowed = allowed_label_values(sequence)
    problems = []
    for _, row in frame.iterrows():
        image, mask = row.get(image_col), row.get(mask_col)
        if is_blank(image) or is_blank(mask):
            continue
        pid = str(row[ID])
        try:
            same, why = same_geometry(read_image_header(str(image)), read_image_header(str(mask)))
            if not same:
                problems.append(f"patient {pid}: {sequence} mask {mask} is not on the grid of {image}: {why}")
                continue
            values = {int(v) for v in np.unique(sitk.GetArrayFromImage(read_image(mask)))}
        except Exception as exc:  # an unreadable file is named like the others
            problems.append(f"patient {pid}: {sequence} mask {mask} or image {image} cannot be read: {exc}")
            continue
        unknown = sorted(values - allowed)
        if unknown:
            problems.append(
                f"patient {pid}: {sequence} mask {mask} holds label value(s) {unknown} outside the {sequence} label map "
                f"{sorted(allowed)}"
            )
    if problems:
        more = [f"... and {len(problems) - limit} more"] if len(problems) > limit else []
        raise ValueError(f"manifest {source}: bad {sequence} mask(s):\n  " + "\n  ".join(problems[:limit] + more))


def segmentation_inputs(
    frame: pd.DataFrame, config: SegmentConfig, source: str, sequence: str = "ct"
) -> tuple[list[dict], list[dict]]:
    """Training and validation items of one sequence in the manifest ``frame`` (read from ``source``);
    errors name the manifest and what is missing."""
    missing = [c for c in (image_column(sequence), mask_column(sequence), "split") if c not in frame.columns]
    if missing:
        raise ValueError(f"manifest {source}: missing column(s) {missing} needed by the segment stage")
    unknown = sorted(set(frame["split"].dropna()) - {"train", "val", "test"})
    if unknown:
        raise ValueError(f"manifest {source}: unknown split value(s) {unknown}")
    classes = len(_classes(config, sequence)) + 1
    out_channels = config.net.get("out_channels", classes)
    if out_channels != classes:
        raise ValueError(
            f"segment.net.out_channels is {out_channels} but the {sequence} U-Net (mode {config.mode!r}) needs {classes}"
        )
    check_manual_masks(frame, sequence, source)
    train_items, val_items = training_items(frame, "train", sequence), training_items(frame, "val", sequence)
    if not train_items:
        raise ValueError(f"manifest {source}: no training patient with a {sequence} image and a manual {sequence} mask")
    if not val_items:
        raise ValueError(f"manifest {source}: no validation patient with a {sequence} image and a manual {sequence} mask")
    return train_items, val_items


def train_segmenter(
    train_items: list[dict[str, Any]],
    val_items: list[dict[str, Any]],
    config: SegmentConfig,
    seed: int,
    logger: Any,
    sequence: str = "ct",
) -> TrainedSegmenter:
    """Fit ``sequence``'s U-Net (``config``: that sequence's, ``logger``: a Lightning logger or False) and
    keep the best epoch by validation Dice.

    Checkpoints go to ``config.checkpoint_dir``; ``config.resume`` continues from one."""
    started = time.perf_counter()
    classes = _classes(config, sequence)
    datamodule = SegmentationDataModule(
        train_items,
        val_items,
        spacing_mm=list(config.spacing_mm),
        hu_window=None if config.hu_window is None else list(config.hu_window),
        roi_size=list(config.roi_size),
        classes=classes,
        samples_per_volume=config.samples_per_volume,
        pos_fraction=config.pos_fraction,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        seed=seed,
        flip_lr=config.flip_lr,
    )
    module = VertebraSegmenter(
        build_unet(config.net),
        len(classes) + 1,
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
        log.info(
            "best %s U-Net epoch: %s (val Dice %.3f)", sequence, checkpoint.best_model_path, float(checkpoint.best_model_score)
        )
    bundle = SegmentationBundle(
        net=dict(config.net),
        state_dict={k: v.detach().cpu() for k, v in module.net.state_dict().items()},
        mode=config.mode,
        spacing_mm=list(config.spacing_mm),
        hu_window=None if config.hu_window is None else list(config.hu_window),
        roi_size=list(config.roi_size),
        labels=[v for c in classes for v in c],
        min_component_mm3=config.min_component_mm3,
        sw_batch_size=config.sw_batch_size,
        overlap=config.overlap,
        sequence=sequence,
        classes=classes,
    )
    return TrainedSegmenter(bundle=bundle, segmenter=Segmenter(bundle), train_seconds=train_seconds)


def segment_cohort(segmenter: Segmenter, frame: pd.DataFrame, sequence: str | None = None) -> Iterator[SegmentedPatient]:
    """Every patient's image of the segmenter's sequence segmented, in manifest order (patients without
    that image are skipped with a warning), with Dice and HD95 where a manual mask exists."""
    sequence = sequence or segmenter.sequence
    image_col, mask_col = image_column(sequence), mask_column(sequence)
    labels_of = [v for c in segmenter.classes for v in c]
    with Progress(transient=True) as progress:
        task = progress.add_task(f"segmenting {sequence}", total=len(frame))
        for _, row in frame.iterrows():
            pid = str(row[ID])
            progress.advance(task)
            if is_blank(row.get(image_col)):
                log.warning("patient %s: no %s image, no predicted mask", pid, sequence)
                continue
            try:
                labels = segmenter.segment(read_image(row[image_col]))
            except Exception as exc:
                raise RuntimeError(f"patient {pid}: segmenting {sequence} image {row[image_col]} failed: {exc}") from exc
            scores: list[dict[str, Any]] = []
            if not is_blank(row.get(mask_col)):
                reference_image = read_image(row[mask_col])
                reference = sitk.GetArrayFromImage(reference_image)
                predicted = sitk.GetArrayFromImage(labels)
                if reference.shape != predicted.shape:
                    raise ValueError(
                        f"patient {pid}: manual {sequence} mask {row[mask_col]} has grid {reference_image.GetSize()}, "
                        f"the image {labels.GetSize()}"
                    )
                spacing = list(reference_image.GetSpacing())[::-1]  # numpy axis order
                dice = per_label_dice(predicted, reference, labels_of)
                hd95 = per_label_hd95(predicted, reference, labels_of, spacing)
                for value in labels_of:
                    name = LABEL_NAMES[int(value)]
                    scores.append(
                        {ID: pid, "split": row.get("split"), "sequence": sequence, "structure": name}
                        | {"dice": dice[name], "hd95": hd95[name]}
                    )
            yield SegmentedPatient(patient_id=pid, labels=labels, scores=scores)


def dice_metrics(scores: pd.DataFrame) -> dict[str, float]:
    """Means over patients (NaN skipped), per sequence and split, of Dice and HD95:
    ``{dice|hd95}_{sequence}_{split}_{structure}`` (``vertebra_L4``), per structure type
    (``..._vertebra``, ``..._psoas``: left and right together) and over all structures (``..._mean``)."""
    metrics: dict[str, float] = {}
    if scores.empty:
        return metrics
    for (sequence, split), part in scores.groupby(["sequence", "split"]):
        for metric in ("dice", "hd95"):
            per_patient: dict[str, dict[str, float]] = {}
            for _, r in part.iterrows():
                per_patient.setdefault(str(r[ID]), {})[str(r["structure"])] = float(r[metric])
            for name, value in summarise_dice(per_patient).items():
                metrics[f"{metric}_{sequence}_{split}_{name}"] = value
            kinds = part["structure"].str.split("_").str[0]
            for kind, values in part[metric].groupby(kinds):
                finite = values[np.isfinite(values)]
                metrics[f"{metric}_{sequence}_{split}_{kind}"] = float(finite.mean()) if len(finite) else float("nan")
    return metrics
