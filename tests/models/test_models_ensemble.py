"""The default classifier (LinearTreeStack): honest stacking, usable probabilities, estimator contract."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.preprocessing import StandardScaler

from cagerisk.models.ensemble import LinearTreeStack, paired_auc_difference
from cagerisk.models.search import degenerate_share


def _table(n=160, p=40, seed=0, kind="linear"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    if kind == "linear":
        score = X[:, :4].sum(axis=1)
    elif kind == "none":
        score = np.zeros(n)
    else:  # an interaction no linear model sees
        score = 2.0 * np.sign(X[:, 0] * X[:, 1])
    y = (rng.random(n) < 1 / (1 + np.exp(-score))).astype(int)
    return X, y


@pytest.mark.parametrize(("repeats", "solver"), [(1, "lbfgs"), (2, "lbfgs"), (1, "liblinear")])
def test_linear_cv_scores_are_out_of_fold_and_c_is_the_best_mean_fold_auc(repeats, solver):
    X, y = _table()
    kw = {} if solver == "lbfgs" else {"linear_solver": solver}  # lbfgs: the default
    model = LinearTreeStack(n_estimators=50, cv_repeats=repeats, random_state=0, **kw).fit(X, y)
    # Reference: the same folds and grid by hand.
    Z = StandardScaler().fit_transform(X)
    folds = list(RepeatedStratifiedKFold(n_splits=5, n_repeats=repeats, random_state=0).split(Z, y))
    means, oof, fold_models = [], [], []
    for C in model.Cs:
        models = [LogisticRegression(C=C, solver=solver, max_iter=5000).fit(Z[t], y[t]) for t, _ in folds]
        means.append(np.mean([roc_auc_score(y[v], m.decision_function(Z[v])) for m, (_, v) in zip(models, folds, strict=True)]))
        scores = np.zeros(len(y))
        for m, (_, v) in zip(models, folds, strict=True):
            scores[v] += m.decision_function(Z[v]) / repeats
        oof.append(scores)
        fold_models.append(models)
    best = int(np.argmax(means))
    assert model.C_ == model.Cs[best]
    assert model.cv_auc_ == pytest.approx(max(means))
    # The honest score is each patient's mean out-of-fold decision; new patients get the fold models' mean.
    np.testing.assert_allclose(model.honest_scores_[:, 0], oof[best], rtol=1e-6, atol=1e-9)
    X_new = _table(n=50, seed=9)[0]
    Z_new = model.scaler_.transform(np.clip(X_new, X.min(axis=0), X.max(axis=0)))
    expected = np.mean([m.decision_function(Z_new) for m in fold_models[best]], axis=0)
    np.testing.assert_allclose(Z_new @ model.linear_coef_ + model.linear_intercept_, expected, rtol=1e-6, atol=1e-9)


def test_paired_auc_difference_is_delongs():
    from cagerisk.evaluation.metrics import delong_test

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 90)
    a, b = y + rng.normal(size=90), 0.5 * y + rng.normal(size=90)
    b[:15] = 0.0  # ties
    reference = delong_test(y, a, b)
    diff, se = paired_auc_difference(y, a, b)
    assert diff == pytest.approx(reference.auc1 - reference.auc2) and se == pytest.approx(reference.se)


def test_calibration_never_reverses_the_members_and_says_when_it_found_no_signal():
    # Pure noise: on some draws the honest scores of the training patients rank them backwards, and
    # an unconstrained Platt step would then invert every prediction of the model.
    flagged = 0
    for seed in range(8):
        X, y = _table(n=60, p=20, seed=seed, kind="none")
        model = LinearTreeStack(n_estimators=50, random_state=seed).fit(X, y)
        assert model.stacker_.coef_[0, 0] >= 0  # never reversed
        unconstrained = LogisticRegression(C=1.0).fit(model._standardise(model.honest_scores_).mean(axis=1, keepdims=True), y)
        assert model.no_signal_ == (unconstrained.coef_[0, 0] <= 0)
        if model.no_signal_:
            flagged += 1
            X_new = _table(n=200, p=20, seed=100 + seed, kind="none")[0]
            # The prevalence for everyone: no order claimed (not the members' order, which on noise
            # ranks held-out patients backwards more often than not), and no 0/1 either.
            np.testing.assert_allclose(model.predict_proba(X_new)[:, 1], y.mean())
    assert flagged >= 1  # the case under test happened


@pytest.mark.parametrize(("kind", "kept"), [("linear", [True, False]), ("interaction", [False, True])])
def test_select_keeps_the_member_whose_honest_auc_leads_by_more_than_one_se(kind, kept):
    X, y = _table(n=300, p=6 if kind == "interaction" else 40, kind=kind, seed=1)
    model = LinearTreeStack(n_estimators=200, random_state=0).fit(X, y)
    diff, se = model.honest_auc_difference_
    assert abs(diff) > se and list(model.stack_mask_) == kept
    assert model.weights_["linear" if kept[1] else "trees"] == 0.0
    # With the two close (the same linear signal for both), both stay.
    X, y = _table(n=120, p=4, seed=2)
    both = LinearTreeStack(n_estimators=200, random_state=0).fit(X, y)
    diff, se = both.honest_auc_difference_
    assert list(both.stack_mask_) == ([True, True] if abs(diff) <= se else [diff > 0, diff < 0])


def test_new_patients_are_clipped_to_the_training_range():
    X, y = _table(n=100, p=10, seed=6)
    model = LinearTreeStack(n_estimators=50, random_state=0).fit(X, y)
    edge = X[:5].copy()
    edge[:, 0] = X[:, 0].max()
    far = edge.copy()
    far[:, 0] = 1e6  # an unseen scanner's value
    np.testing.assert_allclose(model.predict_proba(far), model.predict_proba(edge))


@pytest.mark.parametrize("kind", ["linear", "interaction"])
def test_the_stack_finds_linear_and_tree_signal_on_held_out_patients(kind):
    p = 40 if kind == "linear" else 6
    X, y = _table(n=300, p=p, kind=kind, seed=1)
    X_new, y_new = _table(n=2000, p=p, kind=kind, seed=2)
    model = LinearTreeStack(n_estimators=200, random_state=0).fit(X, y)
    auc = roc_auc_score(y_new, model.predict_proba(X_new)[:, 1])
    linear_only = roc_auc_score(y_new, LogisticRegression(C=model.C_).fit(X, y).decision_function(X_new))
    if kind == "linear":
        assert auc > 0.7 and auc > linear_only - 0.03  # little lost to the trees' half
    else:
        assert auc > 0.65 and auc > linear_only + 0.1  # the trees' half carries it


@pytest.mark.parametrize("calibration", ["members", "platt"])
def test_probabilities_are_never_degenerate_and_calibrated_on_average(calibration):
    X, y = _table(n=120, p=300, seed=3)  # far more features than patients: separable in-sample
    model = LinearTreeStack(n_estimators=100, calibration=calibration, random_state=0).fit(X, y)
    # In-sample, where the trees have seen each patient, still inside (0, 1) by the search's measure.
    assert degenerate_share(model.predict_proba(X)[:, 1]) == 0.0
    X_new, y_new = _table(n=3000, p=300, seed=4)
    held = model.predict_proba(X_new)[:, 1]
    assert degenerate_share(held) == 0.0 and np.all((held > 1e-4) & (held < 1 - 1e-4))
    true_risk = 1 / (1 + np.exp(-X_new[:, :4].sum(axis=1)))
    extreme = lambda p: np.mean((p < 0.01) | (p > 0.99))  # noqa: E731
    if calibration == "platt":
        # No more extreme than the true risks (the linear member alone can be chosen on this signal).
        assert extreme(held) <= extreme(true_risk)
    else:
        # The members' own log-odds: the linear fold models at a weak penalty on p > n are a little
        # more confident than the truth here (2.8 % beyond 0.01/0.99 against 2.1 %), never far.
        assert extreme(held) <= 1.5 * extreme(true_risk)
    assert abs(held.mean() - y_new.mean()) < 0.1  # no drift of the average risk
    np.testing.assert_allclose(model.predict_proba(X_new).sum(axis=1), 1.0)


@pytest.mark.parametrize(("kind", "p"), [("linear", 40), ("interaction", 6), ("linear", 4)])
def test_members_calibration_keeps_the_ranking_and_gives_the_members_own_log_odds(kind, p):
    """``calibration="members"`` changes the Platt step's scale and offset, never the order within a fit;
    with one member kept it scores exactly as that member (issue 11: on C4KC-KiTS a slope fitted to 56
    honest scores varied 0.04-0.69 between outer folds, costing 0.06 of pooled AUC)."""
    X, y = _table(n=120 if p == 4 else 300, p=p, kind=kind, seed=1 if p != 4 else 2)
    X_new = _table(n=500, p=p, kind=kind, seed=7)[0]
    members = LinearTreeStack(n_estimators=100, calibration="members", random_state=0).fit(X, y)
    platt = LinearTreeStack(n_estimators=100, calibration="platt", random_state=0).fit(X, y)
    assert not members.no_signal_ and list(members.stack_mask_) == list(platt.stack_mask_)
    d_members, d_platt = members.decision_function(X_new), platt.decision_function(X_new)
    np.testing.assert_array_equal(np.argsort(d_members, kind="stable"), np.argsort(d_platt, kind="stable"))
    assert not np.allclose(d_members, d_platt)  # but another scale
    Xc = np.clip(X_new, members.feature_min_, members.feature_max_)
    linear = members.scaler_.transform(Xc) @ members.linear_coef_ + members.linear_intercept_
    eps = 0.5 / members.n_estimators
    trees = np.clip(members.trees_.predict_proba(X_new)[:, 1], eps, 1 - eps)
    trees = np.log(trees) - np.log1p(-trees)
    if list(members.stack_mask_) == [True, False]:
        np.testing.assert_allclose(d_members, linear, rtol=1e-9, atol=1e-9)
    elif list(members.stack_mask_) == [False, True]:
        np.testing.assert_allclose(d_members, trees, rtol=1e-9, atol=1e-9)
    else:  # the equal-weight average of the two standardised scores, in their mean log-odds units
        S = members.honest_scores_
        z = ((np.column_stack([linear, trees]) - S.mean(axis=0)) / S.std(axis=0)).mean(axis=1)
        np.testing.assert_allclose(d_members, S.mean(axis=0).mean() + S.std(axis=0).mean() * z, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="calibration"):
        LinearTreeStack(n_estimators=5, calibration="isotonic").fit(X, y)
    # Learned weights bring their own calibration: asking for the members' scale there is an error,
    # not silently ignored.
    with pytest.raises(ValueError, match="calibration='members' applies to combine='select' or 'equal'"):
        LinearTreeStack(n_estimators=5, combine="learned", calibration="members").fit(X, y)


def test_lbfgs_linear_member_centres_its_log_odds_on_the_prevalence():
    """liblinear penalises the intercept with the weights, so under a strong penalty the linear member's
    log-odds sit near 0 whatever the prevalence (issue 11, HNSCC); lbfgs leaves the intercept free."""
    X, y = _table(n=200, p=30, seed=6)
    y = np.where(np.arange(len(y)) % 4 == 0, y, 0)  # prevalence well below 0.5
    prior = np.log(y.mean()) - np.log1p(-y.mean())
    kw = dict(Cs=(1e-4,), n_estimators=20, random_state=0)
    liblinear = LinearTreeStack(linear_solver="liblinear", **kw).fit(X, y)
    lbfgs = LinearTreeStack(**kw).fit(X, y)  # the default
    assert lbfgs.linear_solver == "lbfgs"
    assert prior < -1.5
    assert abs(liblinear.honest_scores_[:, 0].mean()) < 0.1 and abs(liblinear.linear_intercept_) < 0.1
    assert abs(lbfgs.honest_scores_[:, 0].mean() - prior) < 0.1 and abs(lbfgs.linear_intercept_ - prior) < 0.1
    # The same penalised weights otherwise: the linear members rank patients alike.
    rho = np.corrcoef(liblinear.linear_coef_, lbfgs.linear_coef_)[0, 1]
    assert rho > 0.95
    with pytest.raises(ValueError, match="linear_solver"):
        LinearTreeStack(n_estimators=5, linear_solver="saga").fit(X, y)


def test_clone_refit_is_deterministic_and_string_labels_work():
    X, y = _table(n=80, seed=5)
    a = LinearTreeStack(n_estimators=30, random_state=7).fit(X, y).predict_proba(X)
    b = clone(LinearTreeStack(n_estimators=30, random_state=7)).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    labels = np.where(y == 1, "cs", "no")
    model = LinearTreeStack(n_estimators=30, random_state=7, combine="learned").fit(X, labels)
    assert list(model.classes_) == ["cs", "no"] and set(model.predict(X)) <= {"cs", "no"}
    with pytest.raises(ValueError, match="binary"):
        LinearTreeStack(n_estimators=5).fit(X, np.arange(len(y)) % 3)
    with pytest.raises(ValueError, match="combine"):
        LinearTreeStack(n_estimators=5, combine="max").fit(X, y)


@pytest.mark.parametrize("combine", ["equal", "learned"])
def test_stack_pickled_by_the_previous_version_scores_as_it_did(combine):
    """A champion registered before the issue-11 changes loads and gives its old probabilities.

    The pickles and probabilities in tests/models/data were made with the previous ensemble.py
    (main at 01f5a35: refitted linear model, no clipping), scikit-learn as pinned.
    """
    import json
    from pathlib import Path

    import joblib

    data = Path(__file__).parent / "data"
    expected = json.loads((data / "legacy_stack.json").read_text())
    stack = joblib.load(data / f"legacy_stack_{combine}.joblib")
    got = stack.predict_proba(np.asarray(expected["X_new"]))[:, 1]
    np.testing.assert_allclose(got, expected["p"][combine], rtol=0, atol=1e-12)
