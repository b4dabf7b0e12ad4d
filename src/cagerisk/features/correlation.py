"""Correlation pruning: remove redundant features until no pair has |Pearson r| above a threshold."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin
from sklearn.utils.validation import check_is_fitted, validate_data


def greedy_correlation_prune(corr: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of the features kept after greedy pruning of an absolute correlation matrix.

    While some pair of kept features has ``|r| > threshold``, the feature (among those in such a
    pair) with the highest mean absolute correlation with the other kept features is removed; ties
    go to the later column so that the result does not depend on floating-point noise. Sums and
    counts are updated incrementally, so pruning ``p`` features costs O(p^2) rather than O(p^3).
    """
    abs_corr = np.abs(np.asarray(corr, dtype=np.float64))
    p = abs_corr.shape[0]
    abs_corr = np.nan_to_num(abs_corr, nan=0.0)
    np.fill_diagonal(abs_corr, 0.0)
    high = abs_corr > threshold
    n_high = high.sum(axis=1)
    corr_sum = abs_corr.sum(axis=1)
    kept = np.ones(p, dtype=bool)
    n_kept = p
    while n_kept > 1:
        candidates = np.flatnonzero(kept & (n_high > 0))
        if candidates.size == 0:
            break
        mean_corr = corr_sum[candidates] / (n_kept - 1)
        best = candidates[np.flatnonzero(mean_corr >= mean_corr.max() - 1e-12)[-1]]
        kept[best] = False
        n_kept -= 1
        corr_sum -= abs_corr[:, best]
        n_high -= high[:, best]
    return kept


class PearsonPruner(SelectorMixin, BaseEstimator):
    """Greedy removal of the feature most correlated with the others while any |r| > ``threshold``.

    Attributes
    ----------
    support_ : mask of kept features.
    """

    def __init__(self, threshold: float = 0.9):
        self.threshold = threshold

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float64)
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold!r}")
        if X.shape[1] == 1:
            self.support_ = np.ones(1, dtype=bool)
            return self
        centred = X - X.mean(axis=0)
        norms = np.sqrt((centred**2).sum(axis=0))
        # Constant columns have no correlation with anything (rather than NaN).
        norms[norms == 0] = np.inf
        standardised = centred / norms
        corr = standardised.T @ standardised
        self.support_ = greedy_correlation_prune(corr, float(self.threshold))
        return self

    def _get_support_mask(self):
        check_is_fitted(self)
        return self.support_
