"""The deep stage: fine-tune the ViT-3D on the training split, export embeddings for every patient.

Reads ``deep.manifest`` (by default the segment stage's manifest, so CT inputs are cropped with the
mask the segment stage chose - the U-Net's, as at scoring time). Writes

- ``{paths.features}/deep.parquet``: ``patient_id`` + ``{sequence}_{roi}_dl_{k}`` for every patient;
- ``deep.model_path``: the bundle ``DeepEmbedder`` loads at scoring time;
- ``deep.checkpoint_dir``: Lightning checkpoints (``last.ckpt`` resumes with ``deep.resume=last``);
- ``{paths.features}/deep_metrics.json``: AUCs of the network's own CS head (a DVC metrics file).

No leakage: the network's weights are fitted on the training split only; validation picks the epoch
(early stopping on validation AUC). Embeddings of validation and test patients are then computed with
those frozen weights; the test split's outcome is never read here (only ``evaluate`` scores it).
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
import torch
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import DictConfig, OmegaConf

from cagerisk.cohort.manifest import load_manifest
from cagerisk.cohort.schema import ID, sequence_rois
from cagerisk.deep.data import DeepDataModule, PreprocessSettings, preprocess_cohort
from cagerisk.deep.export import DeepBundle, embed_samples, embedding_table, save_deep_bundle
from cagerisk.deep.lightning_mlflow import active_run_logger, log_torch_model
from cagerisk.deep.lightning_module import CSClassifier, patient_auc
from cagerisk.deep.model import build_deep_net
from cagerisk.deep.pretrained import load_pretrained
from cagerisk.deep.trainer import checkpoint_callbacks, gpu_available, make_trainer, resolve_resume
from cagerisk.tracking import stage_run

__all__ = ["deep_inputs", "run_deep_stage"]

log = logging.getLogger(__name__)


def deep_inputs(selected: Any) -> list[tuple[str, str]]:
    """``deep.inputs``: null = every (sequence, ROI) of the study, or a list like ``["ct_vertebra", ...]``."""
    all_pairs = sequence_rois()
    if selected in (None, "all"):
        return all_pairs
    pairs = []
    for item in selected:
        seq, _, roi = str(item).partition("_")
        if (seq, roi) not in all_pairs:
            valid = ", ".join(f"{s}_{r}" for s, r in all_pairs)
            raise ValueError(f"deep.inputs: unknown input {item!r}; expected among {valid}")
        pairs.append((seq, roi))
    return pairs


def _input_size(dcfg: DictConfig) -> int:
    size = dcfg.backbone.img_size
    sizes = [int(size)] * 3 if isinstance(size, int) else [int(s) for s in size]
    if len(set(sizes)) != 1:
        raise ValueError(f"deep.backbone.img_size must be a cube, got {sizes}")
    return sizes[0]


def run_deep_stage(cfg: DictConfig) -> float:
    """Train, export; returns the validation AUC of the best epoch (what a sweep would maximise)."""
    dcfg = cfg.deep
    inputs = deep_inputs(dcfg.get("inputs"))
    settings = PreprocessSettings(_input_size(dcfg), float(dcfg.margin_mm))
    features_path = Path(cfg.paths.features) / "deep.parquet"
    checkpoint_dir = Path(dcfg.checkpoint_dir)
    frame = load_manifest(str(dcfg.manifest))
    if "split" not in frame.columns:
        raise ValueError(f"manifest {dcfg.manifest}: no split column")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if dcfg.get("torch_threads"):
        torch.set_num_threads(int(dcfg.torch_threads))

    with stage_run(cfg, "deep") as run:
        started, cpu_started = time.perf_counter(), time.process_time()
        samples = preprocess_cohort(
            frame, inputs, settings, cache_dir=dcfg.get("cache_dir"), num_workers=int(dcfg.preprocess_workers)
        )
        prep_seconds = time.perf_counter() - started

        deep_cfg = OmegaConf.to_container(dcfg, resolve=True)
        net = build_deep_net(deep_cfg, inputs)
        pretrained_counts: dict[str, int] = {}
        if dcfg.get("pretrained"):
            report = load_pretrained(
                net.backbone,
                str(dcfg.pretrained),
                key_map=deep_cfg.get("pretrained_key_map"),
                strict=bool(dcfg.get("pretrained_strict", False)),
            )
            pretrained_counts = {f"pretrained_{k}": v for k, v in report.counts().items()}
            if run is not None:
                mlflow.log_dict(
                    {
                        "summary": report.summary(),
                        "loaded": report.loaded,
                        "inflated": report.inflated,
                        "incompatible": report.incompatible,
                        "unexpected": report.unexpected,
                        "missing": report.missing,
                    },
                    "pretrained_report.json",
                )
                mlflow.log_metrics({k: float(v) for k, v in pretrained_counts.items()})

        datamodule = DeepDataModule(
            samples,
            batch_size=int(dcfg.batch_size),
            num_workers=int(dcfg.num_workers),
            augment=OmegaConf.to_container(dcfg.augment, resolve=True),
            balanced_sampler=str(dcfg.imbalance) == "sampler",
            seed=int(cfg.seed),
        )
        if not datamodule.by_split["train"] or not datamodule.by_split["val"]:
            raise ValueError(f"manifest {dcfg.manifest}: the deep stage needs training and validation patients")
        pos_weight = datamodule.pos_weight() if str(dcfg.imbalance) == "pos_weight" else 1.0
        trainer_cfg = OmegaConf.to_container(dcfg.trainer, resolve=True)
        on_gpu = gpu_available(trainer_cfg)
        module = CSClassifier(
            net,
            lr=float(dcfg.lr),
            weight_decay=float(dcfg.weight_decay),
            pos_weight=pos_weight,
            max_epochs=int(trainer_cfg["max_epochs"]),
            warmup_epochs=int(dcfg.warmup_epochs),
            compile=bool(dcfg.compile) and on_gpu,
        )
        checkpoint, last_checkpoint = checkpoint_callbacks(checkpoint_dir, "vit3d", monitor="val_auc")
        stopper = EarlyStopping(monitor="val_auc", mode="max", patience=int(dcfg.patience))
        trainer = make_trainer(
            trainer_cfg,
            active_run_logger(run),
            [checkpoint, last_checkpoint, stopper],
            default_root_dir=checkpoint_dir,
            bf16=bool(dcfg.bf16),
            progress_bar=bool(dcfg.progress_bar),
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_resume(dcfg.get("resume"), checkpoint_dir))
        train_seconds = time.perf_counter() - started - prep_seconds
        if checkpoint.best_model_path:
            best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
            module.load_state_dict(best["state_dict"])
            log.info("best ViT-3D epoch: %s (val AUC %.3f)", checkpoint.best_model_path, float(checkpoint.best_model_score))

        net = module.net.cpu().eval()
        embeddings = embed_samples(net, samples, batch_size=int(dcfg.batch_size))
        table = embedding_table(samples, embeddings, inputs, [str(p) for p in frame[ID]])
        features_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = features_path.with_name(features_path.name + ".tmp")
        table.to_parquet(tmp, index=False)
        tmp.replace(features_path)

        metrics = head_metrics(net, samples, int(dcfg.batch_size))
        metrics.update(
            {
                "n_inputs": float(len(samples)),
                "n_features": float(table.shape[1] - 1),
                "pos_weight": pos_weight,
                "preprocess_seconds": prep_seconds,
                "train_seconds": train_seconds,
                "epochs_run": float(trainer.current_epoch),
                "cpu_seconds": time.process_time() - cpu_started,
            }
        )
        (features_path.parent / "deep_metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        bundle = DeepBundle(
            deep_cfg={"backbone": deep_cfg["backbone"], "head": deep_cfg["head"]},
            inputs=[list(p) for p in inputs],
            state_dict={k: v.detach().cpu() for k, v in net.state_dict().items()},
            input_size=settings.input_size,
            margin_mm=settings.margin_mm,
            metrics=metrics,
        )
        save_deep_bundle(bundle, dcfg.model_path)
        if run is not None:
            mlflow.log_metrics({f"final_{k}" if k == "val_auc" else k: v for k, v in metrics.items()})
            log_torch_model(net, "vit3d", str(dcfg.model_path))
        log.info(
            "deep stage: %d inputs, %d features; ViT head AUC val %.3f; %.0f s preprocessing, %.0f s training (wall), %.0f s CPU",
            len(samples),
            table.shape[1] - 1,
            metrics.get("val_auc", float("nan")),
            prep_seconds,
            train_seconds,
            metrics["cpu_seconds"],
        )
    return float(metrics.get("val_auc", float("nan")))


def head_metrics(net: Any, samples: list[dict[str, Any]], batch_size: int) -> dict[str, float]:
    """AUC of the network's own CS head on the training and validation splits (patient level = mean logit
    over inputs). Never on the test split: only ``evaluate`` reads its outcomes."""
    metrics: dict[str, float] = {}
    with torch.no_grad():
        for split in ("train", "val"):
            part = [s for s in samples if s["split"] == split and np.isfinite(s["label"])]
            if not part:
                continue
            embeddings = torch.as_tensor(embed_samples(net, part, batch_size))
            logits = net.classifier(embeddings).squeeze(-1).numpy()
            input_auc, auc = patient_auc([s[ID] for s in part], np.array([s["label"] for s in part]), logits)
            metrics[f"{split}_auc"], metrics[f"{split}_auc_input"] = auc, input_auc
    return metrics
