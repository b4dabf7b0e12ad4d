"""Cross-fitted fine-tuning of the ViT-3D over the training split and the embeddings of every patient by
every fold network (no output files, no MLflow).

Steps, in the order the deep stage runs them: ``preprocess_inputs`` (ROI crops, cached under
``deep.cache_dir``) -> ``crossfit_plan`` (K stratified folds of the training patients, each with an inner
early-stopping split) -> per fold, ``build_network`` (backbone, optional pretrained weights; seeded per
fold) and ``fine_tune`` (Lightning, the caller's logger; checkpoints under ``deep.checkpoint_dir/fold{j}``)
-> ``embed_cohort`` (the long table: every patient by every fold network, the bundle serving loads, the
heads' AUCs).

No leakage: fold network j is fitted on the training patients outside fold j, and its epoch is chosen on
an inner split of those (never on the validation split). A training patient's DL-sign later comes from
the fold model that held it out (``label_seen`` false in the table). Validation and test patients are only
embedded; the test split's outcome is never read here (only ``evaluate`` scores it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping
from sklearn.model_selection import StratifiedKFold, train_test_split

from cagerisk.cohort.schema import ID, OUTCOME, sequence_rois
from cagerisk.config.pipeline import DeepConfig, DeepCrossfitConfig
from cagerisk.deep.data import DeepDataModule, PreprocessSettings, preprocess_cohort
from cagerisk.deep.export import DeepBundle, embed_samples, embedding_table
from cagerisk.deep.lightning_module import CSClassifier, patient_auc
from cagerisk.deep.model import DeepRadiomicsNet, build_deep_net
from cagerisk.deep.pretrained import PretrainedReport, load_pretrained
from cagerisk.deep.table import FOLD_COLUMN, SEEN_COLUMN
from cagerisk.trainer import checkpoint_callbacks, gpu_available, make_trainer, resolve_resume

__all__ = [
    "DeepInputs",
    "DeepTraining",
    "DeepEmbeddings",
    "FoldPlan",
    "build_network",
    "crossfit_head_metrics",
    "crossfit_plan",
    "deep_inputs",
    "embed_cohort",
    "fine_tune",
    "fold_samples",
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
class FoldPlan:
    """Who fold model ``fold`` learns from: ``fit`` (weights) and ``stop`` (epoch choice); ``held_out``: its fold."""

    fold: int
    fit: list[str]
    stop: list[str]
    held_out: list[str]

    @property
    def trained_on(self) -> list[str]:
        """Every patient whose label this fold model saw."""
        return sorted([*self.fit, *self.stop])


@dataclass
class DeepTraining:
    net: DeepRadiomicsNet  # the best epoch's weights, on the CPU, in evaluation mode
    pos_weight: float
    epochs_run: int
    seconds: float
    plan: FoldPlan
    best_epoch: int = -1


@dataclass
class DeepEmbeddings:
    table: pd.DataFrame  # long: patient_id, fold_model, label_seen + {sequence}_{roi}_dl_{k}
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


def crossfit_plan(frame: pd.DataFrame, crossfit: DeepCrossfitConfig, seed: int, source: str) -> list[FoldPlan]:
    """Stratified, seeded folds of the manifest's labelled training patients, each with its inner split.

    Fold model j is trained on the other folds: ``fit`` patients train the weights, the ``stop`` patients
    (``crossfit.inner_fraction`` of them, stratified) choose the epoch (early stopping and checkpoint);
    fold j's own patients are ``held_out``. Validation and test patients are never in a plan.
    """
    labelled = frame[(frame["split"] == "train") & frame[OUTCOME].notna()] if OUTCOME in frame.columns else frame.iloc[:0]
    ids = labelled[ID].astype(str).to_numpy()
    y = labelled[OUTCOME].to_numpy(dtype=int) if len(labelled) else np.zeros(0, dtype=int)
    k = int(crossfit.folds)
    n_minority = int(min((y == 1).sum(), (y == 0).sum())) if len(y) else 0
    if k < 2:
        raise ValueError(f"deep.crossfit.folds must be at least 2, got {k}")
    # Each fold's inner split also needs both outcomes: about 2 * k / (1 - inner_fraction) of the minority.
    if n_minority < 2 * k:
        raise ValueError(
            f"manifest {source}: {n_minority} training patient(s) of the minority outcome; deep.crossfit.folds={k} "
            f"needs at least {2 * k} (lower deep.crossfit.folds)"
        )
    plans = []
    outer = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (rest, held) in enumerate(outer.split(ids, y)):
        # At least one patient of each outcome chooses the epoch, however small the fold.
        n_stop = max(2, int(round(crossfit.inner_fraction * len(rest))))
        fit, stop = train_test_split(rest, test_size=n_stop, stratify=y[rest], random_state=seed + fold, shuffle=True)
        plans.append(
            FoldPlan(fold, fit=sorted(ids[fit].tolist()), stop=sorted(ids[stop].tolist()), held_out=sorted(ids[held].tolist()))
        )
    return plans


def fold_samples(samples: list[dict[str, Any]], plan: FoldPlan) -> list[dict[str, Any]]:
    """The samples fold model ``plan.fold`` learns from, relabelled for the DataModule: ``fit`` patients as
    its ``train`` split, ``stop`` patients as its ``val`` split (epoch choice); nobody else."""
    role = {**dict.fromkeys(plan.fit, "train"), **dict.fromkeys(plan.stop, "val")}
    return [{**s, "split": role[str(s[ID])]} for s in samples if str(s[ID]) in role]


def fine_tune(
    net: DeepRadiomicsNet, data: DeepInputs, config: DeepConfig, seed: int, logger: Any, source: str, plan: FoldPlan
) -> DeepTraining:
    """Train ``net`` with its CS head on ``plan.fit``; keep the best epoch on ``plan.stop`` by
    ``deep.crossfit.monitor`` (the inner split's loss or patient-level AUC).

    Checkpoints go to ``deep.checkpoint_dir/fold{j}`` (``deep.resume=last`` continues each fold from its own
    ``last.ckpt``); ``logger`` (one per fold: the stage gives each the key prefix ``fold{j}``) gets the epoch
    metrics.
    """
    started = time.perf_counter()
    datamodule = DeepDataModule(
        fold_samples(data.samples, plan),
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        augment=asdict(config.augment),
        balanced_sampler=config.imbalance == "sampler",
        seed=seed + plan.fold,
    )
    if not datamodule.by_split["train"] or not datamodule.by_split["val"]:
        raise ValueError(f"manifest {source}: fold {plan.fold} has no training or early-stopping inputs")
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
    checkpoint_dir = fold_checkpoint_dir(config, plan.fold)
    monitor = config.crossfit.monitor
    mode = "max" if monitor == "val_auc" else "min"
    checkpoint, last_checkpoint = checkpoint_callbacks(checkpoint_dir, "vit3d", monitor=monitor, mode=mode)
    stopper = EarlyStopping(monitor=monitor, mode=mode, patience=config.patience)
    trainer = make_trainer(
        config.trainer,
        logger,
        [checkpoint, last_checkpoint, stopper],
        default_root_dir=checkpoint_dir,
        bf16=config.bf16,
        progress_bar=config.progress_bar,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_resume(config.resume, checkpoint_dir))
    seconds = time.perf_counter() - started
    best_epoch = trainer.current_epoch
    if checkpoint.best_model_path:
        best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(best["state_dict"])
        best_epoch = int(best.get("epoch", best_epoch))
        log.info(
            "fold %d: best ViT-3D epoch %s (inner-split %s %.3f, %d patients)",
            plan.fold,
            checkpoint.best_model_path,
            monitor,
            float(checkpoint.best_model_score),
            len(plan.stop),
        )
    return DeepTraining(
        net=module.net.cpu().eval(),
        pos_weight=pos_weight,
        epochs_run=trainer.current_epoch,
        seconds=seconds,
        plan=plan,
        best_epoch=best_epoch,
    )


def fold_checkpoint_dir(config: DeepConfig, fold: int) -> Path:
    return Path(config.checkpoint_dir) / f"fold{fold}"


def embed_cohort(trainings: list[DeepTraining], data: DeepInputs, frame: pd.DataFrame, config: DeepConfig) -> DeepEmbeddings:
    """Every patient of ``frame`` embedded by every fold network (the long table), the bundle, the heads' AUCs."""
    patients = [str(p) for p in frame[ID]]
    parts, head_logits = [], []
    for training in trainings:
        net, plan = training.net, training.plan
        part = embedding_table(
            data.samples, embed_samples(net, data.samples, batch_size=config.batch_size), data.inputs, patients
        )
        part.insert(1, FOLD_COLUMN, plan.fold)
        part.insert(2, SEEN_COLUMN, part[ID].isin(set(plan.trained_on)))
        parts.append(part)
        head_logits.append(_head_logits(net, data.samples, config.batch_size))
    table = pd.concat(parts, ignore_index=True)
    metrics = crossfit_head_metrics(data.samples, [t.plan for t in trainings], head_logits)
    metrics.update(
        {
            "n_inputs": float(len(data.samples)),
            "n_features": float(table.shape[1] - 3),
            "n_folds": float(len(trainings)),
            "preprocess_seconds": data.seconds,
            "train_seconds": float(sum(t.seconds for t in trainings)),
            "epochs_run": float(sum(t.epochs_run for t in trainings)),
        }
    )
    for t in trainings:
        metrics[f"fold{t.plan.fold}_epochs_run"] = float(t.epochs_run)
        metrics[f"fold{t.plan.fold}_best_epoch"] = float(t.best_epoch)
        metrics[f"fold{t.plan.fold}_pos_weight"] = float(t.pos_weight)
    bundle = DeepBundle(
        deep_cfg=_net_config(config),
        inputs=[list(p) for p in data.inputs],
        state_dicts=[{k: v.detach().cpu() for k, v in t.net.state_dict().items()} for t in trainings],
        input_size=data.settings.input_size,
        margin_mm=data.settings.margin_mm,
        trained_on=[list(t.plan.trained_on) for t in trainings],
        metrics=metrics,
    )
    return DeepEmbeddings(table=table, bundle=bundle, metrics=metrics)


def _head_logits(net: Any, samples: list[dict[str, Any]], batch_size: int) -> np.ndarray:
    with torch.no_grad():
        embeddings = torch.as_tensor(embed_samples(net, samples, batch_size))
        return net.classifier(embeddings).squeeze(-1).numpy()


def crossfit_head_metrics(samples: list[dict[str, Any]], plans: list[FoldPlan], logits: list[np.ndarray]) -> dict[str, float]:
    """AUCs of the fold networks' own CS heads (patient level = mean logit over a patient's inputs).

    ``oof_auc``: each training patient scored by the fold network that held it out (the honest training
    figure); ``fold{j}_stop_auc``: fold j's early-stopping patients (what chose its epoch, optimistic);
    ``val_auc``: validation patients scored by the mean of the K heads' logits. Never the test split: only
    ``evaluate`` reads its outcomes.
    """
    ids = [str(s[ID]) for s in samples]
    labels = np.array([s["label"] for s in samples], dtype=float)
    metrics: dict[str, float] = {}
    held_rows = np.zeros(len(samples), dtype=bool)
    held_logit = np.full(len(samples), np.nan)
    for plan, fold_logits in zip(plans, logits, strict=True):
        held = np.isin(ids, plan.held_out)
        held_rows |= held
        held_logit[held] = fold_logits[held]
        stop = np.isin(ids, plan.stop)
        if stop.any():
            metrics[f"fold{plan.fold}_stop_auc"] = patient_auc(list(np.array(ids)[stop]), labels[stop], fold_logits[stop])[1]
    if held_rows.any():
        rows = held_rows & np.isfinite(labels)
        metrics["oof_auc_input"], metrics["oof_auc"] = patient_auc(list(np.array(ids)[rows]), labels[rows], held_logit[rows])
    val = np.array([s["split"] == "val" for s in samples]) & np.isfinite(labels)
    if val.any():
        mean_logit = np.mean([fold_logits[val] for fold_logits in logits], axis=0)
        metrics["val_auc_input"], metrics["val_auc"] = patient_auc(list(np.array(ids)[val]), labels[val], mean_logit)
    return {k: float(v) for k, v in metrics.items()}
