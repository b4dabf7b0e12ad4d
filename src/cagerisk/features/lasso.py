"""LASSO selector: keep the features with non-zero coefficients at the cross-validated lambda."""

from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import SelectorMixin
from sklearn.linear_model import LassoCV, lasso_path
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

log = logging.getLogger(__name__)


class LassoSelector(SelectorMixin, BaseEstimator):
    """LASSO on the 0/1 outcome with lambda chosen by stratified k-fold CV; keeps non-zero coefficients.

    A non-binary target is regressed on as a number (class codes or the values) with plain k-fold CV.

    Lambda (``alpha_``) is the one with the lowest mean cross-validated squared error (the maximum
    mean CV score), as in radiomics studies that report the LASSO path and CV curve (their Fig. 1a-b).

    Parameters
    ----------
    cv : number of stratified folds for choosing lambda.
    n_alphas : length of the lambda grid.
    max_features : keep at most this many features (largest |coefficient|); None keeps all non-zero.
    min_features : when lambda zeroes everything (no signal), keep the first features to enter the
        path so that a pipeline still has an input; the fold then scores near chance, as it should.
    store_path : also compute the coefficient path on all training data (``coef_path_``) for plots.
    random_state : seed of the fold shuffling.

    Attributes
    ----------
    alpha_, alphas_, mse_path_ (n_alphas x cv), coef_, intercept_, support_, coef_path_ (if stored).
    """

    def __init__(
        self,
        cv: int = 10,
        n_alphas: int = 100,
        max_features: int | None = None,
        min_features: int = 1,
        store_path: bool = False,
        max_iter: int = 10000,
        random_state: int | None = None,
    ):
        self.cv = cv
        self.n_alphas = n_alphas
        self.max_features = max_features
        self.min_features = min_features
        self.store_path = store_path
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=False)
        if type_of_target(y) == "binary":
            # The study's case: regression on the 0/1 outcome, folds stratified by outcome.
            classes = np.unique(y)
            target = (y == classes[-1]).astype(np.float64)
            n_minority = int(min(target.sum(), len(target) - target.sum()))
            n_splits = max(2, min(int(self.cv), n_minority))
            folds = list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.random_state).split(X, target))
        else:
            # Any other target (multiclass codes, a continuous score) is regressed on as a number.
            target = (
                np.unique(y, return_inverse=True)[1].astype(np.float64) if y.dtype.kind not in "fiub" else y.astype(np.float64)
            )
            n_splits = max(2, min(int(self.cv), len(target)))
            folds = list(KFold(n_splits=n_splits, shuffle=True, random_state=self.random_state).split(X))
        with warnings.catch_warnings():
            # Tiny lambdas at the end of the grid rarely converge; they are never the chosen one.
            warnings.simplefilter("ignore", ConvergenceWarning)
            lasso = LassoCV(
                alphas=int(self.n_alphas),
                cv=folds,
                max_iter=int(self.max_iter),
                n_jobs=1,
            ).fit(X, target)
            self.alpha_ = float(lasso.alpha_)
            self.alphas_ = np.asarray(lasso.alphas_)
            self.mse_path_ = np.asarray(lasso.mse_path_)
            self.coef_ = np.asarray(lasso.coef_)
            self.intercept_ = float(lasso.intercept_)
            self.n_iter_ = int(lasso.n_iter_)
            support = self.coef_ != 0
            path_coefs = None
            if self.store_path or support.sum() < int(self.min_features):
                _, path_coefs, _ = lasso_path(
                    X - X.mean(axis=0), target - target.mean(), alphas=self.alphas_, max_iter=int(self.max_iter)
                )
        if self.store_path:
            self.coef_path_ = path_coefs
        if self.max_features is not None and support.sum() > int(self.max_features):
            order = np.argsort(-np.abs(self.coef_), kind="stable")[: int(self.max_features)]
            support = np.zeros_like(support)
            support[order] = True
        n_min = min(int(self.min_features), X.shape[1])
        if support.sum() < n_min:
            # alphas_ run from large to small: the first non-zero entries are the first to enter.
            entry = np.full(X.shape[1], len(self.alphas_))
            nonzero = path_coefs != 0
            has = nonzero.any(axis=1)
            entry[has] = nonzero[has].argmax(axis=1)
            support = np.zeros(X.shape[1], dtype=bool)
            support[np.argsort(entry, kind="stable")[:n_min]] = True
            log.debug("LASSO kept no feature at alpha=%g; kept the first %d to enter the path", self.alpha_, n_min)
        self.support_ = support
        return self

    def _get_support_mask(self):
        check_is_fitted(self)
        return self.support_
