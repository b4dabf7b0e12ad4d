"""ViT-3D inputs: one preprocessed cube per (patient, sequence, ROI), and the Lightning DataModule.

Each (patient, sequence) volume is read once and cropped for every ROI of that sequence with the
shared chain of ``cagerisk.imaging.transforms`` (the chain serving uses). Preprocessed cubes are
cached on disk per (patient, sequence), keyed by the files' paths, sizes and modification times and
by the chain's parameters, so a rerun after fixing one bad file recomputes that file only. Problems
are collected over the whole cohort and reported together, each naming the patient and the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from rich.progress import Progress
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from cagerisk.cohort.schema import ID, OUTCOME, image_column, is_blank, mask_column
from cagerisk.deep.preprocess import CACHE_VERSION, PreprocessSettings, preprocess_volume  # noqa: F401 (re-exported)
from cagerisk.imaging.transforms import augment_transforms
from cagerisk.segment.manifest import mask_for_features

__all__ = [
    "DeepDataModule",
    "InputDataset",
    "PreprocessError",
    "PreprocessSettings",
    "mask_paths",
    "preprocess_cohort",
    "preprocess_volume",
]

log = logging.getLogger(__name__)


class PreprocessError(ValueError):
    """One or more inputs could not be preprocessed; the message lists every one."""


def mask_paths(frame: pd.DataFrame, sequence: str) -> pd.Series:
    """The mask each patient's ``sequence`` features come from: the one the segment stage chose
    (``{sequence}_mask_source``: predicted or manual) when the manifest is the segment stage's; the
    manual ``{sequence}_mask`` otherwise.
    """
    return mask_for_features(frame, sequence)


def _file_stamp(path: str) -> list[Any]:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def _first(item: Any) -> Any:
    return item


class _VolumeJobs(Dataset):
    """One job per (patient, sequence): returns its cubes, from the cache when it is fresh."""

    def __init__(self, jobs: list[dict[str, Any]], settings: PreprocessSettings, cache_dir: Path | None) -> None:
        self.jobs, self.settings, self.cache_dir = jobs, settings, cache_dir

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        job = self.jobs[index]
        try:
            cache = self._cache_path(job)
            if cache is not None and cache.is_file():
                return {**job, "cubes": torch.load(cache, weights_only=True), "error": None}
            cubes = preprocess_volume(
                job["image"],
                job["mask"],
                job["fused_levels"],
                job["sequence"],
                job["rois"],
                self.settings,
                patient_id=job[ID],
            )
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
                torch.save(cubes, tmp)
                tmp.replace(cache)
            return {**job, "cubes": cubes, "error": None}
        except Exception as exc:  # collected and reported with every other failure
            return {**job, "cubes": None, "error": f"{type(exc).__name__}: {exc}"}

    def _cache_path(self, job: dict[str, Any]) -> Path | None:
        if self.cache_dir is None:
            return None
        stamp = json.dumps(
            [
                self.settings.key(),
                job["sequence"],
                sorted(job["rois"]),
                job["fused_levels"],
                _file_stamp(job["image"]),
                _file_stamp(job["mask"]),
            ]
        )
        digest = hashlib.sha256(stamp.encode()).hexdigest()[:20]
        return self.cache_dir / f"{job[ID]}_{job['sequence']}_{digest}.pt"


def preprocess_cohort(
    frame: pd.DataFrame,
    inputs: Sequence[tuple[str, str]],
    settings: PreprocessSettings,
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
) -> list[dict[str, Any]]:
    """Every (patient, sequence, ROI) input of the manifest as a sample dict.

    Samples: ``image`` (cube), ``input_index`` (position in ``inputs``), ``label`` (cs, NaN when
    unknown), ``patient_id``, ``split``, ``sequence``, ``roi``. A patient without an image or mask
    for a sequence is skipped for that sequence (its features will be NaN) with a warning; a file
    that cannot be read or an empty ROI is an error, raised after every job ran so that one message
    lists every problem.
    """
    rois_by_sequence: dict[str, list[str]] = {}
    for seq, roi in inputs:
        rois_by_sequence.setdefault(seq, []).append(roi)
    jobs, skipped = [], []
    for seq, rois in rois_by_sequence.items():
        if image_column(seq) not in frame.columns or mask_column(seq) not in frame.columns:
            raise PreprocessError(f"manifest has no {image_column(seq)}/{mask_column(seq)} column for input {seq}")
        masks = mask_paths(frame, seq)
        for (_, row), mask in zip(frame.iterrows(), masks, strict=True):
            if not (not is_blank(row[image_column(seq)]) and not is_blank(mask)):
                skipped.append(f"{row[ID]}/{seq}")
                continue
            jobs.append(
                {
                    ID: str(row[ID]),
                    "split": row.get("split"),
                    "label": row.get(OUTCOME),
                    "sequence": seq,
                    "rois": rois,
                    "image": str(row[image_column(seq)]),
                    "mask": str(mask),
                    "fused_levels": str(row["fused_levels"]),
                }
            )
    if skipped:
        log.warning("no image or mask, input skipped (features NaN): %s", ", ".join(skipped))
    loader = DataLoader(
        _VolumeJobs(jobs, settings, Path(cache_dir) if cache_dir else None),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_first,
    )
    index = {pair: i for i, pair in enumerate(inputs)}
    samples: list[dict[str, Any]] = []
    errors: list[str] = []
    with Progress(transient=True) as progress:
        task = progress.add_task("preprocessing ViT inputs", total=len(jobs))
        for result in loader:
            progress.advance(task)
            if result["error"]:
                errors.append(f"patient {result[ID]}, {result['sequence']} ({result['image']}): {result['error']}")
                continue
            for roi, cube in result["cubes"].items():
                label = result["label"]
                samples.append(
                    {
                        "image": cube,
                        "input_index": index[(result["sequence"], roi)],
                        "label": float(label) if not is_blank(label) else float("nan"),
                        ID: result[ID],
                        "split": result["split"],
                        "sequence": result["sequence"],
                        "roi": roi,
                    }
                )
    if errors:
        raise PreprocessError(
            f"{len(errors)} of {len(jobs)} volume(s) could not be preprocessed (the others are cached):\n  " + "\n  ".join(errors)
        )
    log.info("preprocessed %d ViT inputs from %d volumes", len(samples), len(jobs))
    return samples


class InputDataset(Dataset):
    """Preprocessed samples, optionally augmented (training)."""

    def __init__(self, samples: Sequence[dict[str, Any]], augment: Any | None = None) -> None:
        self.samples = list(samples)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        image = s["image"]
        if self.augment is not None:
            image = torch.as_tensor(self.augment({"image": image.clone()})["image"]).float()
        return {"image": image, "input_index": s["input_index"], "label": s["label"], ID: s[ID]}


class DeepDataModule(L.LightningDataModule):
    """Train / val / test loaders over preprocessed samples.

    Class imbalance: ``pos_weight`` in the loss by default; ``balanced_sampler=True`` draws the
    training samples with inverse class-frequency weights instead.
    """

    def __init__(
        self,
        samples: Iterable[dict[str, Any]],
        batch_size: int = 8,
        num_workers: int = 0,
        augment: Mapping[str, Any] | None = None,
        balanced_sampler: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        by_split: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
        for s in samples:
            if s.get("split") in by_split and np.isfinite(s["label"]):
                by_split[s["split"]].append(s)
        self.by_split = by_split
        self.batch_size, self.num_workers = batch_size, num_workers
        self.augment_cfg = dict(augment or {})
        self.balanced_sampler = balanced_sampler
        self.seed = seed

    def pos_weight(self) -> float:
        """n_negative / n_positive among the training samples (1 when a class is missing)."""
        labels = np.array([s["label"] for s in self.by_split["train"]])
        pos, neg = float((labels == 1).sum()), float((labels == 0).sum())
        return neg / pos if pos > 0 and neg > 0 else 1.0

    def train_dataloader(self) -> DataLoader:
        options = {k: v for k, v in self.augment_cfg.items() if k != "enabled"}
        augment = augment_transforms(**options) if self.augment_cfg.get("enabled", True) else None
        if augment is not None:
            augment.set_random_state(seed=self.seed)
        data = InputDataset(self.by_split["train"], augment)
        generator = torch.Generator().manual_seed(self.seed)
        if self.balanced_sampler:
            labels = np.array([s["label"] for s in self.by_split["train"]])
            freq = {c: max((labels == c).mean(), 1e-6) for c in (0.0, 1.0)}
            weights = torch.tensor([1.0 / freq[float(v)] for v in labels], dtype=torch.double)
            sampler = WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)
            return DataLoader(data, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers)
        return DataLoader(
            data,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            generator=generator,
            drop_last=len(data) > self.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(InputDataset(self.by_split["val"]), batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(InputDataset(self.by_split["test"]), batch_size=self.batch_size, num_workers=self.num_workers)
