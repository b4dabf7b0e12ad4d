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

Each score is divided by the standard deviation of its honest scores and a logistic regression on
their average (Platt scaling) gives the probability: calibrated in the same step, and never 0 or 1.
Three rules keep this from losing to its own members on small tables (issue 11, C4KC-KiTS: 56
training patients, where the first version scored 0.455 against 0.597 and 0.508 for the plain
L2-LR and extra trees):

- one standard error rule (``combine="select"``, the default): when one member's honest AUC leads the
  other's by more than one standard error of the paired (DeLong) difference, the better member is
  used alone; otherwise both, with equal weights. An average with a member at chance only adds noise;
  learning the two weights instead (``combine="learned"``) was worse on radMLBench tables (same folds:
  HNSCC 0.696 vs 0.729, Hosny2018B 0.659 vs 0.674, WORC-Lipo 0.779 vs 0.786);
- the calibration never decreases: when the honest scores show no ranking (slope <= 0), an
  unconstrained Platt step reversed every prediction of that model (an outer fold at AUC 0.31 whose
  members reached 0.73 and 0.71); the model then predicts the prevalence (``no_signal_``);
- the linear member scores new patients with the mean of the fold models that gave its honest
  scores, on the inputs as they are (no clipping in IQR units before the fit); new patients are
  clipped to the training range instead.

This module is pickled into served models: it imports only numpy, scipy, scikit-learn and
cagerisk.models.forest.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from cagerisk.models.forest import forest_predict_proba


def _logit(p: np.ndarray, eps: float) -> np.ndarray:
    p = np.clip(p, eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def paired_auc_difference(y: np.ndarray, score1: np.ndarray, score2: np.ndarray) -> tuple[float, float]:
    """AUC(score1) - AUC(score2) on the same patients and its DeLong standard error (DeLong et al. 1988).

    Here rather than from cagerisk.evaluation: this module is pickled into served models and imports
    only numpy, scipy and scikit-learn.
    """
    y = np.asarray(y).astype(bool)
    scores = np.vstack([score1, score2]).astype(np.float64)
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        raise ValueError("paired_auc_difference needs both classes")
    # Placement values from mid-ranks: the share of the other class each patient outranks (ties 1/2).
    rank_all = np.apply_along_axis(rankdata, 1, scores)
    rank_pos = np.apply_along_axis(rankdata, 1, scores[:, y])
    rank_neg = np.apply_along_axis(rankdata, 1, scores[:, ~y])
    v10 = (rank_all[:, y] - rank_pos) / n
    v01 = 1.0 - (rank_all[:, ~y] - rank_neg) / m
    auc = v10.mean(axis=1)
    contrast = np.array([1.0, -1.0])
    var = contrast @ np.cov(v10) @ contrast / m + contrast @ np.cov(v01) @ contrast / n
    return float(auc[0] - auc[1]), float(np.sqrt(max(var, 0.0)))


class LinearTreeStack(ClassifierMixin, BaseEstimator):
    """Stack of an L2 logistic regression (C by ``cv``-fold CV AUC) and extra trees.

    Parameters
    ----------
    Cs : inverse regularisation strengths tried for the logistic regression (standardised inputs).
    cv, cv_repeats : folds (capped by the minority class) and repeats of the logistic regression's CV.
    n_estimators, max_features, min_samples_leaf : of ``ExtraTreesClassifier`` (``bootstrap=True``).
    combine : "select" (the one standard error rule between the members, then as "equal"), "equal"
        (average of the two standardised honest scores, then Platt scaling) or "learned" (a logistic
        regression on both; a negative weight drops that model).
    calibration : with "select" or "equal" (an error with "learned", whose weights are their own
        calibration), how the average becomes a log-odds: "platt" (a logistic
        regression on the honest scores, slope held >= 0) or "members" (the same average in the members'
        own log-odds units: mean standard deviation and mean of their honest scores; one member kept:
        exactly its own log-odds; the same ranking, no slope fitted to labels, and the Platt step's
        no-signal rule kept). Measured on radMLBench (docs/models.md): "members" lifts C4KC-KiTS
        0.529 -> 0.589 but costs HNSCC 0.700 -> 0.665, so "platt" stays the default.
    linear_solver : "lbfgs" (default: unpenalised intercept, so the linear member's log-odds centre on
        the training prevalence) or "liblinear" (penalises the intercept with the weights: under a strong
        penalty the log-odds centre near 0 whatever the prevalence; the default before session 7, and
        what stacks pickled without the parameter use). Same L2 penalty on the weights. Over five seeds
        on radMLBench lbfgs is ahead on the tables where that centring matters (docs/models.md).
    random_state : seeds the CV shuffling and the trees.
    """

    def __init__(
        self,
        Cs: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
        cv: int = 5,
        cv_repeats: int = 1,
        n_estimators: int = 500,
        max_features: str | float | None = "sqrt",
        min_samples_leaf: int = 1,
        combine: str = "select",
        calibration: str = "platt",
        linear_solver: str = "lbfgs",
        random_state: int | None = None,
    ):
        self.combine = combine
        self.calibration = calibration
        self.linear_solver = linear_solver
        self.Cs = Cs
        self.cv = cv
        self.cv_repeats = cv_repeats
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state

    def _check_parameters(self) -> None:
        """The choices, checked before the linear CV and the trees are fitted."""
        if self.combine not in ("select", "equal", "learned"):
            raise ValueError(f"combine must be 'equal', 'select' or 'learned', got {self.combine!r}")
        if self.calibration not in ("platt", "members"):
            raise ValueError(f"calibration must be 'members' or 'platt', got {self.calibration!r}")
        if self.combine == "learned" and self.calibration != "platt":
            # the learned weights' logistic regression is its own calibration: nothing would use this
            raise ValueError(f"calibration={self.calibration!r} applies to combine='select' or 'equal', not 'learned'")
        if self.linear_solver not in ("liblinear", "lbfgs"):
            raise ValueError(f"linear_solver must be 'liblinear' or 'lbfgs', got {self.linear_solver!r}")

    def fit(self, X, y):
        self._check_parameters()
        X, y = validate_data(self, X, y, dtype=np.float64)
        self.classes_ = unique_labels(y)
        if len(self.classes_) != 2:
            raise ValueError(f"LinearTreeStack is a binary classifier; got classes {list(self.classes_)}")
        y01 = (y == self.classes_[1]).astype(int)
        # New patients are clipped to the training range of each feature before scoring: a value from
        # an unseen scanner cannot dominate the linear half, and the trees (whose thresholds all lie
        # within that range) score exactly as before. Unlike clipping in IQR units before the fit, it
        # leaves every training value as it is (a 10-IQR clip changed the values of 13-55 % of the
        # features of the radMLBench tables and cost the README's L2-LR 0.05 AUC on C4KC-KiTS, 0.03
        # on Hosny2018B).
        self.feature_min_, self.feature_max_ = X.min(axis=0), X.max(axis=0)
        self.scaler_ = StandardScaler().fit(X)
        Z = self.scaler_.transform(X)
        linear_oof = self._linear_cv(Z, y01)
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
        self.no_signal_ = False
        if self.combine in ("equal", "select"):
            if self.combine == "select":
                # One standard error rule between the members: the one whose honest AUC is lower by
                # more than one standard error of the paired difference (DeLong) is left out.
                diff, se = paired_auc_difference(y01, S[:, 0], S[:, 1])
                self.honest_auc_difference_ = (diff, se)
                if abs(diff) > se:
                    self.stack_mask_ = np.array([diff > 0, diff < 0])
            # Equal weights on the two honest scores in their own standard deviations: learning two
            # weights from 50-300 patients costs more than it gains (measured on radMLBench); the
            # logistic regression on the average only calibrates it.
            z = self._standardise(S, fit=True).mean(axis=1, keepdims=True)
            stacker = self._increasing(LogisticRegression(C=1.0).fit(z, y01), y01)
            if self.calibration == "members":
                if not self.no_signal_:
                    # The average in the members' own log-odds units: the mean of their honest scores'
                    # standard deviations per unit of it, centred on the mean of their honest means.
                    # One member: exactly its own log-odds (the linear fold models' decision, the
                    # forest's vote). The ranking within a fit is the Platt step's; only the scale
                    # and offset are no longer fitted to the labels of the honest scores.
                    stacker.coef_[:] = float(self.stack_scale_.mean())
                    stacker.intercept_[:] = float(self.stack_mean_.mean())
        else:  # learned
            stacker = LogisticRegression(C=1.0).fit(self._standardise(S, fit=True), y01)
            negative = stacker.coef_[0] < 0
            if negative.any() and not negative.all():
                # A model whose honest score ranks patients backwards is dropped, not inverted.
                self.stack_mask_ = ~negative
                stacker = LogisticRegression(C=1.0).fit(self._standardise(S, fit=True), y01)
            elif negative.all():
                # No model ranks the training patients the right way round: no signal, the prevalence.
                self._increasing(stacker, y01, force=True)
        self.stacker_ = stacker
        # Weights of the standardised honest scores (0: dropped), for reports.
        self.weights_ = {"linear": 0.0, "trees": 0.0}
        used = int(self.stack_mask_.sum())
        coef = np.repeat(stacker.coef_[0, 0] / used, used) if self.combine != "learned" else stacker.coef_[0]
        for name, w in zip(np.array(["linear", "trees"])[self.stack_mask_], coef, strict=False):
            self.weights_[str(name)] = float(w)
        return self

    def _increasing(self, stacker: LogisticRegression, y: np.ndarray, force: bool = False) -> LogisticRegression:
        """Keep the calibration non-decreasing in the members' scores.

        Each member is fitted so that a higher score means a higher risk; the calibration step maps
        their average to a probability and must not reverse it. When the honest scores of the
        training patients show no ranking (a slope <= 0, e.g. C4KC-KiTS: 56 patients, out-of-fold AUCs
        0.59 and 0.44), an unconstrained Platt fit inverts every prediction of the model (outer-fold
        AUC 0.31 where its members reached 0.73 and 0.71). The constrained fit (slope >= 0) is then
        the prevalence for every patient: the model says it found no signal. Not the members' order
        with a tiny slope: on noise, a strongly penalised linear model follows the training part's
        class-mean difference, which is anti-correlated with the held-out part's, so that order ranks
        held-out patients backwards (permuted HNSCC labels through fit-table: mean outer-fold AUC
        0.397 with it, 0.463 with the prevalence).
        """
        self.no_signal_ = bool(force or stacker.coef_[0].max() <= 0)
        if self.no_signal_:
            prevalence = float(np.clip(y.mean(), self._eps, 1.0 - self._eps))
            stacker.coef_[:] = 0.0
            stacker.intercept_[:] = np.log(prevalence) - np.log1p(-prevalence)
        return stacker

    def _linear_model(self, C: float, Z: np.ndarray) -> LogisticRegression:
        # linear_solver is "liblinear" or "lbfgs": fit checked it (_check_parameters) before any model
        if self.linear_solver == "liblinear":
            return LogisticRegression(C=C, solver="liblinear", dual=self._dual(Z), max_iter=5000)
        return LogisticRegression(C=C, solver="lbfgs", max_iter=5000)

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
        repeats = max(1, int(self.cv_repeats))
        # Repeated: on 50-100 patients the C that wins one split of the folds is mostly that split's
        # noise (C4KC-KiTS: the README's L2-LR gives 0.567-0.598 with the inner folds shuffled or not).
        splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=self.random_state)
        Cs = [float(c) for c in np.atleast_1d(self.Cs)]
        oof = np.zeros((len(Cs), len(y)))
        aucs = np.zeros((len(Cs), folds * repeats))
        coefs = np.zeros((len(Cs), folds * repeats, Z.shape[1] + 1))
        for f, (train, valid) in enumerate(splitter.split(Z, y)):
            for i, C in enumerate(Cs):
                model = self._linear_model(C, Z).fit(Z[train], y[train])
                coefs[i, f] = np.append(model.coef_[0], model.intercept_[0])
                decision = model.decision_function(Z[valid])
                # Each patient is out of fold once per repeat: the honest score is the mean of those.
                oof[i, valid] += decision / repeats
                aucs[i, f] = roc_auc_score(y[valid], decision) if len(np.unique(y[valid])) == 2 else 0.5
        best = int(np.argmax(aucs.mean(axis=1)))
        self.C_ = Cs[best]
        self.cv_auc_ = float(aucs[best].mean())
        # New patients are scored by the fold models that gave the honest scores (their average is one
        # linear model), not by a refit on every patient: a refit's decisions have another spread than
        # the out-of-fold ones the combination was learnt on, which shifted each outer fold's
        # probabilities differently (C4KC-KiTS: pooled outer AUC 0.48 against 0.54 per fold).
        self.linear_coef_ = coefs[best, :, :-1].mean(axis=0)
        self.linear_intercept_ = float(coefs[best, :, -1].mean())
        return oof[best]

    def __setstate__(self, state: dict) -> None:
        """Stacks pickled before issue 11's changes (one refitted ``linear_`` model, no clipping) keep
        scoring exactly as they did: a registered champion must survive an upgrade of this module."""
        super().__setstate__(state)
        if "calibration" not in state:
            self.calibration = "platt"  # what every stack fitted before the parameter did
        if "linear_solver" not in state:
            self.linear_solver = "liblinear"
        if "linear_" in state and "linear_coef_" not in state:
            self.linear_coef_ = self.linear_.coef_[0]
            self.linear_intercept_ = float(self.linear_.intercept_[0])
            self.feature_min_ = np.full(self.linear_coef_.shape, -np.inf)
            self.feature_max_ = np.full(self.linear_coef_.shape, np.inf)

    def decision_function(self, X) -> np.ndarray:
        check_is_fitted(self, ("stacker_",))
        X = np.clip(validate_data(self, X, reset=False, dtype=np.float64), self.feature_min_, self.feature_max_)
        return self.stacker_.decision_function(self._stacker_input(X, self.scaler_.transform))

    def _stacker_input(self, X: np.ndarray, scale: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """The stacker's input for ``X`` (already clipped to the training range); ``scale`` standardises
        ``X`` for the linear member (scikit-learn's scaler here, the compiled one when serving). A member
        the stack left out (``stack_mask_``) is not computed: its column would be dropped unread."""
        S = np.zeros((X.shape[0], 2))
        if self.stack_mask_[0]:
            S[:, 0] = scale(X) @ self.linear_coef_ + self.linear_intercept_
        if self.stack_mask_[1]:
            # All 500 trees at once (bit-identical to trees_.predict_proba, which loops over them in Python).
            S[:, 1] = _logit(forest_predict_proba(self.trees_, X)[:, 1], self._eps)
        Z = self._standardise(S)
        if self.combine != "learned":
            Z = Z.mean(axis=1, keepdims=True)
        return Z

    def predict_proba(self, X) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.decision_function(X) > 0).astype(int)]
