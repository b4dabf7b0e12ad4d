"""cagerisk.models.forest: every tree at once gives scikit-learn's forest probabilities exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

from cagerisk.models.ensemble import LinearTreeStack
from cagerisk.models.forest import CompiledForest, compiled_forest, forest_predict_proba


def _data(n: int = 120, p: int = 40, classes: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * rng.choice([1e-3, 1.0, 1e4], size=p)
    y = (X[:, 0] / X[:, 0].std() + X[:, 1] / X[:, 1].std() + rng.normal(size=n) > 0).astype(int)
    if classes == 3:
        y = y + (X[:, 2] > 0.5 * X[:, 2].std())
    return X, y


FORESTS = [
    ExtraTreesClassifier(n_estimators=200, bootstrap=True, random_state=1),
    ExtraTreesClassifier(n_estimators=50, min_samples_leaf=3, max_features=0.5, random_state=2),
    RandomForestClassifier(n_estimators=100, random_state=3),
    RandomForestClassifier(n_estimators=30, max_depth=3, class_weight="balanced", random_state=4),
]


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("forest", FORESTS, ids=lambda f: f"{type(f).__name__}-{f.n_estimators}")
def test_equals_sklearn_predict_proba(forest, classes: int) -> None:
    X, y = _data(classes=classes)
    forest = forest.fit(X, y)
    X_new, _ = _data(n=300, seed=9)
    for rows in (X_new, X_new[:1], X):
        expected = forest.predict_proba(rows)
        got = forest_predict_proba(forest, rows)
        assert got.shape == expected.shape
        # Bit for bit in practice (same casts, same order of additions); the contract is 1e-12.
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
        assert np.array_equal(got, expected)


def test_float32_cast_decides_ties_as_sklearn() -> None:
    """Rows equal to a threshold in float32 but not in float64 must go where scikit-learn sends them."""
    X, y = _data(n=80, p=5)
    forest = ExtraTreesClassifier(n_estimators=40, random_state=0).fit(X, y)
    compiled = compiled_forest(forest)
    split = compiled.left != np.arange(len(compiled.left))
    rows = []
    for node in np.flatnonzero(split)[:200]:
        row = np.zeros(5)
        t = compiled.threshold[node]
        for value in (t, np.nextafter(t, np.inf), np.nextafter(t, -np.inf), float(np.float32(t))):
            r = row.copy()
            r[compiled.feature[node]] = value
            rows.append(r)
    probe = np.array(rows)
    assert np.array_equal(forest_predict_proba(forest, probe), forest.predict_proba(probe))


def test_what_it_does_not_handle_goes_to_sklearn() -> None:
    X, y = _data(n=60, p=6)
    names = [f"c{i}" for i in range(6)]
    named = ExtraTreesClassifier(n_estimators=20, random_state=0).fit(pd.DataFrame(X, columns=names), y)
    frame = pd.DataFrame(X[:5], columns=names)
    assert np.array_equal(forest_predict_proba(named, frame), named.predict_proba(frame))
    forest = ExtraTreesClassifier(n_estimators=20, random_state=0).fit(X, y)
    for bad in (np.full((1, 6), np.inf), np.full((1, 6), 1e300)):  # 1e300 is inf as float32
        with pytest.raises(ValueError) as ours:
            forest_predict_proba(forest, bad)
        with pytest.raises(ValueError) as theirs:
            forest.predict_proba(bad)
        assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError):
        forest_predict_proba(forest, X[:, :5])
    with pytest.raises(ValueError, match="expects 6 features"):
        compiled_forest(forest).predict_proba(X[:, :5])


def test_compiled_once_per_forest_and_refit_recompiles() -> None:
    X, y = _data(n=60, p=6)
    forest = ExtraTreesClassifier(n_estimators=10, random_state=0).fit(X, y)
    first = compiled_forest(forest)
    assert compiled_forest(forest) is first
    assert isinstance(first, CompiledForest)
    forest.set_params(random_state=5).fit(X, 1 - y)
    # A refit replaces estimators_: the cache must not serve the old trees.
    assert np.array_equal(forest_predict_proba(forest, X), forest.predict_proba(X))


def test_linear_tree_stack_probabilities_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack's probability with the compiled trees equals the one from scikit-learn's loop."""
    from cagerisk.models import ensemble

    rng = np.random.default_rng(3)
    X, X_new = rng.normal(size=(90, 30)), rng.normal(size=(50, 30))
    y = (X[:, 0] + 2.0 * rng.normal(size=90) > 0).astype(int)
    for combine in ("select", "equal", "learned"):
        stack = LinearTreeStack(n_estimators=100, combine=combine, random_state=0).fit(X, y)
        got = stack.predict_proba(X_new)
        with monkeypatch.context() as m:
            m.setattr(ensemble, "forest_predict_proba", lambda forest, X: forest.predict_proba(X))
            expected = stack.predict_proba(X_new)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
