"""The default classifier: an L2 logistic regression and extra trees, stacked on their honest scores.

On radiomics tables of 50-300 patients, choosing among many classifiers and hyperparameters by inner
CV mostly fits the noise of that CV (issue 11: on a real table of 169 patients the study's protocol
lost 0.09 AUC to a plain L2 logistic regression). The two plain models win on different tables
(linear signal vs. interactions and thresholds), and which one wins cannot be guessed from a few
dozen patients; a plain average of their probabilities is dominated by whichever spreads its
probabilities more (a strongly regularised logistic regression barely leaves the prior).

So both are fitted, and their scores are combined on a common scale, learnt from scores each model
gave to patients it was not fitted on, at no extra fit:

- the logistic regression's C is chosen by k-fold CV anyway; the out-of-fold decision values at the
  chosen C are its honest scores;
- the extra trees are grown on bootstrap samples; each patient's out-of-bag vote is the trees' honest
  score.

Each score is divided by the standard deviation of its honest scores, the two are averaged with equal
weights, and a logistic regression on the average (Platt scaling) gives the probability: calibrated in
the same step, and never 0 or 1. Learning the two weights instead (``combine="learned"``) was worse on
radMLBench tables (same folds: HNSCC 0.696 vs 0.729, Hosny2018B 0.659 vs 0.674, WORC-Lipo 0.779 vs
0.786; C4KC-KiTS and LNDb within 0.005).

This module is pickled into served models: it imports only numpy, scikit-learn and cagerisk.models.forest.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from cagerisk.models.forest import forest_predict_proba


def _logit(p: np.ndarray, eps: float) -> np.ndarray:
    p = np.clip(p, eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


class LinearTreeStack(ClassifierMixin, BaseEstimator):
    """Stack of an L2 logistic regression (C by ``cv``-fold CV AUC) and extra trees.

    Parameters
    ----------
    Cs : inverse regularisation strengths tried for the logistic regression (standardised inputs).
    cv : folds of the logistic regression's CV (capped by the minority class).
    n_estimators, max_features, min_samples_leaf : of ``ExtraTreesClassifier`` (``bootstrap=True``).
    combine : "equal" (average of the two standardised honest scores, then Platt scaling) or
        "learned" (a logistic regression on both; a negative weight drops that model).
    random_state : seeds the CV shuffling and the trees.
    """

    def __init__(
        self,
        Cs: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
        cv: int = 5,
        n_estimators: int = 500,
        max_features: str | float | None = "sqrt",
        min_samples_leaf: int = 1,
        combine: str = "equal",
        random_state: int | None = None,
    ):
        self.combine = combine
        self.Cs = Cs
        self.cv = cv
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64)
        self.classes_ = unique_labels(y)
        if len(self.classes_) != 2:
            raise ValueError(f"LinearTreeStack is a binary classifier; got classes {list(self.classes_)}")
        y01 = (y == self.classes_[1]).astype(int)
        self.scaler_ = StandardScaler().fit(X)
        Z = self.scaler_.transform(X)
        linear_oof = self._linear_cv(Z, y01)
        self.linear_ = LogisticRegression(C=self.C_, solver="liblinear", dual=self._dual(Z), max_iter=5000).fit(Z, y01)
        # Bootstrap samples, so that every patient has an out-of-bag vote: the trees' honest score.
        # (Tried: a forest grown on every patient to predict, beside a bootstrap forest for the scores;
        # on Hosny2018B it reached 0.638 against 0.674, the two forests' scales differing.)
        self.trees_ = ExtraTreesClassifier(
            n_estimators=int(self.n_estimators),
            max_features=self.max_features,
            min_samples_leaf=int(self.min_samples_leaf),
            bootstrap=True,
            oob_score=True,
            random_state=self.random_state,
            n_jobs=1,
        ).fit(X, y01)
        oob = self.trees_.oob_decision_function_[:, 1]
        # A patient in every bootstrap sample (rare, tiny n) has no out-of-bag vote: the prior stands in.
        oob = np.where(np.isfinite(oob), oob, y01.mean())
        S = np.column_stack([linear_oof, _logit(oob, self._eps)])
        self.honest_scores_ = S  # (linear OOF decision, trees OOB logit) per training patient
        self.stack_mask_ = np.ones(2, dtype=bool)
        if self.combine == "equal":
            # Equal weights on the two honest scores in their own standard deviations: learning two
            # weights from 50-300 patients costs more than it gains (measured on radMLBench); the
            # logistic regression on the average only calibrates it.
            z = self._standardise(S, fit=True).mean(axis=1, keepdims=True)
            stacker = LogisticRegression(C=1.0).fit(z, y01)
        elif self.combine == "learned":
            stacker = LogisticRegression(C=1.0).fit(self._standardise(S, fit=True), y01)
            negative = stacker.coef_[0] < 0
            if negative.any() and not negative.all():
                # A model whose honest score ranks patients backwards is dropped, not inverted.
                self.stack_mask_ = ~negative
                stacker = LogisticRegression(C=1.0).fit(self._standardise(S, fit=True), y01)
        else:
            raise ValueError(f"combine must be 'equal' or 'learned', got {self.combine!r}")
        self.stacker_ = stacker
        # Weights of the standardised honest scores (0: dropped), for reports.
        self.weights_ = {"linear": 0.0, "trees": 0.0}
        coef = np.repeat(stacker.coef_[0, 0] / 2.0, 2) if self.combine == "equal" else stacker.coef_[0]
        for name, w in zip(np.array(["linear", "trees"])[self.stack_mask_], coef, strict=False):
            self.weights_[str(name)] = float(w)
        return self

    @staticmethod
    def _dual(Z: np.ndarray) -> bool:
        # The same L2 problem; the dual is the fast one with more features than patients (11,407
        # radiomics features of 48 patients: 0.04-0.2 s against 2-4 s per fit).
        return Z.shape[1] > Z.shape[0]

    @property
    def _eps(self) -> float:
        return 0.5 / max(int(self.n_estimators), 1)

    def _standardise(self, S: np.ndarray, fit: bool = False) -> np.ndarray:
        S = S[:, self.stack_mask_]
        if fit:
            self.stack_mean_ = S.mean(axis=0)
            self.stack_scale_ = np.where(S.std(axis=0) > 0, S.std(axis=0), 1.0)
        return (S - self.stack_mean_) / self.stack_scale_

    def _linear_cv(self, Z: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Choose C by mean fold AUC; return the out-of-fold decision values at that C."""
        n_minority = int(min(y.sum(), len(y) - y.sum()))
        folds = max(2, min(int(self.cv), n_minority))
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.random_state)
        Cs = [float(c) for c in np.atleast_1d(self.Cs)]
        oof = np.zeros((len(Cs), len(y)))
        aucs = np.zeros((len(Cs), folds))
        for f, (train, valid) in enumerate(splitter.split(Z, y)):
            for i, C in enumerate(Cs):
                model = LogisticRegression(C=C, solver="liblinear", dual=self._dual(Z), max_iter=5000).fit(Z[train], y[train])
                oof[i, valid] = model.decision_function(Z[valid])
                aucs[i, f] = roc_auc_score(y[valid], oof[i, valid]) if len(np.unique(y[valid])) == 2 else 0.5
        best = int(np.argmax(aucs.mean(axis=1)))
        self.C_ = Cs[best]
        self.cv_auc_ = float(aucs[best].mean())
        return oof[best]

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, ("stacker_",))
        X = validate_data(self, X, reset=False, dtype=np.float64)
        linear = self.linear_.decision_function(self.scaler_.transform(X))
        # All 500 trees at once (bit-identical to trees_.predict_proba, which loops over them in Python).
        trees = _logit(forest_predict_proba(self.trees_, X)[:, 1], self._eps)
        Z = self._standardise(np.column_stack([linear, trees]))
        if self.combine == "equal":
            Z = Z.mean(axis=1, keepdims=True)
        return self.stacker_.decision_function(Z)

    def predict_proba(self, X) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.decision_function(X) > 0).astype(int)]
