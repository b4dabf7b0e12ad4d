"""Lightning ``Trainer`` construction shared by the segment and deep libraries.

A core module (it imports nothing of cagerisk) so that ``cagerisk.segment`` and ``cagerisk.deep``, which
may not import each other, share one way of seeding, checkpointing and resuming.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar

__all__ = ["checkpoint_callbacks", "gpu_available", "make_trainer", "resolve_resume", "seed_training"]

log = logging.getLogger(__name__)


def seed_training(seed: int, torch_threads: int | None) -> None:
    """Seed Python, numpy and torch (and dataloader workers) and set torch's intra-op threads
    (``None``: torch's own choice). Called before the stage's MLflow run opens, as it always was, so
    that the networks' initial weights do not depend on what opening the run draws."""
    L.seed_everything(seed, workers=True, verbose=False)
    if torch_threads:
        torch.set_num_threads(torch_threads)


def gpu_available(trainer_cfg: Mapping[str, Any]) -> bool:
    """Whether the trainer will run on a CUDA device (accelerator auto/gpu/cuda and one is present)."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    return accelerator in {"auto", "gpu", "cuda"} and torch.cuda.is_available()


def make_trainer(
    trainer_cfg: Mapping[str, Any],
    logger: Any,
    callbacks: Sequence[Callback],
    default_root_dir: str | Path,
    bf16: bool = False,
    progress_bar: bool = True,
) -> L.Trainer:
    """``L.Trainer(**trainer_cfg)`` plus our logger and callbacks.

    ``bf16`` turns on bf16 autocast (``precision="bf16-mixed"``) only on a GPU: CPU bf16 autocast is
    slower than float32 on the machines we run on. ``trainer_cfg`` carries accelerator, devices,
    strategy (``ddp`` to scale out), max_epochs and the like.
    """
    kwargs = dict(trainer_cfg)
    on_gpu = gpu_available(kwargs)
    if bf16 and on_gpu:
        kwargs["precision"] = "bf16-mixed"
    elif bf16:
        log.info("bf16 autocast requested but no GPU: training in float32")
    all_callbacks = list(callbacks)
    if progress_bar:
        all_callbacks.append(RichProgressBar(leave=False))
    return L.Trainer(
        logger=logger,
        callbacks=all_callbacks,
        default_root_dir=str(default_root_dir),
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        **kwargs,
    )


def checkpoint_callbacks(
    dirpath: str | Path, prefix: str, monitor: str, mode: str = "max"
) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """(best by ``monitor``, ``last.ckpt`` after every epoch).

    Lightning 2.6 writes ``save_last`` only when a top-k checkpoint is written in the same step, so
    an epoch that does not improve the monitored metric would leave ``last.ckpt`` behind; a second,
    unmonitored callback keeps it current. Both save once the epoch is complete, so a resumed run
    starts cleanly at the next epoch.
    """
    best = ModelCheckpoint(
        dirpath=str(dirpath),
        filename=f"{prefix}-{{epoch:03d}}",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        save_on_train_epoch_end=True,
    )
    last = ModelCheckpoint(
        dirpath=str(dirpath),
        filename="last",
        monitor=None,
        save_top_k=1,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    return best, last


def resolve_resume(resume: str | None, checkpoint_dir: str | Path) -> str | None:
    """``null`` -> fresh start; ``last`` -> ``checkpoint_dir/last.ckpt`` when it exists; else a path."""
    if resume in (None, "", "none", "null"):
        return None
    if resume == "last":
        last = Path(checkpoint_dir) / "last.ckpt"
        if last.is_file():
            log.info("resuming from %s", last)
            return str(last)
        log.info("no %s yet: starting fresh", last)
        return None
    path = Path(str(resume))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint to resume from {path} does not exist")
    return str(path)
