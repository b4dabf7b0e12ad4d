"""Deep features: z-score each embedding dimension, then reduce with PCA."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data


class ZScorePCA(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Standardise features, then project on the leading principal components.

    Deep embeddings have hundreds of correlated dimensions per (sequence, ROI), far more than
    patients; PCA on z-scored dimensions keeps the shared variation and drops the rest.

    Parameters
    ----------
    n_components : int (number of components) or float in (0, 1) (fraction of variance kept).
        Capped at ``min(n_samples, n_features)``.
    whiten : scale components to unit variance, so a later LASSO penalises them alike.
    random_state : seed of the randomised SVD solver, when PCA chooses it.
    """

    def __init__(self, n_components: int | float = 0.95, whiten: bool = True, random_state: int | None = None):
        self.n_components = n_components
        self.whiten = whiten
        self.random_state = random_state

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float64)
        self.scaler_ = StandardScaler().fit(X)
        Z = self.scaler_.transform(X)
        n_components = self.n_components
        limit = min(X.shape)
        if isinstance(n_components, (int, np.integer)) and not isinstance(n_components, bool):
            n_components = max(1, min(int(n_components), limit))
        elif not 0 < float(n_components) < 1:
            raise ValueError(f"n_components must be a positive int or a float in (0, 1), got {n_components!r}")
        self.pca_ = PCA(n_components=n_components, whiten=self.whiten, random_state=self.random_state).fit(Z)
        self.n_components_ = int(self.pca_.n_components_)
        self._n_features_out = self.n_components_
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.pca_.transform(self.scaler_.transform(X))

    @property
    def explained_variance_ratio_(self) -> np.ndarray:
        check_is_fitted(self)
        return self.pca_.explained_variance_ratio_
