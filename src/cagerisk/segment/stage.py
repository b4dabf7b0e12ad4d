"""The segment stage: train the vertebra U-Net, segment every patient's CT, score Dice, write the manifest.

Reads ``segment.manifest`` (the cohort manifest). Trains on the training split's CTs with manual masks,
selects the epoch by validation Dice, then segments every patient and writes

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
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from omegaconf import DictConfig, OmegaConf
from rich.progress import Progress

from cagerisk.cohort.manifest import load_manifest
from cagerisk.cohort.schema import ID
from cagerisk.deep.lightning_mlflow import active_run_logger, log_torch_model
from cagerisk.deep.trainer import checkpoint_callbacks, make_trainer, resolve_resume
from cagerisk.imaging.io import read_image, write_image
from cagerisk.segment.inference import CTSegmenter
from cagerisk.segment.manifest import ct_mask_sources, write_segment_manifest
from cagerisk.segment.metrics import per_label_dice, summarise_dice
from cagerisk.segment.model import VERTEBRA_LABELS, SegmentationBundle, build_unet, save_bundle
from cagerisk.segment.training import SegmentationDataModule, VertebraSegmenter, n_classes
from cagerisk.tracking import stage_run

__all__ = ["run_segment_stage", "training_items"]

log = logging.getLogger(__name__)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and str(value).strip() != ""


def training_items(frame: pd.DataFrame, split: str) -> list[dict[str, Any]]:
    """``{"image", "mask", "patient_id"}`` for the patients of a split that have a CT and a manual mask."""
    rows = frame[frame["split"] == split]
    items = [
        {"image": r["ct_image"], "mask": r["ct_mask"], ID: str(r[ID])}
        for _, r in rows.iterrows()
        if _present(r.get("ct_image")) and _present(r.get("ct_mask"))
    ]
    skipped = len(rows) - len(items)
    if skipped:
        log.warning("%s split: %d patient(s) without a CT or a manual CT mask are not used for training", split, skipped)
    return items


def _check_manifest(frame: pd.DataFrame, path: str) -> None:
    missing = [c for c in ("ct_image", "ct_mask", "split") if c not in frame.columns]
    if missing:
        raise ValueError(f"manifest {path}: missing column(s) {missing} needed by the segment stage")
    unknown = sorted(set(frame["split"].dropna()) - {"train", "val", "test"})
    if unknown:
        raise ValueError(f"manifest {path}: unknown split value(s) {unknown}")


def run_segment_stage(cfg: DictConfig) -> float:
    """Train, segment all, score; returns the mean test Dice (validation when there is no test split)."""
    scfg = cfg.segment
    out_dir = Path(cfg.paths.segment)
    mask_dir = out_dir / "masks"
    model_path = Path(scfg.model_path)
    checkpoint_dir = Path(scfg.checkpoint_dir)
    manifest_path = str(scfg.manifest)
    frame = load_manifest(manifest_path)
    _check_manifest(frame, manifest_path)
    mode = str(scfg.mode)
    classes = n_classes(mode)
    net_cfg = OmegaConf.to_container(scfg.net, resolve=True)
    if int(net_cfg.get("out_channels", classes)) != classes:
        raise ValueError(f"segment.net.out_channels is {net_cfg.get('out_channels')} but mode {mode!r} needs {classes}")

    train_items, val_items = training_items(frame, "train"), training_items(frame, "val")
    if not train_items:
        raise ValueError(f"manifest {manifest_path}: no training patient with a CT and a manual CT mask")
    if not val_items:
        raise ValueError(f"manifest {manifest_path}: no validation patient with a CT and a manual CT mask")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    torch.set_num_threads(max(int(scfg.get("torch_threads") or torch.get_num_threads()), 1))

    with stage_run(cfg, "segment") as run:
        started, cpu_started = time.perf_counter(), time.process_time()
        datamodule = SegmentationDataModule(
            train_items,
            val_items,
            spacing_mm=list(scfg.spacing_mm),
            hu_window=list(scfg.hu_window),
            roi_size=list(scfg.roi_size),
            mode=mode,
            samples_per_volume=int(scfg.samples_per_volume),
            pos_fraction=float(scfg.pos_fraction),
            batch_size=int(scfg.batch_size),
            num_workers=int(scfg.num_workers),
            seed=int(cfg.seed),
        )
        module = VertebraSegmenter(
            build_unet(net_cfg),
            classes,
            roi_size=list(scfg.roi_size),
            lr=float(scfg.lr),
            weight_decay=float(scfg.weight_decay),
            max_epochs=int(scfg.trainer.max_epochs),
            sw_batch_size=int(scfg.sw_batch_size),
            overlap=float(scfg.overlap),
        )
        checkpoint, last_checkpoint = checkpoint_callbacks(checkpoint_dir, "unet", monitor="val_dice")
        trainer = make_trainer(
            OmegaConf.to_container(scfg.trainer, resolve=True),
            active_run_logger(run),
            [checkpoint, last_checkpoint],
            default_root_dir=checkpoint_dir,
            progress_bar=bool(scfg.progress_bar),
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_resume(scfg.get("resume"), checkpoint_dir))
        train_seconds = time.perf_counter() - started
        if checkpoint.best_model_path:
            best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
            module.load_state_dict(best["state_dict"])
            log.info("best U-Net epoch: %s (val Dice %.3f)", checkpoint.best_model_path, float(checkpoint.best_model_score))

        bundle = SegmentationBundle(
            net=net_cfg,
            state_dict={k: v.detach().cpu() for k, v in module.net.state_dict().items()},
            mode=mode,
            spacing_mm=[float(s) for s in scfg.spacing_mm],
            hu_window=[float(h) for h in scfg.hu_window],
            roi_size=[int(s) for s in scfg.roi_size],
            labels=list(VERTEBRA_LABELS),
            min_component_mm3=float(scfg.min_component_mm3),
            sw_batch_size=int(scfg.sw_batch_size),
            overlap=float(scfg.overlap),
        )
        save_bundle(bundle, model_path)
        segmenter = CTSegmenter(bundle)
        predicted, dice_rows = segment_all(segmenter, frame, mask_dir)
        infer_seconds = time.perf_counter() - started - train_seconds

        dice = pd.DataFrame(dice_rows)
        metrics = dice_metrics(dice)
        bundle.metrics = metrics
        save_bundle(bundle, model_path)
        out_dir.mkdir(parents=True, exist_ok=True)
        dice.to_csv(out_dir / "dice.csv", index=False)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))

        out = frame.copy()
        out["ct_mask_pred"] = [predicted.get(str(pid)) for pid in out[ID]]
        out["ct_mask_source"] = ct_mask_sources(out, str(scfg.ct_mask))
        write_segment_manifest(out, out_dir / "manifest.csv")

        if run is not None:
            mlflow.log_metrics(
                {
                    **metrics,
                    "train_seconds": train_seconds,
                    "inference_seconds": infer_seconds,
                    "cpu_seconds": time.process_time() - cpu_started,
                }
            )
            mlflow.log_artifact(str(out_dir / "dice.csv"))
            log_torch_model(segmenter.net, "unet", str(model_path))
        for split in ("val", "test"):
            if f"dice_{split}_mean" in metrics:
                log.info("U-Net %s Dice: mean %.3f", split, metrics[f"dice_{split}_mean"])
        log.info(
            "segment stage: training %.0f s, inference %.0f s (wall); %.0f s CPU",
            train_seconds,
            infer_seconds,
            time.process_time() - cpu_started,
        )
    return float(metrics.get("dice_test_mean", metrics.get("dice_val_mean", float("nan"))))


def segment_all(segmenter: CTSegmenter, frame: pd.DataFrame, mask_dir: Path) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Segment every patient's CT; returns {patient: mask path} and per-patient Dice rows."""
    predicted: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    with Progress(transient=True) as progress:
        task = progress.add_task("segmenting CTs", total=len(frame))
        for _, row in frame.iterrows():
            pid = str(row[ID])
            progress.advance(task)
            if not _present(row.get("ct_image")):
                log.warning("patient %s: no CT image, no predicted mask", pid)
                continue
            try:
                ct = read_image(row["ct_image"])
                labels = segmenter.segment(ct)
            except Exception as exc:
                raise RuntimeError(f"patient {pid}: segmenting CT {row['ct_image']} failed: {exc}") from exc
            path = write_image(labels, mask_dir / f"{pid}_ct_mask_pred.nii.gz")
            predicted[pid] = str(path.resolve())
            if _present(row.get("ct_mask")):
                reference = sitk.GetArrayFromImage(read_image(row["ct_mask"]))
                scores = per_label_dice(sitk.GetArrayFromImage(labels), reference, VERTEBRA_LABELS)
                rows.append({ID: pid, "split": row.get("split"), **scores})
    return predicted, rows


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
