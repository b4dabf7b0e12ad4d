"""LightningModule of the ViT-3D cage-subsidence classifier."""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from cagerisk.cohort.schema import ID
from cagerisk.deep.model import DeepRadiomicsNet

__all__ = ["CSClassifier", "patient_auc"]

log = logging.getLogger(__name__)


def patient_auc(patient_ids: list[str], labels: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    """(AUC over inputs, AUC over patients with each patient's mean logit); NaN with one class only."""
    frame = pd.DataFrame({"patient": patient_ids, "label": labels, "logit": logits})
    per_patient = frame.groupby("patient").agg(label=("label", "first"), logit=("logit", "mean"))

    def auc(y: np.ndarray, s: np.ndarray) -> float:
        return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan")

    return auc(frame["label"].to_numpy(), frame["logit"].to_numpy()), auc(
        per_patient["label"].to_numpy(), per_patient["logit"].to_numpy()
    )


class CSClassifier(L.LightningModule):
    """Binary CS head on the shared ViT-3D; selects epochs by validation AUC over patients.

    Args:
        net: the network (backbone + input embedding + head).
        lr, weight_decay: AdamW; the learning rate warms up linearly for ``warmup_epochs`` and then
            follows a cosine to 0 at ``max_epochs``.
        pos_weight: weight of positive samples in the BCE loss (n_neg / n_pos on the training split).
        compile: ``torch.compile`` the network's forward (GPU runs; set by the stage).
    """

    def __init__(
        self,
        net: DeepRadiomicsNet,
        lr: float = 2e-5,
        weight_decay: float = 0.05,
        pos_weight: float = 1.0,
        max_epochs: int = 10,
        warmup_epochs: int = 1,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.lr, self.weight_decay = lr, weight_decay
        self.max_epochs, self.warmup_epochs = max_epochs, warmup_epochs
        self.register_buffer("pos_weight", torch.tensor([float(pos_weight)]))
        self.compile_net = compile
        self._forward = net.forward
        self._outputs: dict[str, list[Any]] = {"val": [], "test": []}

    def setup(self, stage: str) -> None:
        if self.compile_net:
            # Compile the bound forward, not the module: the state dict keeps its plain key names.
            self._forward = torch.compile(self.net.forward)

    def forward(self, image: torch.Tensor, input_index: torch.Tensor) -> torch.Tensor:
        return self._forward(image, input_index)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(
            logits.float(), labels.float(), pos_weight=self.pos_weight.to(logits.device)
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"], batch["input_index"])
        loss = self._loss(logits, batch["label"])
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(logits))
        return loss

    def _eval_step(self, batch: dict[str, Any], split: str) -> None:
        logits = self(batch["image"], batch["input_index"])
        self.log(f"{split}_loss", self._loss(logits, batch["label"]), on_epoch=True, batch_size=len(logits))
        self._outputs[split].append(
            (list(batch[ID]), batch["label"].detach().float().cpu().numpy(), logits.detach().float().cpu().numpy())
        )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_epoch_end(self, split: str) -> None:
        outputs = self._outputs[split]
        if not outputs:
            return
        ids = [pid for part in outputs for pid in part[0]]
        labels = np.concatenate([part[1] for part in outputs])
        logits = np.concatenate([part[2] for part in outputs])
        outputs.clear()
        input_auc, auc = patient_auc(ids, labels, logits)
        if math.isnan(auc):
            log.warning("%s split has one outcome class only: AUC undefined, logged as 0.5", split)
            auc = input_auc = 0.5
        # `val_auc` (patient level) drives early stopping and checkpoint selection.
        self.log(f"{split}_auc", auc, prog_bar=True)
        self.log(f"{split}_auc_input", input_auc)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self) -> Any:
        decay, no_decay = [], []
        for name, param in self.net.named_parameters():
            # Norms, biases, embeddings: no weight decay (the usual ViT recipe).
            (no_decay if param.ndim < 2 or "embedding" in name else decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr,
        )
        warmup, total = max(self.warmup_epochs, 0), max(self.max_epochs, 1)

        def factor(epoch: int) -> float:
            if epoch < warmup:
                return (epoch + 1) / (warmup + 1)
            progress = (epoch - warmup) / max(total - warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
