"""Build the selection steps of a signature from the ``selection`` config, and report what each removed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from sklearn.base import BaseEstimator, is_classifier
from sklearn.pipeline import Pipeline

from cagerisk.config.modelling import SelectionConfig
from cagerisk.features.lasso import LassoSelector

FEATURE_KINDS = ("radiomics", "deep")
ICC_STEP = "icc"


def build_selection_steps(
    selection_cfg: SelectionConfig | DictConfig | Mapping[str, Any],
    kind: str,
    seed: int | None = None,
    only: Sequence[str] | None = None,
) -> list[tuple[str, BaseEstimator]]:
    """The ordered (name, transformer) steps that turn a feature table into a signature's inputs.

    ``selection.<kind>`` maps step names to ``_target_`` nodes in order; a step set to null is
    skipped. ``only`` (e.g. a sweep preset's ``[impute, scale]``) keeps just the named steps, in
    config order; the ICC filter is a reproducibility filter, not a selection step, and stays.
    When ``selection.icc.enabled`` is true and ``kind`` is in ``selection.icc.apply_to``,
    the configured ICC filter comes first, so it sees the feature names and acts before the F-test.
    Estimators with a ``random_state`` left unset get ``seed``.
    """
    if is_dataclass(selection_cfg):
        selection_cfg = OmegaConf.create(asdict(selection_cfg))
    elif isinstance(selection_cfg, Mapping) and not isinstance(selection_cfg, DictConfig):
        selection_cfg = OmegaConf.create(dict(selection_cfg))
    if kind not in selection_cfg or selection_cfg[kind] is None:
        raise ValueError(f"selection config has no steps for feature kind {kind!r}; expected one of {FEATURE_KINDS}")
    steps: list[tuple[str, BaseEstimator]] = []
    icc = selection_cfg.get("icc")
    if icc is not None and bool(icc.get("enabled", False)) and kind in list(icc.get("apply_to") or []):
        steps.append((ICC_STEP, instantiate(icc.filter)))
    if only is not None:
        unknown = sorted(set(only) - set(selection_cfg[kind]))
        if unknown:
            raise ValueError(f"selection.{kind} has no step(s) {unknown}; its steps are {list(selection_cfg[kind])}")
    for name, node in selection_cfg[kind].items():
        if node is None or (only is not None and name not in set(only)):
            continue
        steps.append((str(name), instantiate(node)))
    if not steps:
        raise ValueError(f"selection.{kind} has no steps")
    return [(name, _seeded(step, seed)) for name, step in steps]


def _seeded(estimator: BaseEstimator, seed: int | None) -> BaseEstimator:
    if seed is not None and "random_state" in estimator.get_params(deep=False):
        if estimator.get_params(deep=False)["random_state"] is None:
            estimator.set_params(random_state=int(seed))
    return estimator


def selection_report(model: Pipeline | list[tuple[str, BaseEstimator]]) -> pd.DataFrame:
    """One row per fitted selection step: features in, features out, features removed.

    Accepts a fitted signature pipeline (the final classifier is skipped) or fitted steps.
    """
    steps = list(model.steps) if isinstance(model, Pipeline) else list(model)
    rows = []
    for name, step in steps:
        if step is None or step == "passthrough" or is_classifier(step):
            continue
        n_in = int(getattr(step, "n_features_in_", -1))
        n_out = _n_features_out(step)
        rows.append(
            {
                "step": name,
                "transformer": type(step).__name__,
                "n_in": n_in,
                "n_out": n_out,
                "n_removed": n_in - n_out if n_in >= 0 and n_out >= 0 else None,
            }
        )
    return pd.DataFrame(rows, columns=["step", "transformer", "n_in", "n_out", "n_removed"])


def _n_features_out(step: BaseEstimator) -> int:
    if hasattr(step, "get_support"):
        return int(np.sum(step.get_support()))
    if hasattr(step, "n_components_"):
        return int(step.n_components_)
    try:
        return len(step.get_feature_names_out())
    except (AttributeError, ValueError, TypeError):
        return -1


def selected_feature_names(model: Pipeline) -> list[str]:
    """Names of the features that reach the classifier of a fitted signature pipeline."""
    selection = model[:-1] if is_classifier(model.steps[-1][1]) else model
    return [str(name) for name in selection.get_feature_names_out()]


def lasso_of(pipeline: Pipeline) -> tuple[LassoSelector, list[str]] | None:
    """The fitted LASSO step of a signature pipeline and the names of its input features."""
    for index, (_, step) in enumerate(pipeline.steps):
        if isinstance(step, LassoSelector):
            names = list(pipeline[:index].get_feature_names_out()) if index else list(pipeline.feature_names_in_)
            return step, [str(n) for n in names]
    return None


def selected_features_table(pipeline: Pipeline) -> pd.DataFrame:
    """Features reaching the classifier, with their LASSO coefficient when there is a LASSO step."""
    names = [str(n) for n in pipeline[:-1].get_feature_names_out()]
    frame = pd.DataFrame({"feature": names})
    found = lasso_of(pipeline)
    if found is not None:
        lasso, inputs = found
        coef = dict(zip(inputs, lasso.coef_, strict=False))
        frame["lasso_coef"] = [float(coef.get(n, np.nan)) for n in names]
    return frame
