"""Inter-observer reproducibility filter: keep the features whose ICC reaches a threshold.

The ICC table comes from the reproducibility stage (``{paths.features}/icc.parquet``, one row per
radiomics feature with ``icc2_1``, ``icc3_1``, their CIs and a ``status``). The filter is the first
selection step, before the F-test (``selection.icc.enabled``), and matches features by column name, so
it needs a DataFrame (or an array with an ICC table keyed by scikit-learn's generic names ``x0``,
``x1``, ...).

The ICC uses no outcome: refitting the filter inside every cross-validation fold gives the same mask
each time, and no label of a validation or test patient reaches selection through it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

log = logging.getLogger(__name__)

MISSING_POLICIES = ("drop", "keep", "error")
FEATURE_KEY = "feature"

# Tables read from disk, keyed by (path, size, mtime): refitting in every CV fold reads the file once.
_TABLE_MEMO: dict[tuple[str, int, int], pd.DataFrame] = {}


def read_icc_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """An ICC table from Parquet or CSV (``feature`` column or index), memoised on the file's stat."""
    p = Path(path)
    try:
        stat = p.stat()
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"ICC table {p} not found: run `cagerisk reproducibility` first, or set selection.icc.enabled=false"
        ) from err
    key = (str(p.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _TABLE_MEMO:
        if p.suffix.lower() == ".csv":
            table = pd.read_csv(p)
        elif p.suffix.lower() in (".parquet", ".pq"):
            table = pd.read_parquet(p)
        else:
            raise ValueError(f"ICC table {p}: expected a .parquet or .csv file")
        _TABLE_MEMO.clear()  # one table per process is the normal case; never grow without bound
        _TABLE_MEMO[key] = table
    return _TABLE_MEMO[key]


def icc_values(table: Any, column: str = "icc2_1") -> pd.Series:
    """ICC per feature name from a path, a DataFrame (``feature`` column or index), a Series or a mapping."""
    source = "ICC table"
    if isinstance(table, (str, os.PathLike)):
        source = f"ICC table {table}"
        table = read_icc_table(table)
    if isinstance(table, Mapping):
        table = pd.Series(dict(table), dtype=np.float64)
    if isinstance(table, pd.Series):
        values = table
    elif isinstance(table, pd.DataFrame):
        if column not in table.columns:
            raise ValueError(f"{source} has no column {column!r}; columns: {list(table.columns)[:20]}")
        frame = table.set_index(FEATURE_KEY) if FEATURE_KEY in table.columns else table
        values = frame[column]
    else:
        raise TypeError(
            f"ICCFilter.table must be a path, a DataFrame, a Series or a mapping of feature -> ICC; got {type(table).__name__}"
        )
    values = pd.to_numeric(values, errors="coerce").astype(np.float64)
    values.index = values.index.astype(str)
    if values.index.has_duplicates:
        dup = values.index[values.index.duplicated()].unique().tolist()
        raise ValueError(f"{source}: feature(s) listed more than once: {dup[:5]}")
    return values


class ICCFilter(SelectorMixin, BaseEstimator):
    """Keep the features with ICC >= ``threshold`` (the study's inter-observer reproducibility step).

    Parameters
    ----------
    table : path to the reproducibility stage's ICC table (Parquet/CSV), or a DataFrame with a
        ``feature`` column (or feature names as index), or a Series/mapping feature -> ICC.
    threshold : features with ICC at or above it are kept (0.75: "good" in Koo & Li 2016).
    column : which ICC of the table: ``icc2_1`` (absolute agreement, default: a reader who draws
        systematically larger masks shifts the feature, and a model trained on one reader's masks sees
        that shift), ``icc3_1`` (consistency), or a CI bound such as ``icc2_1_ci_low``.
    missing : features that are not in the table: ``drop`` (default: only features shown to be
        reproducible reach the model, and a table out of step with the feature table shows up as a
        logged warning with the count, not as unvetted features), ``keep`` (let them pass, e.g. clinical
        columns next to radiomics), ``error`` (raise, naming them). A table with none of the features
        always raises: that is a wrong table, not a filter result.

    Features whose ICC is NaN (constant features, too few second-reader patients, no second reader for
    that ROI) fail the threshold and are dropped.

    Attributes
    ----------
    icc_ : ICC per input feature (NaN where not in the table).
    in_table_ : mask of input features found in the table.
    support_ : mask of kept features.
    removal_counts_ : ``{"below_threshold", "icc_nan", "not_in_table"}`` -> number removed for each reason.
    """

    def __init__(self, table: Any = None, threshold: float = 0.75, column: str = "icc2_1", missing: str = "drop"):
        self.table = table
        self.threshold = threshold
        self.column = column
        self.missing = missing

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan")
        if self.missing not in MISSING_POLICIES:
            raise ValueError(f"missing must be one of {MISSING_POLICIES}; got {self.missing!r}")
        if not np.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number; got {self.threshold!r}")
        if self.table is None:
            raise ValueError("ICCFilter needs an ICC table (path, DataFrame or Series); got table=None")
        values = icc_values(self.table, self.column)
        has_names = hasattr(self, "feature_names_in_")
        names = [str(c) for c in self.feature_names_in_] if has_names else [f"x{i}" for i in range(X.shape[1])]
        in_table = np.array([name in values.index for name in names], dtype=bool)
        if not in_table.any():
            hint = (
                ""
                if has_names
                else " The ICC filter matches features by name: fit it on a DataFrame whose columns are the feature names."
            )
            raise ValueError(
                f"none of the {len(names)} features (e.g. {names[:3]}) is in the ICC table "
                f"({len(values)} features, e.g. {values.index[:3].tolist()}).{hint}"
            )
        missing_names = [n for n, found in zip(names, in_table, strict=False) if not found]
        if missing_names and self.missing == "error":
            raise ValueError(
                f"{len(missing_names)} feature(s) not in the ICC table, e.g. {missing_names[:5]} "
                "(ICCFilter(missing='error')); rerun `cagerisk reproducibility` on the current feature table"
            )
        icc = values.reindex(names).to_numpy(np.float64)
        passes = np.nan_to_num(icc, nan=-np.inf) >= float(self.threshold)
        support = np.where(in_table, passes, self.missing == "keep")
        self.icc_ = icc
        self.in_table_ = in_table
        self.support_ = support
        self.removal_counts_ = {
            "below_threshold": int((in_table & ~np.isnan(icc) & ~passes).sum()),
            "icc_nan": int((in_table & np.isnan(icc)).sum()),
            "not_in_table": int((~in_table & ~support).sum()),
        }
        if missing_names:
            log.warning(
                "ICC filter: %d of %d features are not in the ICC table (e.g. %s); %s",
                len(missing_names),
                len(names),
                missing_names[:3],
                "kept (missing='keep')" if self.missing == "keep" else "dropped (missing='drop')",
            )
        if not support.any():
            best = np.nanmax(icc) if np.isfinite(icc).any() else float("nan")
            raise ValueError(
                f"ICC filter keeps no feature: none of {len(names)} has {self.column} >= {self.threshold} "
                f"(highest {best:.3f}); lower selection.icc.filter.threshold or disable the filter"
            )
        log.info(
            "ICC filter (%s >= %g): %d of %d features kept; removed %s",
            self.column,
            self.threshold,
            int(support.sum()),
            len(names),
            self.removal_counts_,
        )
        return self

    def _get_support_mask(self):
        check_is_fitted(self)
        return self.support_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Radiomics can be NaN for a degenerate ROI; imputation comes after this filter.
        tags.input_tags.allow_nan = True
        return tags
