"""Statistics against scipy/sklearn, direct computation from the definitions, and worked examples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import brier_score_loss, confusion_matrix, f1_score, roc_auc_score, roc_curve

from cagerisk.evaluation import (
    auc_ci_bootstrap,
    auc_ci_delong,
    auc_permutation_test,
    brier_score,
    calibration_intercept_slope,
    calibration_slope_sampling,
    classification_metrics,
    compare_with_readers,
    decision_curve,
    delong_covariance,
    delong_test,
    hosmer_lemeshow,
    inter_reader_kappa,
    mcnemar_paired,
    net_benefit,
    reader_columns,
    recalibration_slopes,
    youden_threshold,
)


def _delong_direct(y, scores):
    """DeLong et al. (1988) from the definition: psi over every (positive, negative) pair."""
    y = np.asarray(y)
    scores = np.atleast_2d(scores)
    k = scores.shape[0]
    m, n = int(y.sum()), int((1 - y).sum())
    v10 = np.zeros((k, m))
    v01 = np.zeros((k, n))
    auc = np.zeros(k)
    for r in range(k):
        pos, neg = scores[r, y == 1], scores[r, y == 0]
        psi = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
        v10[r], v01[r] = psi.mean(axis=1), psi.mean(axis=0)
        auc[r] = psi.mean()
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return auc, s10 / m + s01 / n


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    y = (rng.random(120) < 0.35).astype(int)
    s1 = np.round(y * 1.0 + rng.normal(0, 1, 120), 1)  # rounding makes ties
    s2 = np.round(y * 0.6 + 0.5 * s1 + rng.normal(0, 1, 120), 1)
    return y, s1, s2


def test_delong_auc_and_covariance_match_the_definition(scored):
    y, s1, s2 = scored
    auc, cov = delong_covariance(y, s1, s2)
    auc_ref, cov_ref = _delong_direct(y, np.vstack([s1, s2]))
    np.testing.assert_allclose(auc, auc_ref)
    np.testing.assert_allclose(cov, cov_ref)
    assert auc[0] == pytest.approx(roc_auc_score(y, s1))
    # AUC is the Mann-Whitney U statistic over m * n.
    u = stats.mannwhitneyu(s1[y == 1], s1[y == 0]).statistic
    assert auc[0] == pytest.approx(u / (y.sum() * (1 - y).sum()))


def test_delong_ci_worked_example():
    # Published example of the pauc package (DeLong CI, upper bound clipped at 1): AUC 0.708, 95 % CI 0.378-1.000.
    y = [0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1]
    p = [0.1, 0.35, 0.24, 0.8, 0.2, 0.85, 0.13, 0.85, 0.74, 0.58, 0.71, 0.25]
    ci = auc_ci_delong(y, p)
    assert (round(ci.auc, 3), round(ci.low, 3), round(ci.high, 3)) == (0.708, 0.378, 1.0)


def test_delong_test_against_direct_computation(scored):
    y, s1, s2 = scored
    result = delong_test(y, s1, s2)
    auc, cov = _delong_direct(y, np.vstack([s1, s2]))
    z = (auc[0] - auc[1]) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert result.z == pytest.approx(z)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(z)))
    same = delong_test(y, s1, s1 * 2 + 1)  # same ranking
    assert same.p_value == 1.0 and same.difference == 0.0
    assert same.same_ranking and same.method == "identical ranking" and "identically" in same.note
    assert result.method == "delong" and not result.same_ranking


@pytest.mark.parametrize(("m", "exact_p"), [(2, 2 / 16), (3, 2 / 64)])
def test_delong_zero_variance_with_different_aucs_is_tested_by_permutation(m, exact_p):
    # A perfect score against a constant one: AUC 1.0 vs 0.5, and every DeLong placement value is
    # 0, 1/2 or 1, so the variance is 0 (it used to return p = 1). Swapping the two scores of each
    # patient: of the 2^(2m) swaps only the identity and the full swap reach |difference| = 0.5.
    y = np.repeat([0, 1], m)
    result = delong_test(y, y * 1.0, np.full(2 * m, 0.5))
    assert (result.auc1, result.auc2, result.difference) == (1.0, 0.5, 0.5)
    assert result.method == "permutation" and result.se == 0.0 and "variance is 0" in result.note
    assert result.p_value == pytest.approx(exact_p, abs=0.01)
    large = delong_test(np.repeat([0, 1], 20), np.repeat([0.0, 1.0], 20), np.full(40, 0.5))
    assert large.p_value < 0.001
    # Both perfect with different orders: variance 0 and no difference, so nothing is significant.
    both = delong_test(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]), np.array([0.2, 0.1, 0.9, 0.8]))
    assert both.difference == 0.0 and both.p_value == 1.0 and not both.same_ranking


def test_permutation_test_agrees_with_delong_when_delong_applies(scored):
    y, s1, s2 = scored
    assert auc_permutation_test(y, s1, s2) == pytest.approx(delong_test(y, s1, s2).p_value, abs=0.02)


def test_delong_test_holds_its_size_under_the_null():
    # Two independent noisy copies of one marker have equal AUC: about 5 % of tests reject.
    rng = np.random.default_rng(1)
    rejections = 0
    for _ in range(300):
        y = np.repeat([0, 1], 40)
        base = y * 1.0
        p = delong_test(y, base + rng.normal(0, 1, 80), base + rng.normal(0, 1, 80)).p_value
        rejections += p < 0.05
    assert 0.02 <= rejections / 300 <= 0.09


def test_bootstrap_ci_is_stratified_and_close_to_delong_on_large_samples():
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], [300, 150])
    s = y * 1.0 + rng.normal(0, 1, 450)
    boot = auc_ci_bootstrap(y, s, n_boot=1000, seed=0)
    delong = auc_ci_delong(y, s)
    assert boot.auc == pytest.approx(delong.auc)
    assert boot.low < delong.auc < boot.high
    assert abs(boot.low - delong.low) < 0.02 and abs(boot.high - delong.high) < 0.02
    # Deterministic for a seed.
    assert auc_ci_bootstrap(y, s, n_boot=200, seed=3) == auc_ci_bootstrap(y, s, n_boot=200, seed=3)


def test_youden_threshold_is_the_brute_force_maximum(scored):
    y, s1, _ = scored
    threshold = youden_threshold(y, s1)
    best = max(np.unique(s1), key=lambda t: np.mean(s1[y == 1] >= t) - np.mean(s1[y == 0] >= t))
    j = lambda t: np.mean(s1[y == 1] >= t) - np.mean(s1[y == 0] >= t)  # noqa: E731
    assert j(threshold) == pytest.approx(j(best))
    fpr, tpr, _ = roc_curve(y, s1)
    assert j(threshold) == pytest.approx((tpr - fpr).max())


def test_classification_metrics_match_sklearn(scored):
    y, s1, _ = scored
    m = classification_metrics(y, s1, 0.5)
    pred = (s1 >= 0.5).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["ppv"] == pytest.approx(tp / (tp + fp))
    assert m["npv"] == pytest.approx(tn / (tn + fn))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))


def test_brier_matches_sklearn():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.1, 0.9, 0.6, 0.4, 0.3])
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p))


def test_hosmer_lemeshow_worked_example():
    # 3 groups of 4 patients sorted by risk.
    #   group 1: p = .1 x4, O1 = 1: E1 = 0.4, E0 = 3.6 -> (1-.4)^2/.4 + (3-3.6)^2/3.6 = 0.9 + 0.1 = 1.0
    #   group 2: p = .5 x4, O1 = 2: E1 = 2,   E0 = 2   -> 0
    #   group 3: p = .8 x4, O1 = 2: E1 = 3.2, E0 = 0.8 -> 1.44/3.2 + 1.44/0.8 = 0.45 + 1.8 = 2.25
    # C = 3.25: on 3 - 2 = 1 degree of freedom for the model's own training patients, on 3 for others.
    p = np.repeat([0.1, 0.5, 0.8], 4)
    y = np.array([1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0])
    fitted = hosmer_lemeshow(y, p, n_groups=3, in_sample=True)
    assert fitted.statistic == pytest.approx(3.25)
    assert fitted.df == 1
    assert fitted.p_value == pytest.approx(stats.chi2.sf(3.25, 1))
    assert list(fitted.table["observed"]) == [1, 2, 2]
    held_out = hosmer_lemeshow(y, p, n_groups=3)
    assert held_out.statistic == pytest.approx(3.25)
    assert (held_out.df, held_out.n_groups, held_out.merged) == (3, 3, 0)
    assert held_out.p_value == pytest.approx(stats.chi2.sf(3.25, 3))  # 0.355, not 0.071


def test_hosmer_lemeshow_matches_the_textbook_form():
    # Hosmer & Lemeshow's own notation: C = sum_k (o_k - n_k pbar_k)^2 / (n_k pbar_k (1 - pbar_k)),
    # groups from the sorted probabilities; computed here without the function's code.
    rng = np.random.default_rng(7)
    p = rng.beta(2, 5, 237)
    y = (rng.random(237) < np.clip(p * 1.3, 0, 1)).astype(int)
    order = np.argsort(p, kind="stable")
    c = 0.0
    for idx in np.array_split(order, 10):
        n, o, pbar = len(idx), y[idx].sum(), p[idx].mean()
        c += (o - n * pbar) ** 2 / (n * pbar * (1 - pbar))
    hl = hosmer_lemeshow(y, p)
    assert hl.statistic == pytest.approx(c)
    assert hl.df == 10 and hl.p_value == pytest.approx(stats.chi2.sf(c, 10))


def test_hosmer_lemeshow_degrees_of_freedom_by_simulation():
    # Held out (true probabilities, nothing fitted): C follows chi-square on g = 10 df, so mean ~10 and
    # about 5 % of calibrated models are rejected (g - 2 = 8 df rejected ~13 %). In-sample (logistic
    # regression fitted to the same patients): g - 2 = 8 df.
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(6)
    held, fitted = [], []
    for _ in range(200):
        p = rng.uniform(0.05, 0.95, 300)
        y = (rng.random(300) < p).astype(int)
        held.append(hosmer_lemeshow(y, p))
        x = rng.normal(0, 1, (300, 1))
        y = (rng.random(300) < 1 / (1 + np.exp(0.5 - x[:, 0]))).astype(int)
        f = LogisticRegression(C=1e6, solver="newton-cholesky").fit(x, y).predict_proba(x)[:, 1]
        fitted.append(hosmer_lemeshow(y, f, in_sample=True))
    assert {h.df for h in held} == {10} and {h.df for h in fitted} == {8}
    assert 9.0 < np.mean([h.statistic for h in held]) < 11.5
    assert 6.8 < np.mean([h.statistic for h in fitted]) < 9.2
    assert 0.01 <= np.mean([h.p_value < 0.05 for h in held]) <= 0.09
    assert 0.01 <= np.mean([h.p_value < 0.05 for h in fitted]) <= 0.09


def test_hosmer_lemeshow_merges_groups_with_no_expected_event():
    # 10 patients with probability exactly 0 make the first of 3 groups: E1 = 0 has no chi-square term.
    # It joins the next group (reported), instead of being dropped; 2 groups stay, 2 df held out.
    p = np.concatenate([np.zeros(10), np.full(10, 0.3), np.full(10, 0.6)])
    y = np.concatenate([np.zeros(10), [1, 1, 1, 0, 0, 0, 0, 0, 0, 0], [1] * 5 + [0] * 5]).astype(int)
    hl = hosmer_lemeshow(y, p, n_groups=3)
    assert (hl.n_groups, hl.merged, hl.df) == (2, 1, 2)
    assert list(hl.table["group"]) == ["1-2", "3"]
    # Merged group: 20 patients, O1 = 3, E1 = 3 -> 0; last group O1 = 5, E1 = 6 -> 1/6 + 1/4.
    assert hl.statistic == pytest.approx(1 / 6 + 1 / 4)
    # Probability 1 (E0 = 0) at the top joins the group below.
    top = hosmer_lemeshow(1 - y, 1 - p, n_groups=3)
    assert (top.n_groups, top.merged) == (2, 1) and top.statistic == pytest.approx(hl.statistic)
    # A model certain of "no event" for patients who had one is infinitely miscalibrated, not ignored.
    sure = hosmer_lemeshow(np.array([0, 1, 0, 0]), np.zeros(4), n_groups=2)
    assert sure.statistic == np.inf and sure.p_value == 0.0 and sure.merged == 1


def test_hosmer_lemeshow_calibrated_vs_miscalibrated():
    rng = np.random.default_rng(4)
    p = rng.uniform(0.05, 0.95, 2000)
    y = (rng.random(2000) < p).astype(int)
    assert hosmer_lemeshow(y, p).p_value > 0.01
    assert hosmer_lemeshow(y, np.clip(p * 0.5, 0, 1)).p_value < 1e-6


def test_net_benefit_worked_example():
    # Vickers & Elkin (2006): NB = TP/n - FP/n * pt/(1-pt). 100 patients, 20 with the event; at
    # pt = 20 % the model treats 35: 15 true and 20 false positives -> 0.15 - 0.20 * 0.25 = 0.10.
    # Treat-all: 0.20 - 0.80 * 0.25 = 0.0.
    y = np.array([1] * 20 + [0] * 80)
    p = np.zeros(100)
    p[:15] = 0.9  # 15 of the 20 events called
    p[20:40] = 0.5  # 20 false positives
    assert net_benefit(y, p, [0.2])[0] == pytest.approx(0.10)
    curve = decision_curve(y, {"model": p}, [0.2, 0.5])
    assert curve.loc[0, "model"] == pytest.approx(0.10)
    assert curve.loc[0, "treat_all"] == pytest.approx(0.0)
    assert curve.loc[1, "treat_all"] == pytest.approx(0.2 - 0.8)
    assert (curve["treat_none"] == 0).all()
    with pytest.raises(ValueError):
        net_benefit(y, p, [0.0])


def test_mcnemar_exact_worked_example():
    # Model right and reader wrong on 10 patients, the reverse on 2: exact two-sided binomial
    # p = 2 * P(X <= 2 | n = 12, 1/2) = 2 * (1 + 12 + 66) / 4096.
    y = np.ones(40, dtype=int)
    model = np.ones(40, dtype=int)
    reader = np.ones(40, dtype=int)
    model[:2] = 0  # reader only correct
    reader[2:12] = 0  # model only correct
    result = mcnemar_paired(y, model, reader)
    assert (result["a_only_correct"], result["b_only_correct"]) == (10, 2)
    assert result["p_value"] == pytest.approx(2 * 79 / 4096)


def test_reader_comparison_and_kappa():
    import pandas as pd

    rng = np.random.default_rng(5)
    y = np.repeat([0, 1], 30)
    model = y * 0.5 + rng.uniform(0, 0.6, 60)
    r1 = ((y + rng.normal(0, 0.6, 60)) > 0.5).astype(int)
    r2 = ((y + rng.normal(0, 0.6, 60)) > 0.5).astype(int)
    table = compare_with_readers(y, model, 0.5, {"1": (r1, r1 * 0.8 + 0.1), "2": (r2, None)})
    assert list(table["reader"]) == ["1", "2"]
    assert "delong_p" in table.columns and np.isnan(table.loc[1, "delong_p"])
    kappa = inter_reader_kappa({"1": r1, "2": r2})
    assert kappa.loc[0, "kappa_ci_low"] < kappa.loc[0, "kappa"] < kappa.loc[0, "kappa_ci_high"]
    assert kappa.loc[0, "agreement"] == pytest.approx(np.mean(r1 == r2))
    frame = pd.DataFrame(columns=["patient_id", "reader_1", "reader_1_prob", "reader_2", "cs"])
    assert reader_columns(frame) == {"1": ("reader_1", "reader_1_prob"), "2": ("reader_2", None)}


def _calls_from_table(table, labels):
    """Per-patient calls of two readers from a cross-table of counts (rows: reader A, columns: B)."""
    a, b = [], []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            a += [labels[i]] * count
            b += [labels[j]] * count
    return np.array(a), np.array(b)


def test_kappa_worked_example_with_standard_error():
    # SAS/STAT PROC FREQ, "Getting Started: Agreement Study": two dermatologists rate 88 patients'
    # skin condition; simple kappa 0.3449, ASE 0.0724, 95 % CI 0.2030-0.4868; ASE under H0 0.0612,
    # Z 5.6366. By hand: p_o = 45/88, p_e = (15*17 + 29*20 + 23*31 + 21*20) / 88^2 = 1968/7744.
    table = [[10, 4, 1, 0], [5, 10, 12, 2], [2, 4, 12, 5], [0, 2, 6, 13]]
    a, b = _calls_from_table(table, ["terrible", "poor", "marginal", "clear"])
    kappa = inter_reader_kappa({"derm1": a, "derm2": b})
    row = kappa.iloc[0]
    assert row["n"] == 88
    assert row["kappa"] == pytest.approx((45 / 88 - 1968 / 7744) / (1 - 1968 / 7744))
    assert (round(row["kappa"], 4), round(row["kappa_se"], 4)) == (0.3449, 0.0724)
    assert (round(row["kappa_ci_low"], 4), round(row["kappa_ci_high"], 4)) == (0.2030, 0.4868)
    assert row["kappa_p"] == pytest.approx(2 * stats.norm.sf(5.6366), rel=1e-3)
    assert row["agreement"] == pytest.approx(45 / 88)
    # Binary calls (the readers' CS yes/no): 20 yes-yes, 5 yes-no, 10 no-yes, 15 no-no ->
    # p_o = 0.70, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.50, kappa = 0.40.
    a, b = _calls_from_table([[20, 5], [10, 15]], [1, 0])
    assert inter_reader_kappa({"1": a, "2": b}).loc[0, "kappa"] == pytest.approx(0.40)
    # Both readers call everybody negative: kappa is 0/0, reported as missing, agreement 1.
    same = inter_reader_kappa({"1": np.zeros(5), "2": np.zeros(5)}).iloc[0]
    assert np.isnan(same["kappa"]) and same["agreement"] == 1.0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="both outcomes"):
        auc_ci_delong([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        auc_ci_delong([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="0/1"):
        youden_threshold([0, 2, 1], [0.1, 0.2, 0.3])


def test_calibration_intercept_and_slope_against_independent_fits():
    # Outcomes drawn from logit P(y) = -0.4 + 0.7 logit(p): an overfitted model (slope < 1).
    from scipy.optimize import brentq
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(8)
    lp = rng.normal(-0.5, 1.5, 4000)
    p = 1 / (1 + np.exp(-lp))
    y = (rng.random(4000) < 1 / (1 + np.exp(0.4 - 0.7 * lp))).astype(int)
    fit = calibration_intercept_slope(y, p)
    reference = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-10).fit(lp[:, None], y)
    assert fit.slope == pytest.approx(reference.coef_[0, 0], rel=1e-5)
    assert fit.slope_low < 0.7 < fit.slope_high
    # Calibration-in-the-large: the a that solves sum(y - expit(a + lp)) = 0 (slope fixed at 1).
    a = brentq(lambda a: np.sum(y - 1 / (1 + np.exp(-(a + lp)))), -5, 5, xtol=1e-12)
    assert fit.intercept == pytest.approx(a, abs=1e-6)
    assert fit.intercept_low < fit.intercept < fit.intercept_high
    assert fit.n == 4000 and fit.n_clipped == 0 and fit.note == ""


def test_calibration_intervals_cover_a_calibrated_model():
    # Outcomes drawn from the predicted probabilities themselves: intercept 0 and slope 1 are true.
    rng = np.random.default_rng(9)
    cover_a = cover_b = 0
    for _ in range(150):
        p = 1 / (1 + np.exp(-rng.normal(-0.7, 1.2, 150)))
        y = (rng.random(150) < p).astype(int)
        fit = calibration_intercept_slope(y, p)
        cover_a += fit.intercept_low <= 0 <= fit.intercept_high
        cover_b += fit.slope_low <= 1 <= fit.slope_high
    assert 0.89 <= cover_a / 150 <= 0.99 and 0.89 <= cover_b / 150 <= 0.99


def test_recalibration_slopes_match_calibration_fit_row_by_row():
    # Outcomes drawn from a miscalibrated model, plus the cases calibration_intercept_slope reports as NaN.
    rng = np.random.default_rng(10)
    lp = rng.normal(-1.0, 1.4, 40)
    p = 1 / (1 + np.exp(-lp))
    Y = (rng.random((60, 40)) < 1 / (1 + np.exp(0.3 - 0.6 * lp))).astype(int)
    order = np.argsort(lp)
    Y[0] = 0  # one outcome only
    Y[1] = 0
    Y[1, order[-5:]] = 1  # separated: every case above every control
    slopes = recalibration_slopes(lp, Y)
    reference = np.array([calibration_intercept_slope(y, p).slope for y in Y])
    assert np.isnan(slopes[0]) and np.isnan(slopes[1]) and np.isnan(reference[1])
    np.testing.assert_allclose(slopes[2:], reference[2:], rtol=1e-7)
    # Per-row logits: each row its own patients.
    L = rng.normal(0.0, 1.0, (5, 40))
    Y2 = (rng.random((5, 40)) < 1 / (1 + np.exp(-L))).astype(int)
    per_row = recalibration_slopes(L, Y2)
    direct = [calibration_intercept_slope(y, 1 / (1 + np.exp(-row))).slope for row, y in zip(L, Y2, strict=True)]
    np.testing.assert_allclose(per_row, direct, rtol=1e-7)
    with pytest.raises(ValueError, match="0/1"):
        recalibration_slopes(lp, np.full((2, 40), 2))


def test_calibration_slope_sampling_of_a_calibrated_model():
    rng = np.random.default_rng(11)
    # Many patients: a calibrated model's slope is 1 within a narrow band.
    p = 1 / (1 + np.exp(-rng.normal(-1.2, 1.5, 3000)))
    big = calibration_slope_sampling(p, n_sim=400, seed=1)
    assert big.quantiles["50"] == pytest.approx(1.0, abs=0.02)
    assert big.quantiles["2.5"] > 0.85 and big.quantiles["97.5"] < 1.15 and big.share_in_band == 1.0
    # 30 patients, 6 events: the slope is often far from 1 although the model is calibrated by construction.
    small = calibration_slope_sampling(p[:30], n_sim=4000, events=6, seed=1, observed=2.75)
    assert 0.2 < small.share_in_band < 0.7 and small.quantiles["97.5"] > 2.0
    assert small.quantiles["2.5"] < 0.6 and 0.0 < small.share_as_extreme < 0.2 and small.events == 6
    # The same draws, whatever is asked of them; other seeds differ.
    again = calibration_slope_sampling(p[:30], n_sim=4000, events=6, seed=1, observed=2.75)
    assert again == small
    assert calibration_slope_sampling(p[:30], n_sim=4000, events=6, seed=2).quantiles != small.quantiles


def test_calibration_slope_sampling_refuses_what_it_cannot_draw():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        calibration_slope_sampling(np.array([0.0, 0.5, 0.6, 0.2]))
    with pytest.raises(ValueError, match="events must lie between 1 and 3"):
        calibration_slope_sampling(np.array([0.1, 0.5, 0.6, 0.2]), events=4)
    with pytest.raises(ValueError, match="too rare"):
        calibration_slope_sampling(np.full(40, 1e-4), n_sim=10, events=39)


def test_calibration_fit_degenerate_cases_say_why():
    y = np.array([0, 0, 1, 1, 0, 1])
    separated = calibration_intercept_slope(y, np.array([0.1, 0.2, 0.7, 0.8, 0.3, 0.9]))
    assert np.isnan(separated.slope) and "separate" in separated.note and np.isfinite(separated.intercept)
    zero_one = calibration_intercept_slope(np.array([0, 1, 1, 0, 1, 0]), np.array([0.0, 1.0, 0.0, 0.3, 0.6, 1.0]))
    assert zero_one.n_clipped == 4 and "clipped" in zero_one.note and zero_one.slope < 0.2
    constant = calibration_intercept_slope(y, np.full(6, 0.5))
    assert np.isnan(constant.slope) and constant.intercept == pytest.approx(0.0, abs=1e-9)
