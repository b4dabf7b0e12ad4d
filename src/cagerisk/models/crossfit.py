"""Cross-fitted DL-sign: the deep stage's per-fold embeddings and the K fold pipelines served as one model.

The deep stage fine-tunes one ViT-3D per fold of the training split (``deep.crossfit.folds``) and embeds
every patient with each of them. Its table ``deep.parquet`` is long: one row per (patient, fold model),
``patient_id``, ``fold_model`` (j), ``label_seen`` (whether fold model j was trained on that patient's
label, its inner early-stopping part included) and the ``{sequence}_{roi}_dl_{k}`` embedding.

The models read it wide (:func:`read_deep_table`): one row per patient, fold model j's embedding in the
columns ``{sequence}_{roi}_dl_{k}_f{j}``. DL-sign pipeline j is fitted on the columns of fold j and the
training patients fold model j saw; a training patient's DL-sign comes from the one pipeline that did not
see it, every other patient's is the mean of the K pipelines' probabilities (:class:`CrossFittedSignature`,
what the served model unpickles; this module imports numpy, pandas and scikit-learn only).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cagerisk.cohort.schema import ID
from cagerisk.deep.table import FOLD_COLUMN, SEEN_COLUMN, fold_column
from cagerisk.models.served import positive_proba

__all__ = [
    "FOLD_COLUMN",
    "SEEN_COLUMN",
    "CrossFittedSignature",
    "DeepTable",
    "fold_column",
    "fold_columns",
    "long_to_wide",
    "read_deep_table",
]

_SUFFIX = re.compile(r"^(?P<base>.+_dl_\d+)_f(?P<fold>\d+)$")


def fold_columns(columns: Sequence[str], fold: int) -> list[str]:
    """The columns of ``columns`` that fold model ``fold`` made, in their order."""
    out = []
    for column in columns:
        match = _SUFFIX.match(str(column))
        if match and int(match["fold"]) == fold:
            out.append(str(column))
    return out


@dataclass
class DeepTable:
    """The deep features of the models: ``features`` indexed by patient (wide), and for a cross-fitted table
    ``label_seen`` (patients x fold models, bool: fold model j was trained on the patient's label).
    ``label_seen`` is None for a plain table (one embedding per patient, e.g. made elsewhere)."""

    features: pd.DataFrame
    label_seen: pd.DataFrame | None = None

    @property
    def crossfitted(self) -> bool:
        return self.label_seen is not None

    @property
    def n_folds(self) -> int:
        return 0 if self.label_seen is None else int(self.label_seen.shape[1])


def long_to_wide(frame: pd.DataFrame, source: str = "deep table") -> DeepTable:
    """The long per-(patient, fold model) table as one row per patient; errors name ``source``."""
    for column in (ID, FOLD_COLUMN, SEEN_COLUMN):
        if column not in frame.columns:
            raise ValueError(f"{source}: column {column!r} missing")
    frame = frame.copy()
    frame[ID] = frame[ID].astype(str)
    folds = sorted(int(f) for f in frame[FOLD_COLUMN].unique())
    if folds != list(range(len(folds))) or len(folds) < 2:
        raise ValueError(f"{source}: {FOLD_COLUMN} must number at least 2 fold models 0..K-1, got {folds}")
    counts = frame.groupby(ID)[FOLD_COLUMN].agg(["nunique", "size"])
    bad = counts.index[(counts["nunique"] != len(folds)) | (counts["size"] != len(folds))].tolist()
    if bad:
        raise ValueError(f"{source}: patient(s) without exactly one row per fold model: {bad[:10]}")
    base = [c for c in frame.columns if c not in (ID, FOLD_COLUMN, SEEN_COLUMN)]
    non_numeric = [c for c in base if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise ValueError(f"{source}: non-numeric feature column(s) {non_numeric[:10]}")
    patients = list(dict.fromkeys(frame[ID]))
    parts, seen = [], {}
    for fold in folds:
        rows = frame[frame[FOLD_COLUMN] == fold].set_index(ID).loc[patients]
        parts.append(rows[base].rename(columns=lambda c, f=fold: fold_column(c, f)))
        seen[fold] = rows[SEEN_COLUMN].astype(bool)
    features = pd.concat(parts, axis=1)
    features.index.name = ID
    return DeepTable(features=features, label_seen=pd.DataFrame(seen, index=features.index))


def read_deep_table(path: str | Path, name: str = "deep table") -> DeepTable:
    """``deep.parquet`` for the models: the deep stage's cross-fitted long table, or a plain table (one row
    per patient, as :func:`cagerisk.models.data.read_feature_table` reads it)."""
    from cagerisk.models.data import InputError, read_feature_table

    path = Path(path)
    if path.suffix == ".parquet" and path.is_file():
        import pyarrow.parquet as pq

        if FOLD_COLUMN in pq.read_schema(path).names:
            try:
                return long_to_wide(pd.read_parquet(path), f"{path}: {name}")
            except ValueError as err:
                raise InputError(str(err)) from None
    return DeepTable(features=read_feature_table(path, name))


class CrossFittedSignature:
    """K fold pipelines scored as one: P(CS) = mean of the fold pipelines' probabilities.

    Pipeline j reads the columns ``fold_columns[j]`` (fold model j's embedding); ``feature_names_in_`` is
    their concatenation, so a value array in that order scores as the named table does. ``trained_on[j]``:
    the patients whose labels pipeline j and its ViT-3D were fitted on (the leakage record).
    """

    def __init__(
        self, pipelines: Sequence[Any], fold_columns: Sequence[Sequence[str]], trained_on: Sequence[Sequence[str]] = ()
    ) -> None:
        if len(pipelines) != len(fold_columns) or len(pipelines) < 1:
            raise ValueError("one column list per fold pipeline is needed")
        self.pipelines = list(pipelines)
        self.fold_columns = [[str(c) for c in cols] for cols in fold_columns]
        self.trained_on = [sorted(str(p) for p in ids) for ids in trained_on]
        self.feature_names_in_ = np.array([c for cols in self.fold_columns for c in cols], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.classes_ = np.array([0, 1])

    @property
    def n_folds(self) -> int:
        return len(self.pipelines)

    def fold_proba(self, X: Any) -> np.ndarray:
        """``[n_patients, K]``: each fold pipeline's P(CS)."""
        if isinstance(X, pd.DataFrame):
            missing = [c for c in self.feature_names_in_ if c not in X.columns]
            if missing:
                raise ValueError(f"deep: {len(missing)} required column(s) missing, e.g. {missing[:10]}")
            parts = [X[cols] for cols in self.fold_columns]
        else:
            values = np.asarray(X, dtype=np.float64)
            if values.ndim != 2 or values.shape[1] != self.n_features_in_:
                raise ValueError(f"deep: expected {self.n_features_in_} columns, got array of shape {values.shape}")
            ends = np.cumsum([len(cols) for cols in self.fold_columns])
            parts = np.split(values, ends[:-1], axis=1)
        return np.column_stack([positive_proba(p, part) for p, part in zip(self.pipelines, parts, strict=True)])

    def predict_proba(self, X: Any) -> np.ndarray:
        mean = self.fold_proba(X).mean(axis=1)
        return np.column_stack([1.0 - mean, mean])

    def predict(self, X: Any) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def __repr__(self) -> str:
        return f"CrossFittedSignature({self.n_folds} folds, {self.n_features_in_} columns)"
