"""The classifier zoo: one scikit-learn-compatible estimator and one Optuna search space per classifier.

Specs come from ``conf/classifier/space/<name>.yaml`` (``estimator``: a ``_target_`` node with the
fixed settings; ``space``: what Optuna samples). Optuna parameter names are ``classifier`` (which
candidate) and ``<name>.<parameter>`` so that every candidate keeps its own distributions in one study.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from sklearn.base import BaseEstimator

from cagerisk.config.modelling import ClassifierConfig

CLASSIFIER_PARAM = "classifier"
_TYPES = ("float", "int", "categorical")


@dataclass(frozen=True)
class ClassifierSpec:
    """One candidate of the zoo: how to build it and which hyperparameters to search."""

    name: str
    label: str
    estimator: dict[str, Any]
    space: dict[str, dict[str, Any]] = field(default_factory=dict)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample this candidate's hyperparameters (raw Optuna values, before casting)."""
        params: dict[str, Any] = {}
        for param, spec in self.space.items():
            key = f"{self.name}.{param}"
            kind = spec["type"]
            if kind == "float":
                params[param] = trial.suggest_float(
                    key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False))
                )
            elif kind == "int":
                params[param] = trial.suggest_int(
                    key, int(spec["low"]), int(spec["high"]), step=int(spec.get("step", 1)), log=bool(spec.get("log", False))
                )
            else:
                params[param] = trial.suggest_categorical(key, list(spec["choices"]))
        return params

    def build(self, params: Mapping[str, Any] | None = None, seed: int | None = None) -> BaseEstimator:
        """A fresh, unfitted estimator with the fixed settings, ``params`` and the seed applied."""
        estimator = instantiate(OmegaConf.create(self.estimator))
        casted = {p: _cast(v, self.space.get(p, {}).get("cast")) for p, v in (params or {}).items()}
        unknown = sorted(set(casted) - set(estimator.get_params(deep=True)))
        if unknown:
            raise ValueError(f"classifier {self.name!r}: unknown hyperparameters {unknown}")
        estimator.set_params(**casted)
        if seed is not None:
            seeds = {k: int(seed) for k, v in estimator.get_params(deep=True).items() if k.endswith("random_state") and v is None}
            if seeds:
                estimator.set_params(**seeds)
        return estimator


def _cast(value: Any, cast: str | None) -> Any:
    if cast is None:
        return value
    if cast == "int_tuple":
        # Optuna categorical choices must be scalars: "32x16" stands for (32, 16).
        return tuple(int(part) for part in str(value).split("x"))
    raise ValueError(f"unknown cast {cast!r} in a classifier search space")


def load_zoo(
    classifier_cfg: ClassifierConfig | DictConfig | Mapping[str, Any], include: Sequence[str] | None = None
) -> dict[str, ClassifierSpec]:
    """Specs of the candidates named in ``include`` (or ``classifier.include``, or all), in config order."""
    if is_dataclass(classifier_cfg):
        classifier_cfg = asdict(classifier_cfg)
    cfg = OmegaConf.create(classifier_cfg) if not isinstance(classifier_cfg, DictConfig) else classifier_cfg
    candidates = cfg.get("candidates")
    if not candidates:
        raise ValueError("classifier config has no candidates (expected classifier.candidates.<name>)")
    wanted = list(include) if include is not None else (list(cfg.include) if cfg.get("include") is not None else None)
    if wanted is not None:
        unknown = [name for name in wanted if name not in candidates]
        if unknown:
            raise ValueError(f"unknown classifiers {unknown}; the zoo has {list(candidates)}")
        if not wanted:
            raise ValueError("classifier include list is empty")
    zoo: dict[str, ClassifierSpec] = {}
    for name in wanted if wanted is not None else list(candidates):
        node = candidates[name]
        estimator = OmegaConf.to_container(node.estimator, resolve=True)
        # A candidate with nothing to search (``space: {}``, e.g. the default ``stack``) is tried once.
        space = OmegaConf.to_container(node.space, resolve=True) if node.get("space") else {}
        for param, spec in space.items():
            if spec.get("type") not in _TYPES:
                raise ValueError(f"classifier {name!r}, parameter {param!r}: type must be one of {_TYPES}")
        zoo[name] = ClassifierSpec(name=name, label=str(node.get("label", name)), estimator=estimator, space=space)
    return zoo


def suggest_classifier(trial: optuna.Trial, zoo: Mapping[str, ClassifierSpec]) -> tuple[str, dict[str, Any]]:
    """Sample a candidate, then its hyperparameters (a conditional space)."""
    name = trial.suggest_categorical(CLASSIFIER_PARAM, list(zoo))
    return name, zoo[name].suggest(trial)


def params_of_trial(trial_params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``{"classifier": "lr", "lr.C": 0.1}`` -> ``("lr", {"C": 0.1})``."""
    name = str(trial_params[CLASSIFIER_PARAM])
    prefix = f"{name}."
    return name, {k[len(prefix) :]: v for k, v in trial_params.items() if k.startswith(prefix)}
