"""The default classifier (LinearTreeStack): honest stacking, usable probabilities, estimator contract."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from cagerisk.models.ensemble import LinearTreeStack
from cagerisk.models.search import degenerate_share


def _table(n=160, p=40, seed=0, kind="linear"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    if kind == "linear":
        score = X[:, :4].sum(axis=1)
    else:  # an interaction no linear model sees
        score = 2.0 * np.sign(X[:, 0] * X[:, 1])
    y = (rng.random(n) < 1 / (1 + np.exp(-score))).astype(int)
    return X, y


def test_linear_cv_scores_are_out_of_fold_and_c_is_the_best_mean_fold_auc():
    X, y = _table()
    model = LinearTreeStack(n_estimators=50, random_state=0).fit(X, y)
    # Reference: the same folds and grid by hand.
    from sklearn.preprocessing import StandardScaler

    Z = StandardScaler().fit_transform(X)
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(Z, y))
    means = []
    for C in model.Cs:
        aucs = [
            roc_auc_score(y[v], LogisticRegression(C=C, solver="liblinear").fit(Z[t], y[t]).decision_function(Z[v]))
            for t, v in folds
        ]
        means.append(np.mean(aucs))
    assert model.C_ == model.Cs[int(np.argmax(means))]
    assert model.cv_auc_ == pytest.approx(max(means))


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


def test_probabilities_are_never_degenerate_and_calibrated_on_average():
    X, y = _table(n=120, p=300, seed=3)  # far more features than patients: separable in-sample
    model = LinearTreeStack(n_estimators=100, random_state=0).fit(X, y)
    # In-sample, where the trees have seen each patient, still inside (0, 1) by the search's measure.
    assert degenerate_share(model.predict_proba(X)[:, 1]) == 0.0
    X_new, y_new = _table(n=3000, p=300, seed=4)
    held = model.predict_proba(X_new)[:, 1]
    assert degenerate_share(held) == 0.0 and np.all((held > 0.01) & (held < 0.99))
    assert abs(held.mean() - y_new.mean()) < 0.1  # Platt step: no drift of the average risk
    np.testing.assert_allclose(model.predict_proba(X_new).sum(axis=1), 1.0)


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
