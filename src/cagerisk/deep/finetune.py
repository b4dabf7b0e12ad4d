"""Fine-tune the ViT-3D on the training split and embed every patient's inputs (no output files, no MLflow).

Steps, in the order the deep stage runs them (the seeded RNG stream depends on it): ``preprocess_inputs``
(ROI crops, cached under ``deep.cache_dir``) -> ``build_network`` (backbone, optional pretrained weights)
-> ``fine_tune`` (Lightning, the caller's logger; checkpoints under ``deep.checkpoint_dir``) ->
``embed_cohort`` (the wide feature table, the bundle serving loads, the CS head's AUCs).

No leakage: the network's weights are fitted on the training split only; validation picks the epoch
(early stopping on validation AUC). Embeddings of validation and test patients are then computed with
those frozen weights; the test split's outcome is never read here (only ``evaluate`` scores it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping

from cagerisk.cohort.schema import ID, sequence_rois
from cagerisk.config.pipeline import DeepConfig
from cagerisk.deep.data import DeepDataModule, PreprocessSettings, preprocess_cohort
from cagerisk.deep.export import DeepBundle, embed_samples, embedding_table
from cagerisk.deep.lightning_module import CSClassifier, patient_auc
from cagerisk.deep.model import DeepRadiomicsNet, build_deep_net
from cagerisk.deep.pretrained import PretrainedReport, load_pretrained
from cagerisk.trainer import checkpoint_callbacks, gpu_available, make_trainer, resolve_resume

__all__ = [
    "DeepInputs",
    "DeepTraining",
    "DeepEmbeddings",
    "build_network",
    "deep_inputs",
    "embed_cohort",
    "fine_tune",
    "head_metrics",
    "preprocess_inputs",
]

log = logging.getLogger(__name__)


@dataclass
class DeepInputs:
    samples: list[dict[str, Any]]  # one preprocessed crop per (patient, sequence, ROI)
    inputs: list[tuple[str, str]]
    settings: PreprocessSettings
    seconds: float


@dataclass
class DeepTraining:
    net: DeepRadiomicsNet  # the best epoch's weights, on the CPU, in evaluation mode
    pos_weight: float
    epochs_run: int
    seconds: float


@dataclass
class DeepEmbeddings:
    table: pd.DataFrame  # patient_id + {sequence}_{roi}_dl_{k}
    bundle: DeepBundle
    metrics: dict[str, float]


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


def _input_size(config: DeepConfig) -> int:
    size = config.backbone["img_size"]
    sizes = [int(size)] * 3 if isinstance(size, int) else [int(s) for s in size]
    if len(set(sizes)) != 1:
        raise ValueError(f"deep.backbone.img_size must be a cube, got {sizes}")
    return sizes[0]


def _net_config(config: DeepConfig) -> dict[str, Any]:
    """What ``build_deep_net`` and the bundle need: the backbone node and the head."""
    return {"backbone": config.backbone, "head": asdict(config.head)}


def preprocess_inputs(frame: pd.DataFrame, config: DeepConfig) -> DeepInputs:
    """Every input of every patient of the manifest ``frame`` cropped and resized (cached)."""
    started = time.perf_counter()
    inputs = deep_inputs(config.inputs)
    settings = PreprocessSettings(_input_size(config), config.margin_mm)
    samples = preprocess_cohort(frame, inputs, settings, cache_dir=config.cache_dir, num_workers=config.preprocess_workers)
    return DeepInputs(samples=samples, inputs=inputs, settings=settings, seconds=time.perf_counter() - started)


def build_network(config: DeepConfig, inputs: list[tuple[str, str]]) -> tuple[DeepRadiomicsNet, PretrainedReport | None]:
    """The network of ``deep.backbone``/``deep.head``, with ``deep.pretrained`` weights loaded when set."""
    net = build_deep_net(_net_config(config), inputs)
    if not config.pretrained:
        return net, None
    report = load_pretrained(net.backbone, config.pretrained, key_map=config.pretrained_key_map, strict=config.pretrained_strict)
    return net, report


def fine_tune(net: DeepRadiomicsNet, data: DeepInputs, config: DeepConfig, seed: int, logger: Any, source: str) -> DeepTraining:
    """Train ``net`` with its CS head on the training split; keep the best epoch by validation AUC."""
    started = time.perf_counter()
    datamodule = DeepDataModule(
        data.samples,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        augment=asdict(config.augment),
        balanced_sampler=config.imbalance == "sampler",
        seed=seed,
    )
    if not datamodule.by_split["train"] or not datamodule.by_split["val"]:
        raise ValueError(f"manifest {source}: the deep stage needs training and validation patients")
    pos_weight = datamodule.pos_weight() if config.imbalance == "pos_weight" else 1.0
    module = CSClassifier(
        net,
        lr=config.lr,
        weight_decay=config.weight_decay,
        pos_weight=pos_weight,
        max_epochs=config.trainer["max_epochs"],
        warmup_epochs=config.warmup_epochs,
        compile=config.compile and gpu_available(config.trainer),
    )
    checkpoint, last_checkpoint = checkpoint_callbacks(config.checkpoint_dir, "vit3d", monitor="val_auc")
    stopper = EarlyStopping(monitor="val_auc", mode="max", patience=config.patience)
    trainer = make_trainer(
        config.trainer,
        logger,
        [checkpoint, last_checkpoint, stopper],
        default_root_dir=config.checkpoint_dir,
        bf16=config.bf16,
        progress_bar=config.progress_bar,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_resume(config.resume, config.checkpoint_dir))
    seconds = time.perf_counter() - started
    if checkpoint.best_model_path:
        best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(best["state_dict"])
        log.info("best ViT-3D epoch: %s (val AUC %.3f)", checkpoint.best_model_path, float(checkpoint.best_model_score))
    return DeepTraining(net=module.net.cpu().eval(), pos_weight=pos_weight, epochs_run=trainer.current_epoch, seconds=seconds)


def embed_cohort(training: DeepTraining, data: DeepInputs, frame: pd.DataFrame, config: DeepConfig) -> DeepEmbeddings:
    """Embeddings of every patient of ``frame`` with the frozen network, the bundle, the head's AUCs."""
    net = training.net
    embeddings = embed_samples(net, data.samples, batch_size=config.batch_size)
    table = embedding_table(data.samples, embeddings, data.inputs, [str(p) for p in frame[ID]])
    metrics = head_metrics(net, data.samples, config.batch_size)
    metrics.update(
        {
            "n_inputs": float(len(data.samples)),
            "n_features": float(table.shape[1] - 1),
            "pos_weight": training.pos_weight,
            "preprocess_seconds": data.seconds,
            "train_seconds": training.seconds,
            "epochs_run": float(training.epochs_run),
        }
    )
    bundle = DeepBundle(
        deep_cfg=_net_config(config),
        inputs=[list(p) for p in data.inputs],
        state_dict={k: v.detach().cpu() for k, v in net.state_dict().items()},
        input_size=data.settings.input_size,
        margin_mm=data.settings.margin_mm,
        metrics=metrics,
    )
    return DeepEmbeddings(table=table, bundle=bundle, metrics=metrics)


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
