"""Schemas of the pipeline-stage config groups: ``paths``, ``cohort``, ``compute``, ``segment``, ``radiomics``,
``deep``, ``reproducibility``.

The values live in ``conf/<group>/*.yaml`` (their one home); these dataclasses only type them. A field has
a default only where its key is genuinely optional and absent from some preset (e.g. the dask settings
of ``compute=serial``, which runs no cluster). Nested blocks that are passed on whole to a third-party
constructor (``segment.net`` to MONAI through ``hydra.utils.instantiate``, the Lightning ``trainer``
arguments, the ViT ``backbone``) stay mappings: their keys are that library's, not ours.
Use with ``cagerisk.config.typed(cfg.radiomics, RadiomicsConfig, "radiomics")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from cagerisk.config import ConfigError, typed

__all__ = [
    "COHORT_SOURCES",
    "CohortSplitConfig",
    "ComputeConfig",
    "DeepAugmentConfig",
    "DeepConfig",
    "DeepHeadConfig",
    "ManifestCohortConfig",
    "PathsConfig",
    "RadiomicsConfig",
    "ReproducibilityConfig",
    "SegmentConfig",
    "SyntheticCohortConfig",
    "cohort_config",
]


def _choice(group: str, key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"config {group}.{key}: {value!r}; expected one of {list(allowed)}")


@dataclass
class PathsConfig:
    """Where every output of a run lies (``conf/paths``)."""

    data: str
    cohort: str
    segment: str
    features: str
    models: str
    reports: str
    cache: str


@dataclass
class CohortSplitConfig:
    """The keys every cohort source has: its name and how its patients are split."""

    source: str
    name: str
    seed: int
    split: dict[str, float]
    split_counts: dict[str, int] | None
    stratify_by_center: bool


@dataclass
class SyntheticCohortConfig(CohortSplitConfig):
    """``cohort.source: synthetic``: the embedded multi-center generator."""

    n_patients: int
    voxel_scale: float
    second_reader_fraction: float
    manifest: str | None
    n_jobs: int | None  # worker processes for rendering; None = one per core


@dataclass
class ManifestCohortConfig(CohortSplitConfig):
    """``cohort.source: manifest``: a real cohort's manifest, validated."""

    manifest: str
    check_images: bool
    # where each sequence's masks come from: "cagerisk" (own label values), "totalsegmentator", a
    # TotalSegmentator task, or a mapping {sequence: one of those} (cohort.totalsegmentator.label_tasks)
    labels: Any = "cagerisk"


COHORT_SOURCES: dict[str, type] = {"synthetic": SyntheticCohortConfig, "manifest": ManifestCohortConfig}


def cohort_config(node: DictConfig | dict[str, Any]) -> SyntheticCohortConfig | ManifestCohortConfig:
    """The ``cohort`` group as the schema of its ``source`` (the two sources take different keys)."""
    source = node.get("source")
    _choice("cohort", "source", source, tuple(COHORT_SOURCES))
    return typed(node, COHORT_SOURCES[source], "cohort")


@dataclass
class ComputeConfig:
    """Where radiomics extraction runs (``conf/compute``): a dask cluster, or ``synchronous`` in-process."""

    scheduler: str | None  # None: a local cluster; "synchronous": no dask; else a scheduler address
    n_workers: int | None
    threads_per_worker: int
    # The local cluster's settings; absent from compute=serial, which starts none.
    start_method: str | None = None
    dashboard_address: str | None = None
    worker_env: dict[str, Any] | None = None  # None: dask's own worker environment
    dask: dict[str, Any] | None = None
    # How long to wait for a scheduler at an address (compute.scheduler=tcp://...); absent from compute=serial.
    connect_timeout: str | None = None


@dataclass
class SegmentConfig:
    """The per-sequence segmentation U-Nets (``conf/segment``): shared keys, ``sequences`` overrides them."""

    manifest: str
    model_path: str  # ``{sequence}`` is replaced by the sequence name
    checkpoint_dir: str
    mode: str
    masks: str
    spacing_mm: list[float]
    hu_window: list[float] | None  # None: MRI, scaled by each image's percentiles
    roi_size: list[int]
    samples_per_volume: int
    pos_fraction: float
    batch_size: int
    num_workers: int
    lr: float
    weight_decay: float
    sw_batch_size: int
    overlap: float
    min_component_mm3: float
    torch_threads: int | None
    progress_bar: bool
    resume: str | None
    net: dict[str, Any]  # MONAI UNet arguments (a `_target_` node)
    trainer: dict[str, Any]  # lightning.Trainer arguments
    flip_lr: bool = True
    # A U-Net whose validation Dice is below this feeds no feature and is not served (manual masks instead).
    min_val_dice: float = 0.0
    sequences: dict[str, Any] = field(default_factory=dict)  # sequence -> overrides of the keys above

    def __post_init__(self) -> None:
        _choice("segment", "mode", self.mode, ("bottom_up", "binary", "multiclass"))
        _choice("segment", "masks", self.masks, ("predicted", "manual"))


@dataclass
class RadiomicsConfig:
    """PyRadiomics extraction (``conf/radiomics``)."""

    params_dir: str
    params: dict[str, str]
    overrides: dict[str, Any]
    sequences: list[str] | None
    reader: str  # "1", "2" (second reader) or "pred"
    manifest: str | None
    output: str
    failures: str
    summary: str
    cache_dir: str
    on_failure: str
    check_geometry: bool
    progress: bool

    def __post_init__(self) -> None:
        _choice("radiomics", "on_failure", self.on_failure, ("error", "nan"))
        _choice("radiomics", "reader", self.reader, ("1", "2", "pred"))

    def params_mapping(self) -> dict[str, Any]:
        """What ``radiomics.params_by_sequence`` reads: parameter files, overrides, their folder."""
        return {"params": dict(self.params), "overrides": dict(self.overrides), "params_dir": self.params_dir}


@dataclass
class DeepHeadConfig:
    embed_dim: int
    dropout: float


@dataclass
class DeepAugmentConfig:
    enabled: bool
    flip_prob: float
    rotate_deg: float
    noise_std: float


@dataclass
class DeepCrossfitConfig:
    """Cross-fitting of the ViT-3D over the training split (``deep.crossfit``)."""

    folds: int
    inner_fraction: float  # share of each fold model's training patients that chooses its epoch
    monitor: str  # what chooses the epoch on the inner split: val_loss (min) or val_auc (max)

    def __post_init__(self) -> None:
        _choice("deep.crossfit", "monitor", self.monitor, ("val_loss", "val_auc"))
        if self.folds < 2:
            raise ConfigError(f"config deep.crossfit.folds: {self.folds}; at least 2")
        if not 0.0 < self.inner_fraction < 0.5:
            raise ConfigError(f"config deep.crossfit.inner_fraction: {self.inner_fraction}; expected in (0, 0.5)")


@dataclass
class DeepConfig:
    """The ViT-3D deep-radiomics stage (``conf/deep``)."""

    manifest: str
    model_path: str
    checkpoint_dir: str
    cache_dir: str | None
    inputs: list[str] | None
    margin_mm: float
    backbone: dict[str, Any]  # MONAI ViT arguments (a `_target_` node)
    head: DeepHeadConfig
    lr: float
    weight_decay: float
    warmup_epochs: int
    batch_size: int
    num_workers: int
    preprocess_workers: int
    imbalance: str
    augment: DeepAugmentConfig
    patience: int
    crossfit: DeepCrossfitConfig
    bf16: bool
    compile: bool
    torch_threads: int | None
    progress_bar: bool
    pretrained: str | None
    pretrained_key_map: list[list[str]] | None
    pretrained_strict: bool
    resume: str | None
    trainer: dict[str, Any]  # lightning.Trainer arguments

    def __post_init__(self) -> None:
        _choice("deep", "imbalance", self.imbalance, ("pos_weight", "sampler"))


@dataclass
class ReproducibilityConfig:
    """Second-reader ICCs and mask agreement (``conf/reproducibility``)."""

    manifest: str | None
    reader1_source: str
    splits: list[str] | None
    alpha: float
    min_patients: int
    threshold: float
    on_failure: str
    progress: bool
    output: str
    reader2_output: str
    report_dir: str

    def __post_init__(self) -> None:
        _choice("reproducibility", "on_failure", self.on_failure, ("error", "skip"))
        _choice("reproducibility", "reader1_source", self.reader1_source, ("table", "extract"))
