"""Schemas of the config groups the model stages read: ``sweep``, ``selection``, ``classifier``,
``evaluation``, ``tracking`` and fit-table's ``fit_table``.

The values live in ``conf/<group>/*.yaml`` (their one home); these dataclasses only type them, so no
field has a default except keys that are genuinely optional and absent from some YAML (noted at the
field). Turn a group into its dataclass with ``cagerisk.config.typed(cfg.sweep, SweepConfig, "sweep")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from cagerisk.config import typed

__all__ = [
    "ClassifierConfig",
    "ClinicalSelectionConfig",
    "EvaluationConfig",
    "FitTableConfig",
    "IccSelectionConfig",
    "ModelConfig",
    "RegistryConfig",
    "GateConfig",
    "SelectionConfig",
    "SweepConfig",
    "TableInputConfig",
    "TrackingConfig",
    "model_config",
    "run_seed",
]


@dataclass
class SweepConfig:
    """``conf/sweep/*.yaml``: how the Optuna searches of the signatures, clinical and combined models run."""

    storage: str | None
    study_name: str
    n_trials: int | None
    timeout: float | None
    cv_folds: int
    cv_repeats: int
    worker: int
    fit_best: bool
    pruner: str | None
    pruner_startup_trials: int
    sampler_startup_trials: int
    sqlite_timeout: float
    # classifiers per target (rad, dl, clinical, combined); a null list means classifier.include
    include: dict[str, list[str] | None]
    # selection steps per signature target (rad, dl); a null list means every step of selection.<kind>
    selection_steps: dict[str, list[str] | None]
    max_degenerate_share: float | None
    log_trials: bool


@dataclass
class IccSelectionConfig:
    """``selection.icc``: the inter-observer reproducibility filter placed before the F-test."""

    enabled: bool
    apply_to: list[str]
    filter: dict[str, Any]  # a ``_target_`` node


@dataclass
class ClinicalSelectionConfig:
    """``selection.clinical``: the candidate clinical variables and the p-value cut-offs."""

    variables: list[str]
    univariate_p: float
    multivariate_p: float


@dataclass
class SelectionConfig:
    """``conf/selection/*.yaml``: ordered selection steps per feature kind (``_target_`` nodes, or null to drop one)."""

    icc: IccSelectionConfig
    radiomics: dict[str, Any]
    deep: dict[str, Any]
    clinical: ClinicalSelectionConfig


@dataclass
class ClassifierConfig:
    """``conf/classifier/zoo.yaml``: the candidates (``estimator`` and ``space`` each) and the include list."""

    candidates: dict[str, Any]
    include: list[str] | None


@dataclass
class EvaluationConfig:
    """``conf/evaluation/*.yaml``: the statistics of the evaluate stage."""

    n_bootstrap: int
    ci_level: float
    hl_groups: int
    calibration_bins: int
    permutation_repeats: int
    acceptance_ratio: float


@dataclass
class TrackingConfig:
    """``conf/tracking/*.yaml``: where MLflow logs, and under which parent run."""

    uri: str
    artifact_root: str | None
    experiment: str
    parent_run_id: str | None
    enabled: bool
    # only tracking=server sets it (the team's Optuna database); sweep.storage picks it up
    optuna_storage: str | None = None


@dataclass
class FitTableConfig:
    """``fit_table`` of ``conf/fit_table.yaml``: nested CV on any feature table."""

    kind: str  # selection.<kind> steps and the sweep preset's lists of that kind's signature
    outer_folds: int
    outer_repeats: int
    inner_folds: int
    n_trials: int  # Optuna trials per outer fold
    include: list[str] | None  # classifiers; null = the sweep preset's list for the kind
    final_fit: bool
    drop_prefixes: list[str]
    drop_columns: list[str]


@dataclass
class TableInputConfig:
    """The table fit-table reads (root keys of ``conf/fit_table.yaml``)."""

    table: str | None
    id_col: str
    label_col: str
    positive_label: Any


@dataclass
class GateConfig:
    """``serve.gate``: when a new version may take the champion alias (``cagerisk.tracking.gate``)."""

    rule: str
    alpha: float
    margin: float


@dataclass
class RegistryConfig:
    """The registry keys of ``conf/serve/default.yaml`` (the endpoint keys are the service's)."""

    model_name: str
    champion_alias: str
    challenger_alias: str
    on_incomparable: str
    gate: GateConfig


@dataclass
class ModelConfig:
    """What every model search reads: the sweep preset, the selection steps, the classifier zoo, the seed."""

    sweep: SweepConfig
    selection: SelectionConfig
    classifier: ClassifierConfig
    seed: int


def model_config(cfg: DictConfig) -> ModelConfig:
    """The ``sweep``, ``selection`` and ``classifier`` groups and ``seed`` of a composed config, typed."""
    return ModelConfig(
        sweep=typed(cfg.sweep, SweepConfig, "sweep"),
        selection=typed(cfg.selection, SelectionConfig, "selection"),
        classifier=typed(cfg.classifier, ClassifierConfig, "classifier"),
        seed=run_seed(cfg),
    )


def run_seed(cfg: DictConfig) -> int:
    """The run's ``seed`` (``conf/config.yaml``), typed."""
    return typed({"seed": cfg.seed}, _Seed, "cfg").seed


@dataclass
class _Seed:
    seed: int
