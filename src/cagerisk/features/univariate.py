"""Univariate filter: keep features whose ANOVA F-test against the outcome is significant."""

from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin, f_classif
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

log = logging.getLogger(__name__)


class FTestSelector(SelectorMixin, BaseEstimator):
    """Drop features whose F-test p-value is above ``alpha`` (the study's p > 0.05 filter).

    Unlike ``sklearn.feature_selection.SelectFpr`` this never returns an empty selection: when no
    feature passes (small or label-permuted data) the ``min_features`` lowest p-values are kept, so
    the later steps of a signature pipeline still run and the fold simply scores near chance.

    Attributes
    ----------
    scores_, pvalues_ : F statistics and p-values per input feature (constant features get p = 1).
    """

    def __init__(self, alpha: float = 0.05, min_features: int = 1):
        self.alpha = alpha
        self.min_features = min_features

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha!r}")
        if int(self.min_features) < 0:
            raise ValueError(f"min_features must be >= 0, got {self.min_features!r}")
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            # Constant features make f_classif warn and return NaN; handled just below.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            scores, pvalues = f_classif(X, y)
        # Constant features give NaN: they carry no information.
        self.scores_ = np.nan_to_num(scores, nan=0.0)
        self.pvalues_ = np.nan_to_num(pvalues, nan=1.0)
        mask = self.pvalues_ <= self.alpha
        n_keep = min(int(self.min_features), X.shape[1])
        if mask.sum() < n_keep:
            mask = np.zeros(X.shape[1], dtype=bool)
            mask[np.argsort(self.pvalues_, kind="stable")[:n_keep]] = True
            log.debug("F-test: fewer than %d features with p <= %g; kept the best %d", n_keep, self.alpha, n_keep)
        self.support_ = mask
        return self

    def _get_support_mask(self):
        check_is_fitted(self)
        return self.support_
