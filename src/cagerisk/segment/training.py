"""Lightning training of one sequence's U-Net on the training split's volumes and manual masks."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from monai.data import CacheDataset, DataLoader, list_data_collate
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import compute_dice
from monai.transforms import (
    Compose,
    MapTransform,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)
from torch import nn

from cagerisk.segment.model import VERTEBRA_LABELS, class_labels
from cagerisk.segment.transforms import segmentation_transforms

__all__ = ["SegmentationDataModule", "VertebraSegmenter", "TargetClassesd", "n_classes"]

log = logging.getLogger(__name__)


def n_classes(mode: str, labels: Sequence[int] = VERTEBRA_LABELS) -> int:
    """Output channels for one structure's ``labels`` (background included)."""
    return len(class_labels(mode, [labels])) + 1


class TargetClassesd(MapTransform):
    """Label map -> training target: class ``i + 1`` where the value is one of ``classes[i]``, else 0."""

    def __init__(self, keys: Sequence[str], classes: Sequence[Sequence[int]]) -> None:
        super().__init__(keys)
        self.classes = [[int(v) for v in c] for c in classes]

    def __call__(self, data: Mapping[Any, Any]) -> dict[Any, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            values = torch.round(torch.as_tensor(mask)).to(torch.int64)
            target = torch.zeros_like(values)
            for index, members in enumerate(self.classes, start=1):
                target[torch.isin(values, torch.tensor(members, dtype=torch.int64))] = index
            out = target.to(torch.float32)
            d[key] = mask.__class__(out, meta=mask.meta) if hasattr(mask, "meta") else out
        return d


class SegmentationDataModule(L.LightningDataModule):
    """Volumes resampled once (cached in memory), random foreground-biased patches for training."""

    def __init__(
        self,
        train_items: list[dict[str, Any]],
        val_items: list[dict[str, Any]],
        spacing_mm: Sequence[float],
        hu_window: Sequence[float] | None,
        roi_size: Sequence[int],
        classes: Sequence[Sequence[int]],
        samples_per_volume: int = 2,
        pos_fraction: float = 0.8,
        batch_size: int = 2,
        num_workers: int = 0,
        seed: int = 0,
        flip_lr: bool = True,
    ) -> None:
        super().__init__()
        self.train_items, self.val_items = train_items, val_items
        self.roi_size = [int(s) for s in roi_size]
        values = [v for c in classes for v in c]
        base = segmentation_transforms(spacing_mm, hu_window, label_values=values)
        self.base = Compose([*base.transforms, TargetClassesd(keys=["mask"], classes=classes)])
        # A left-right flip turns a left muscle into a right one: only where labels are not lateral.
        flip = [RandFlipd(keys=["image", "mask"], prob=0.5, spatial_axis=0)] if flip_lr else []
        self.augment = Compose(
            [
                SpatialPadd(keys=["image", "mask"], spatial_size=self.roi_size),
                RandCropByPosNegLabeld(
                    keys=["image", "mask"],
                    label_key="mask",
                    spatial_size=self.roi_size,
                    pos=pos_fraction,
                    neg=1.0 - pos_fraction,
                    num_samples=samples_per_volume,
                ),
                *flip,
                RandScaleIntensityd(keys=["image"], factors=0.1, prob=0.5),
                RandShiftIntensityd(keys=["image"], offsets=0.05, prob=0.5),
            ]
        )
        self.augment.set_random_state(seed=seed)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.train_ds: CacheDataset | None = None
        self.val_ds: CacheDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_ds is None:
            workers = max(self.num_workers, 1)
            self.train_ds = CacheDataset(
                self.train_items,
                Compose([*self.base.transforms, *self.augment.transforms]),
                cache_rate=1.0,
                num_workers=workers,
                progress=False,
            )
            self.val_ds = CacheDataset(self.val_items, self.base, cache_rate=1.0, num_workers=workers, progress=False)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_ds,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            collate_fn=list_data_collate,
        )

    def val_dataloader(self) -> DataLoader:
        # Whole volumes of different sizes: one per batch, sliding-window inference inside.
        return DataLoader(self.val_ds, batch_size=1, num_workers=self.num_workers)


class VertebraSegmenter(L.LightningModule):  # any sequence's U-Net; the name predates MRI
    """U-Net trained with Dice + cross-entropy; validated by sliding-window Dice on whole volumes."""

    def __init__(
        self,
        net: nn.Module,
        n_classes: int,
        roi_size: Sequence[int],
        lr: float = 3e-3,
        weight_decay: float = 1e-5,
        max_epochs: int = 10,
        sw_batch_size: int = 2,
        overlap: float = 0.25,
    ) -> None:
        super().__init__()
        self.net = net
        self.n_classes = n_classes
        self.roi_size = [int(s) for s in roi_size]
        self.lr, self.weight_decay, self.max_epochs = lr, weight_decay, max_epochs
        self.sw_batch_size, self.overlap = sw_batch_size, overlap
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self._val_dice: list[torch.Tensor] = []

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self.net(batch["image"]), batch["mask"])
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = sliding_window_inference(
            batch["image"], self.roi_size, self.sw_batch_size, self.net, overlap=self.overlap, mode="gaussian"
        )
        pred = logits.argmax(dim=1, keepdim=True)
        dice = compute_dice(pred, batch["mask"].long(), include_background=False, num_classes=self.n_classes)
        self._val_dice.append(dice.detach().cpu())
        self.log("val_loss", self.loss(logits, batch["mask"]), on_epoch=True, batch_size=1)

    def on_validation_epoch_end(self) -> None:
        if not self._val_dice:
            return
        dice = torch.cat(self._val_dice).numpy()
        self._val_dice.clear()
        mean = float(np.nanmean(dice)) if np.isfinite(dice).any() else 0.0
        self.log("val_dice", mean, prog_bar=True)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(self.max_epochs, 1))
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
