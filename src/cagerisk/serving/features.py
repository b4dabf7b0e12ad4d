"""Which input features a fitted signature pipeline really needs.

A radiomics signature is fitted on >10,000 columns but its LASSO keeps a handful; every step before
the selection (imputation, robust scaling) works column by column. Serving asks only for the
features that reach the classifier, fills the others with NaN (imputed, then dropped by the
selectors), and so takes small requests and extracts only the ROIs that matter. A step that mixes
columns (PCA of the deep features) makes every column it sees required.

The reduction is verified, never assumed: ``verify_required_inputs`` scores real patients with the
unrequired columns blanked and must reproduce the full pipeline exactly, else every column stays
required.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.pipeline import Pipeline

from cagerisk.models.served import positive_proba

log = logging.getLogger(__name__)


def pipeline_inputs(pipeline: Pipeline) -> list[str]:
    names = getattr(pipeline, "feature_names_in_", None)
    if names is None:
        raise ValueError("the pipeline was fitted without feature names; serving needs named features")
    return [str(n) for n in names]


def required_inputs(pipeline: Pipeline) -> list[str]:
    """Input columns that can change the pipeline's output, in input order.

    Walks the steps before the classifier: while each step's output names are input names (a
    one-to-one transform or a selector), the set narrows to the names that survive; at the first step
    that makes new names (PCA, one-hot), everything entering it is required.
    """
    inputs = pipeline_inputs(pipeline)
    known = set(inputs)
    steps = pipeline.steps[:-1] if is_classifier(pipeline.steps[-1][1]) else pipeline.steps
    entering = list(inputs)
    for index in range(len(steps)):
        try:
            out = [str(n) for n in pipeline[: index + 1].get_feature_names_out()]
        except (AttributeError, ValueError, TypeError):
            return [c for c in inputs if c in set(entering)]
        if not set(out) <= known:
            return [c for c in inputs if c in set(entering)]
        entering = out
    keep = set(entering)
    return [c for c in inputs if c in keep]


def blank_unrequired(frame: pd.DataFrame, columns: Sequence[str], required: Sequence[str]) -> pd.DataFrame:
    """``frame``'s required columns in the pipeline's full column order, every other column NaN."""
    full = pd.DataFrame(np.nan, index=frame.index, columns=list(columns), dtype=np.float64)
    full[list(required)] = frame[list(required)].to_numpy(dtype=np.float64)
    return full


def verify_required_inputs(pipeline: Pipeline, X: pd.DataFrame, required: Sequence[str], atol: float = 0.0) -> bool:
    """Whether the pipeline gives the same probabilities on ``X`` with the unrequired columns blanked."""
    columns = pipeline_inputs(pipeline)
    full = positive_proba(pipeline, X[columns])
    try:
        reduced = positive_proba(pipeline, blank_unrequired(X, columns, required))
    except ValueError as err:
        log.info("blanking unrequired columns fails (%s): every column stays required", err)
        return False
    same = bool(np.allclose(full, reduced, rtol=0.0, atol=atol))
    if not same:
        log.info("blanking unrequired columns changes the output by up to %.3g", float(np.max(np.abs(full - reduced))))
    return same


def serving_inputs(pipeline: Pipeline, X: pd.DataFrame) -> list[str]:
    """The verified required inputs of a fitted pipeline (all inputs when the reduction does not hold)."""
    required = required_inputs(pipeline)
    columns = pipeline_inputs(pipeline)
    if len(required) < len(columns) and not verify_required_inputs(pipeline, X, required):
        return columns
    return required
