"""Robust scaling: centre on the median, divide by the interquartile range."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data


class MedianIQRScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Scale each feature to ``(x - median) / IQR`` learnt on the training data.

    Radiomics features are heavy-tailed and come from several scanners, so mean/std scaling lets a
    few extreme patients set the scale; median and IQR do not. A feature with zero IQR keeps unit
    scale (it is then only centred). Missing values are ignored when fitting and kept as missing.

    Parameters
    ----------
    clip : float or None
        If set, scaled values are clipped to ``[-clip, clip]`` (in IQR units) so that a patient far
        outside the training range (another scanner, an outlier) cannot dominate a linear model.
    """

    def __init__(self, clip: float | None = None):
        self.clip = clip

    def fit(self, X, y=None):
        X = validate_data(self, X, ensure_all_finite="allow-nan", dtype=np.float64)
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be positive or None, got {self.clip!r}")
        with np.errstate(all="ignore"):
            q25, median, q75 = np.nanpercentile(X, [25, 50, 75], axis=0)
        iqr = q75 - q25
        # All-missing columns have no median: centre at 0 so transform keeps them missing, not a crash.
        self.center_ = np.where(np.isfinite(median), median, 0.0)
        self.scale_ = np.where(np.isfinite(iqr) & (iqr > 0), iqr, 1.0)
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float64, copy=True)
        X -= self.center_
        X /= self.scale_
        if self.clip is not None:
            np.clip(X, -self.clip, self.clip, out=X)
        return X

    def inverse_transform(self, X):
        check_is_fitted(self)
        X = np.array(X, dtype=np.float64, copy=True)
        return X * self.scale_ + self.center_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
