"""Discrimination, classification, calibration and clinical-utility statistics with confidence intervals.

DeLong's variance uses the placement values of DeLong, DeLong & Clarke-Pearson (1988) computed by
midranks as in Sun & Xu (2014); the tests check it against a direct O(m n) computation and
published values. Net benefit follows Vickers & Elkin (2006).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_curve


def _check_binary(y, *scores) -> tuple[np.ndarray, list[np.ndarray]]:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError("y must be one-dimensional")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"y must be 0/1, got values {sorted(values)}")
    y = y.astype(int)
    out = []
    for s in scores:
        s = np.asarray(s, dtype=np.float64)
        if s.shape != y.shape:
            raise ValueError(f"scores have shape {s.shape}, outcomes {y.shape}")
        if not np.all(np.isfinite(s)):
            raise ValueError("scores contain NaN or infinite values")
        out.append(s)
    return y, out


def _require_both_classes(y: np.ndarray) -> None:
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("AUC needs both outcomes among the patients")


def _placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUC per score row and DeLong's placement values V10 (per positive) and V01 (per negative).

    ``scores``: (k, n). Midranks make ties count one half, as in the Mann-Whitney statistic.
    """
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    rank_all = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    rank_pos = stats.rankdata(pos, axis=1)
    rank_neg = stats.rankdata(neg, axis=1)
    v10 = (rank_all[:, :m] - rank_pos) / n  # fraction of negatives below each positive
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m  # fraction of positives above each negative
    auc = v10.mean(axis=1)
    return auc, v10, v01


def delong_covariance(y, *scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of each score and DeLong's covariance matrix of those AUCs."""
    y, arrays = _check_binary(y, *scores)
    _require_both_classes(y)
    auc, v10, v01 = _placements(y, np.vstack(arrays))
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return auc, s10 / m + s01 / n


@dataclass(frozen=True)
class AUCInterval:
    auc: float
    low: float
    high: float
    se: float
    method: str

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


def auc_ci_delong(y, score, level: float = 0.95) -> AUCInterval:
    """AUC with DeLong's normal-approximation confidence interval (clipped to [0, 1], as pROC does)."""
    auc, cov = delong_covariance(y, score)
    return delong_interval(float(auc[0]), float(np.sqrt(max(cov[0, 0], 0.0))), level)


def delong_interval(auc: float, se: float, level: float = 0.95) -> AUCInterval:
    """The normal-approximation interval ``auc +- z se`` for DeLong's standard error ``se``, clipped to [0, 1]."""
    z = stats.norm.ppf(0.5 + level / 2)
    return AUCInterval(auc, float(max(0.0, auc - z * se)), float(min(1.0, auc + z * se)), se, "delong")


def _fast_auc(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC of each row of ``scores`` (k, n) against one outcome vector, by midranks."""
    ranks = stats.rankdata(scores, axis=1)
    m = y.sum()
    n = len(y) - m
    return (ranks[:, y == 1].sum(axis=1) - m * (m + 1) / 2) / (m * n)


def auc_ci_bootstrap(y, score, level: float = 0.95, n_boot: int = 2000, seed: int = 0, stratified: bool = True) -> AUCInterval:
    """AUC with a percentile bootstrap interval; stratified resampling keeps the numbers of positives
    and negatives fixed, so every resample has both outcomes (pROC's ``stratified = TRUE``)."""
    y, (s,) = _check_binary(y, score)
    _require_both_classes(y)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    aucs = []
    for start in range(0, int(n_boot), 500):
        k = min(500, int(n_boot) - start)
        if stratified:
            idx = np.hstack([rng.choice(pos, (k, len(pos))), rng.choice(neg, (k, len(neg)))])
            yy = np.hstack([np.ones(len(pos), int), np.zeros(len(neg), int)])
            aucs.append(_fast_auc(yy, s[idx]))
        else:
            idx = rng.integers(0, len(y), (k, len(y)))
            for row in idx:
                yb = y[row]
                if 0 < yb.sum() < len(yb):
                    aucs.append(_fast_auc(yb, s[row][None, :]))
    aucs = np.concatenate(aucs)
    alpha = (1 - level) / 2
    auc = float(_fast_auc(y, s[None, :])[0])
    return AUCInterval(
        auc, float(np.quantile(aucs, alpha)), float(np.quantile(aucs, 1 - alpha)), float(np.std(aucs, ddof=1)), "bootstrap"
    )


@dataclass(frozen=True)
class DeLongTest:
    auc1: float
    auc2: float
    difference: float
    se: float
    z: float
    p_value: float
    # "delong"; "permutation" when DeLong's variance is 0 (see delong_test); "identical ranking"
    method: str = "delong"
    same_ranking: bool = False  # both scores order the patients identically: one ROC curve
    note: str = ""

    def as_dict(self) -> dict[str, float | str | bool]:
        return asdict(self)


# DeLong's variance of an AUC difference is a sum of squared placement deviations; below this it is 0
# up to rounding (typical values on 40-300 patients are 1e-4 to 1e-2).
_ZERO_VARIANCE = 1e-12


def auc_permutation_test(y, score1, score2, n_permutations: int = 10000, seed: int = 0) -> float:
    """Two-sided paired permutation p-value for AUC(score1) = AUC(score2) on the same patients.

    Each score is replaced by its rank among all patients over n (the AUC does not change), and under
    the null hypothesis the two scores of a patient are exchangeable: each permutation swaps them
    for a random half of the patients (Venkatraman & Begg 1996, with the AUC difference as statistic).
    p = (1 + #{|d*| >= |d|}) / (1 + permutations), so it is never 0.
    """
    y, (s1, s2) = _check_binary(y, score1, score2)
    _require_both_classes(y)
    n = len(y)
    r1, r2 = stats.rankdata(s1) / n, stats.rankdata(s2) / n
    observed = abs(float(_fast_auc(y, r1[None, :])[0] - _fast_auc(y, r2[None, :])[0]))
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, int(n_permutations), 2000):
        k = min(2000, int(n_permutations) - start)
        swap = rng.random((k, n)) < 0.5
        a, b = np.where(swap, r2, r1), np.where(swap, r1, r2)
        extreme += int(np.sum(np.abs(_fast_auc(y, a) - _fast_auc(y, b)) >= observed - 1e-12))
    return (1 + extreme) / (1 + int(n_permutations))


def delong_test(y, score1, score2, n_permutations: int = 10000, seed: int = 0) -> DeLongTest:
    """Two-sided DeLong test of equal AUCs for two scores of the same patients.

    Two scores that rank the patients identically have one ROC curve: p = 1, ``same_ranking`` set and
    said in ``note``. When DeLong's variance of the difference is 0 otherwise (e.g. a perfect
    classifier against a constant score: every placement value is 0, 1 or 1/2), the normal
    approximation has nothing to work with; the p-value then comes from
    :func:`auc_permutation_test` (``method="permutation"``, ``z`` NaN), which stays honest on small
    samples: AUC 1.0 against a constant score gives p = 2/16 on 2 + 2 patients (only the identity
    and the full swap are as extreme), 2/64 on 3 + 3 and the smallest possible p on 20 + 20.
    """
    auc, cov = delong_covariance(y, score1, score2)
    a1, a2 = float(auc[0]), float(auc[1])
    diff = a1 - a2
    _, (s1, s2) = _check_binary(y, score1, score2)
    if np.array_equal(stats.rankdata(s1), stats.rankdata(s2)):
        note = "the two scores rank the patients identically (one ROC curve): nothing to test"
        return DeLongTest(a1, a2, 0.0, 0.0, 0.0, 1.0, "identical ranking", True, note)
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= _ZERO_VARIANCE:
        p = auc_permutation_test(y, s1, s2, n_permutations, seed)
        note = (
            f"DeLong's variance is 0 (AUCs {a1:.3f} and {a2:.3f}); paired permutation test, "
            f"{n_permutations} permutations, seed {seed}"
        )
        return DeLongTest(a1, a2, diff, 0.0, float("nan"), p, "permutation", False, note)
    z = diff / np.sqrt(var)
    return DeLongTest(a1, a2, diff, float(np.sqrt(var)), float(z), float(2 * stats.norm.sf(abs(z))))


def youden_threshold(y, score) -> float:
    """Threshold maximising sensitivity + specificity - 1 (a patient is positive when score >= threshold).

    Among equal maxima the highest threshold wins (fewest positive calls)."""
    y, (s,) = _check_binary(y, score)
    _require_both_classes(y)
    fpr, tpr, thresholds = roc_curve(y, s)
    j = tpr - fpr
    finite = np.isfinite(thresholds)
    best = np.flatnonzero(finite & (j >= j[finite].max() - 1e-12))[0]
    return float(thresholds[best])


def classification_metrics(y, score, threshold: float) -> dict[str, float]:
    """Confusion counts and ACC, sensitivity, specificity, PPV, NPV, F1 at ``score >= threshold``."""
    y, (s,) = _check_binary(y, score)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    tn = int(np.sum(~pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))

    def ratio(a: int, b: int) -> float:
        return float(a / b) if b else float("nan")

    sens, ppv = ratio(tp, tp + fn), ratio(tp, tp + fp)
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": ratio(tp + tn, len(y)),
        "sensitivity": sens,
        "specificity": ratio(tn, tn + fp),
        "ppv": ppv,
        "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }


def brier_score(y, prob) -> float:
    y, (p,) = _check_binary(y, prob)
    return float(brier_score_loss(y, p))


@dataclass(frozen=True)
class HosmerLemeshow:
    statistic: float
    df: int
    p_value: float
    table: pd.DataFrame
    n_groups: int  # groups actually used, after merging groups with an expected count of 0
    merged: int  # groups merged into a neighbour because an expected count was 0
    in_sample: bool

    def as_dict(self) -> dict[str, float]:
        return {
            "statistic": self.statistic,
            "df": self.df,
            "p_value": self.p_value,
            "n_groups": self.n_groups,
            "merged": self.merged,
        }


def hosmer_lemeshow(y, prob, n_groups: int = 10, in_sample: bool = False) -> HosmerLemeshow:
    """Hosmer-Lemeshow goodness-of-fit test over groups of predicted risk (deciles by default).

    Patients are sorted by predicted probability and cut into ``n_groups`` groups of (nearly) equal
    size; C = sum over groups of (O1 - E1)^2 / E1 + (O0 - E0)^2 / E0. The reference distribution is
    chi-square on ``g - 2`` degrees of freedom only when the probabilities come from a model fitted to
    these same patients (``in_sample=True``: two parameters were estimated from them); on patients the
    model did not see (validation, test, out-of-fold scores) nothing was estimated and it is ``g``
    degrees of freedom (Hosmer, Lemeshow & Sturdivant, Applied Logistic Regression, 3rd ed., 2013,
    section 5.7). The tests check both by simulation.

    A group whose expected count of events (or non-events) is 0 (every probability exactly 0, or 1)
    has no defined term; it is merged into its neighbour toward the middle of the risk range, and the
    merge is counted in ``merged`` and shown in the table, so the degrees of freedom follow the groups
    really used.
    """
    y, (p,) = _check_binary(y, prob)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    g = int(min(n_groups, len(y)))
    minimum = 3 if in_sample else 1
    if g < minimum:
        raise ValueError(f"Hosmer-Lemeshow needs at least {minimum} groups")
    order = np.argsort(p, kind="stable")
    groups = [list(idx) for idx in np.array_split(order, g)]
    labels = [str(k + 1) for k in range(len(groups))]  # which of the requested groups each one holds
    requested = len(groups)

    def merge_direction(k: int) -> int:
        """0 when group k has both expected counts; else -1/+1: the neighbour it joins."""
        e1 = float(p[groups[k]].sum())
        if e1 <= 0.0:  # lowest risks: join the next group up, or down at the top end
            return 1 if k + 1 < len(groups) else -1
        if len(groups[k]) - e1 <= 0.0:  # highest risks: join the next group down
            return -1 if k > 0 else 1
        return 0

    k = 0
    while len(groups) > 1 and k < len(groups):
        step = merge_direction(k)
        if step == 0:
            k += 1
            continue
        lo = min(k, k + step)
        groups[lo : lo + 2] = [groups[lo] + groups[lo + 1]]
        labels[lo : lo + 2] = [f"{labels[lo].split('-')[0]}-{labels[lo + 1].split('-')[-1]}"]
        k = max(0, lo - 1)
    used = len(groups)
    rows = []
    statistic = 0.0
    for k, idx in enumerate(groups):
        o1, e1 = float(y[idx].sum()), float(p[idx].sum())
        o0, e0 = len(idx) - o1, len(idx) - e1
        if e1 <= 0 or e0 <= 0:  # only when every patient has probability exactly 0 (or 1)
            term = 0.0 if (o1 == e1 and o0 == e0) else float("inf")
        else:
            term = (o1 - e1) ** 2 / e1 + (o0 - e0) ** 2 / e0
        statistic += term
        rows.append(
            {"group": labels[k], "n": len(idx), "observed": o1, "expected": e1, "mean_prob": float(p[idx].mean()), "term": term}
        )
    df = used - 2 if in_sample else used
    if df < 1:
        raise ValueError(
            f"Hosmer-Lemeshow: {used} group(s) left after merging groups with an expected count of 0; need {minimum}"
        )
    return HosmerLemeshow(
        float(statistic), int(df), float(stats.chi2.sf(statistic, df)), pd.DataFrame(rows), used, requested - used, in_sample
    )


@dataclass(frozen=True)
class CalibrationFit:
    """Logistic recalibration of predicted probabilities on observed outcomes (Cox 1958).

    ``intercept``: calibration-in-the-large, a in logit P(y) = a + logit(p) (slope fixed at 1): 0 when
    the mean risk is right, > 0 when the model under-predicts. ``slope``: b in logit P(y) = a' + b
    logit(p): 1 ideal, < 1 when predictions are too extreme (overfitting), > 1 too moderate.
    Wald intervals at ``level``. NaN with a ``note`` when not estimable.
    """

    intercept: float
    intercept_low: float
    intercept_high: float
    slope: float
    slope_low: float
    slope_high: float
    n: int
    n_clipped: int  # probabilities moved off exactly 0 or 1 (their logit is infinite)
    note: str = ""

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def calibration_intercept_slope(y, prob, level: float = 0.95, eps: float = 1e-10) -> CalibrationFit:
    """Calibration intercept and slope with Wald confidence intervals (statsmodels' binomial GLM).

    Probabilities are clipped to [eps, 1 - eps] so that 0 and 1 have a finite logit; how many were
    clipped is reported, since a model that gives 0/1 probabilities is badly calibrated whatever the
    clipping. When the outcome is perfectly separated by the predictions the slope is infinite and
    reported as NaN with a note.
    """
    import statsmodels.api as sm  # slow to import; the evaluate stage needs it only here

    y, (p,) = _check_binary(y, prob)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    nan = float("nan")
    clipped = np.clip(p, eps, 1 - eps)
    n_clipped = int(np.sum(clipped != p))
    lp = np.log(clipped / (1 - clipped))
    alpha = 1 - level
    if y.sum() == 0 or y.sum() == len(y):
        return CalibrationFit(nan, nan, nan, nan, nan, nan, len(y), n_clipped, "one outcome only")
    binomial = sm.families.Binomial()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        large = sm.GLM(y, np.ones((len(y), 1)), family=binomial, offset=lp).fit()
    a, (a_low, a_high) = float(large.params[0]), (float(v) for v in large.conf_int(alpha)[0])
    notes = []
    if np.ptp(lp) == 0:
        notes.append("every prediction is the same: no slope")
        b = b_low = b_high = nan
    elif _separated(lp, y)[0]:
        notes.append("the predictions separate the outcomes perfectly: the slope is infinite")
        b = b_low = b_high = nan
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = sm.GLM(y, sm.add_constant(lp, has_constant="add"), family=binomial).fit()
        b = float(fit.params[1])
        b_low, b_high = (float(v) for v in fit.conf_int(alpha)[1])
    if n_clipped:
        notes.append(f"{n_clipped} probabilit{'y' if n_clipped == 1 else 'ies'} of exactly 0 or 1 clipped to {eps:g}")
    return CalibrationFit(a, a_low, a_high, b, b_low, b_high, len(y), n_clipped, "; ".join(notes))


def _separated(logits, outcomes) -> np.ndarray:
    """Per row of ``outcomes`` (0/1; ``logits`` of the same or a broadcastable shape): every case above every
    control, or every case below, so the logistic slope is infinite (also True where one outcome is absent)."""
    Y = np.atleast_2d(outcomes)
    L = np.broadcast_to(logits, Y.shape)
    high0, low0 = np.where(Y == 0, L, -np.inf).max(axis=1), np.where(Y == 0, L, np.inf).min(axis=1)
    high1, low1 = np.where(Y == 1, L, -np.inf).max(axis=1), np.where(Y == 1, L, np.inf).min(axis=1)
    return (high0 < low1) | (high1 < low0)


def recalibration_slopes(logits, outcomes, max_iter: int = 50, tol: float = 1e-10) -> np.ndarray:
    """Calibration slopes b of logit P(y) = a + b * logit for many outcome vectors at once.

    ``outcomes``: (k, n) of 0/1; ``logits``: (n,) shared by every row, or (k, n). Newton's method on each
    row, vectorised; the same maximum-likelihood slope as :func:`calibration_intercept_slope`, without
    the intervals. NaN where it is not estimable as that function reports it (one outcome only, constant
    logits, outcomes separated by the logits) or where Newton's method did not converge.
    """
    Y = np.atleast_2d(np.asarray(outcomes, dtype=np.float64))
    L = np.broadcast_to(np.asarray(logits, dtype=np.float64), Y.shape)
    if not np.all(np.isin(Y, (0.0, 1.0))):
        raise ValueError("outcomes must be 0/1")
    if not np.all(np.isfinite(L)):
        raise ValueError("logits contain NaN or infinite values")
    cases = Y.sum(axis=1)
    one_class = (cases == 0) | (cases == Y.shape[1])
    bad = one_class | (np.ptp(L, axis=1) == 0) | _separated(L, Y)
    a = np.zeros(len(Y))
    b = np.ones(len(Y))
    converged = np.zeros(len(Y), dtype=bool)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(max_iter):
            mu = 1.0 / (1.0 + np.exp(-(a[:, None] + b[:, None] * L)))
            w = mu * (1.0 - mu)
            r = Y - mu
            g0, g1 = r.sum(axis=1), (r * L).sum(axis=1)
            h00, h01, h11 = w.sum(axis=1), (w * L).sum(axis=1), (w * L * L).sum(axis=1)
            det = h00 * h11 - h01 * h01
            da = (h11 * g0 - h01 * g1) / det
            db = (h00 * g1 - h01 * g0) / det
            a, b = a + da, b + db
            converged = np.abs(db) <= tol * np.maximum(1.0, np.abs(b))
            if np.all(converged | bad | ~np.isfinite(b)):
                break
    return np.where(bad | ~converged | ~np.isfinite(b), np.nan, b)


@dataclass(frozen=True)
class SlopeSampling:
    """What calibration slopes a perfectly calibrated model gives on ``n`` patients
    (:func:`calibration_slope_sampling`)."""

    n: int
    events: int | None  # outcomes drawn with exactly this many events; None: unconditional draws
    n_sim: int
    quantiles: dict[str, float]  # of the estimable slopes, at LEVELS: "2.5", "25", "50", "75", "97.5"
    band: tuple[float, float]
    share_in_band: float  # of all draws; a slope that cannot be estimated is outside any band
    share_not_estimable: float
    observed: float | None = None  # a measured slope, if given
    share_as_extreme: float | None = None  # of all draws: slope >= observed if observed >= 1, else <= observed
    LEVELS: ClassVar[tuple[float, ...]] = (2.5, 25.0, 50.0, 75.0, 97.5)  # the quantiles' levels, percent

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def of(
        cls, slopes: np.ndarray, n: int, events: int | None, band: tuple[float, float], observed: float | None = None
    ) -> SlopeSampling:
        """The summary of ``slopes`` (one per draw, NaN where not estimable) drawn on ``n`` patients."""
        finite = slopes[np.isfinite(slopes)]
        values = np.percentile(finite, cls.LEVELS) if len(finite) else np.full(len(cls.LEVELS), np.nan)
        return cls(
            n=n,
            events=events,
            n_sim=len(slopes),
            quantiles={f"{q:g}": float(v) for q, v in zip(cls.LEVELS, values, strict=True)},
            band=(float(band[0]), float(band[1])),
            share_in_band=float(np.mean((slopes >= band[0]) & (slopes <= band[1]))),
            share_not_estimable=float(np.mean(~np.isfinite(slopes))),
            observed=None if observed is None else float(observed),
            share_as_extreme=None
            if observed is None
            else float(np.mean(slopes >= observed) if observed >= 1 else np.mean(slopes <= observed)),
        )


def calibration_slope_sampling(
    prob,
    n_sim: int = 2000,
    events: int | None = None,
    band: tuple[float, float] = (0.7, 1.3),
    seed: int = 0,
    observed: float | None = None,
) -> SlopeSampling:
    """The sampling distribution of the calibration slope when ``prob`` are the patients' true risks.

    Outcomes are drawn from ``prob`` itself (so intercept 0 and slope 1 are true), ``n_sim`` times; with
    ``events``, only draws with exactly that many events are kept (a stratified split fixes the count).
    Each draw's slope is fitted as :func:`calibration_intercept_slope` fits it. Returns its quantiles and
    how often it falls in ``band``: how far from 1 a slope measured on these patients may lie by chance.
    With ``observed`` (a slope measured on these patients), also how often a calibrated model gives one at
    least as far from 1 on the same side. Uses the probabilities only, never observed outcomes.
    """
    p = np.asarray(prob, dtype=np.float64)
    if p.ndim != 1 or len(p) < 3:
        raise ValueError("prob must be one-dimensional with at least 3 patients")
    if not np.all((p > 0) & (p < 1)):
        raise ValueError("probabilities must lie strictly between 0 and 1 (a 0 or 1 has no logit)")
    if events is not None and not 0 < events < len(p):
        raise ValueError(f"events must lie between 1 and {len(p) - 1}, got {events}")
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    n_kept = 0
    for _ in range(1000):
        draws = (rng.random((max(n_sim, 1000), len(p))) < p).astype(np.float64)
        if events is not None:
            draws = draws[draws.sum(axis=1) == events]
        kept.append(draws)
        n_kept += len(draws)
        if n_kept >= n_sim:
            break
    else:
        raise ValueError(f"fewer than {n_sim} draws with {events} events in 1000 batches: the risks make that count too rare")
    Y = np.concatenate(kept)[:n_sim]
    slopes = recalibration_slopes(np.log(p / (1 - p)), Y)
    return SlopeSampling.of(slopes, len(p), events, band, observed)


def net_benefit(y, prob, thresholds) -> np.ndarray:
    """Net benefit of treating patients with prob >= pt: TP/n - FP/n * pt / (1 - pt) (Vickers & Elkin 2006)."""
    y, (p,) = _check_binary(y, prob)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if np.any((thresholds <= 0) | (thresholds >= 1)):
        raise ValueError("threshold probabilities must lie in (0, 1)")
    n = len(y)
    out = np.empty(len(thresholds))
    for i, pt in enumerate(thresholds):
        treat = p >= pt
        tp = np.sum(treat & (y == 1))
        fp = np.sum(treat & (y == 0))
        out[i] = tp / n - fp / n * pt / (1 - pt)
    return out


def decision_curve(y, probs: dict[str, np.ndarray], thresholds=None) -> pd.DataFrame:
    """Net benefit of each model, of treating all and of treating none, over threshold probabilities."""
    thresholds = np.arange(0.01, 1.0, 0.01) if thresholds is None else np.asarray(thresholds)
    y, _ = _check_binary(y)
    prevalence = y.mean()
    frame = pd.DataFrame({"threshold": thresholds})
    for name, p in probs.items():
        frame[name] = net_benefit(y, p, thresholds)
    frame["treat_all"] = prevalence - (1 - prevalence) * thresholds / (1 - thresholds)
    frame["treat_none"] = 0.0
    return frame


def calibration(y, prob, n_bins: int = 5, strategy: str = "quantile") -> pd.DataFrame:
    """Observed event rate against mean predicted probability per bin (sklearn's calibration_curve)."""
    y, (p,) = _check_binary(y, prob)
    observed, predicted = calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
    return pd.DataFrame({"predicted": predicted, "observed": observed})
