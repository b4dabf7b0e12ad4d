"""Selection transformers: the scikit-learn contract, and each against a known answer."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from sklearn.feature_selection import SelectFpr, VarianceThreshold, f_classif
from sklearn.preprocessing import RobustScaler, StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from cagerisk.features import (
    FTestSelector,
    LassoSelector,
    MedianIQRScaler,
    PearsonPruner,
    ZScorePCA,
    build_selection_steps,
    greedy_correlation_prune,
    plot_lasso,
    selection_report,
)


@pytest.mark.parametrize(
    "estimator",
    [
        MedianIQRScaler(),
        MedianIQRScaler(clip=3.0),
        FTestSelector(),
        PearsonPruner(),
        LassoSelector(cv=3, n_alphas=10),
        ZScorePCA(),
        ZScorePCA(n_components=2),
    ],
    ids=lambda e: repr(e),
)
def test_check_estimator(estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_estimator(estimator)


def test_median_iqr_scaler_matches_sklearn_robust_scaler_and_keeps_nan():
    rng = np.random.default_rng(0)
    X = rng.lognormal(size=(50, 4))
    X[:, 2] = 7.0  # zero IQR: centred only
    np.testing.assert_allclose(MedianIQRScaler().fit_transform(X), RobustScaler().fit_transform(X))
    X_nan = X.copy()
    X_nan[3, 1] = np.nan
    out = MedianIQRScaler().fit_transform(X_nan)
    assert np.isnan(out[3, 1]) and np.isfinite(np.delete(out, 3, axis=0)).all()
    clipped = MedianIQRScaler(clip=1.5).fit(X).transform(X * 100)
    assert clipped.max() == pytest.approx(1.5)


def test_ftest_keeps_exactly_the_significant_features():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 40)
    X = rng.normal(size=(80, 30))
    X[:, :4] += y[:, None] * 1.2
    selector = FTestSelector(alpha=0.05).fit(X, y)
    reference = SelectFpr(f_classif, alpha=0.05).fit(X, y)
    np.testing.assert_array_equal(selector.get_support(), reference.get_support())
    assert selector.get_support()[:4].all()
    # Pure noise with a strict alpha: never an empty output, the best p-value is kept.
    noise = FTestSelector(alpha=1e-9, min_features=1).fit(rng.normal(size=(80, 10)), y)
    assert noise.get_support().sum() == 1
    assert noise.get_support()[np.argmin(noise.pvalues_)]


def test_pearson_pruning_removes_the_hub_not_its_neighbours():
    # x0 = z; x1, x2 = z + noise with var 0.15: r(x0, x1) ~ 0.93 > 0.9 but r(x1, x2) ~ 0.87 < 0.9.
    # Greedy removal of the most correlated feature drops x0 only; a pairwise "drop the second"
    # rule would drop x1 and x2 instead.
    rng = np.random.default_rng(2)
    z = rng.normal(size=4000)
    X = np.column_stack(
        [z, z + rng.normal(0, np.sqrt(0.15), 4000), z + rng.normal(0, np.sqrt(0.15), 4000), rng.normal(size=4000)]
    )
    pruner = PearsonPruner(threshold=0.9).fit(X)
    np.testing.assert_array_equal(pruner.get_support(), [False, True, True, True])
    kept = np.corrcoef(pruner.transform(X), rowvar=False)
    assert np.abs(kept[~np.eye(3, dtype=bool)]).max() <= 0.9


def test_greedy_prune_on_a_given_matrix():
    corr = np.array(
        [
            [1.0, 0.95, 0.2, 0.1],
            [0.95, 1.0, 0.92, 0.3],
            [0.2, 0.92, 1.0, 0.1],
            [0.1, 0.3, 0.1, 1.0],
        ]
    )
    # feature 1 is in both high pairs and has the highest mean |r|: removing it clears all pairs.
    np.testing.assert_array_equal(greedy_correlation_prune(corr, 0.9), [True, False, True, True])


def test_lasso_selector_finds_the_sparse_signal_and_stores_its_path():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(150, 40))
    logit = 2.0 * X[:, 0] - 1.5 * X[:, 1] + 1.0 * X[:, 2]
    y = (rng.random(150) < 1 / (1 + np.exp(-logit))).astype(int)
    lasso = LassoSelector(cv=5, n_alphas=30, store_path=True, random_state=0).fit(X, y)
    support = lasso.get_support()
    assert support[:3].all()
    assert support.sum() < 20
    assert lasso.coef_path_.shape == (40, 30)
    # The chosen lambda minimises the mean CV error.
    assert lasso.alpha_ == pytest.approx(lasso.alphas_[np.argmin(lasso.mse_path_.mean(axis=1))])
    capped = LassoSelector(cv=5, n_alphas=30, max_features=2, random_state=0).fit(X, y)
    assert capped.get_support().sum() == 2 and capped.get_support()[:2].all()
    noise = LassoSelector(cv=5, n_alphas=30, random_state=0).fit(rng.normal(size=(150, 10)), rng.permutation(y))
    assert noise.get_support().sum() >= 1


def test_zscore_pca_is_standard_scaler_then_pca():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 12)) @ rng.normal(size=(12, 12)) + 3
    ours = ZScorePCA(n_components=5, whiten=False, random_state=0).fit_transform(X)
    ref = PCA(n_components=5, random_state=0).fit_transform(StandardScaler().fit_transform(X))
    np.testing.assert_allclose(np.abs(ours), np.abs(ref), atol=1e-8)
    frac = ZScorePCA(n_components=0.9).fit(X)
    assert frac.explained_variance_ratio_.sum() >= 0.9
    with pytest.raises(ValueError, match="n_components"):
        ZScorePCA(n_components=1.5).fit(X)


def _selection_cfg(**icc):
    from omegaconf import OmegaConf

    return OmegaConf.create(
        {
            "icc": {
                "enabled": False,
                "apply_to": ["radiomics"],
                "filter": {"_target_": "sklearn.feature_selection.VarianceThreshold", "threshold": 0.5},
                **icc,
            },
            "radiomics": {
                "impute": {"_target_": "sklearn.impute.SimpleImputer", "strategy": "median"},
                "scale": {"_target_": "cagerisk.features.MedianIQRScaler"},
                "ftest": {"_target_": "cagerisk.features.FTestSelector", "alpha": 0.05},
                "pearson": None,
                "lasso": {"_target_": "cagerisk.features.LassoSelector", "cv": 3, "n_alphas": 10},
            },
        }
    )


def test_builder_order_skips_null_steps_and_inserts_the_icc_slot_first():
    steps = build_selection_steps(_selection_cfg(), "radiomics", seed=5)
    assert [name for name, _ in steps] == ["impute", "scale", "ftest", "lasso"]
    assert steps[-1][1].random_state == 5
    with_icc = build_selection_steps(_selection_cfg(enabled=True), "radiomics", seed=5)
    # The real filter is cagerisk.features.icc.ICCFilter (issue 7); any configured transformer slots in.
    assert with_icc[0][0] == "icc" and isinstance(with_icc[0][1], VarianceThreshold)
    assert build_selection_steps(_selection_cfg(enabled=True, apply_to=["deep"]), "radiomics")[0][0] == "impute"
    with pytest.raises(ValueError, match="feature kind"):
        build_selection_steps(_selection_cfg(), "deep")


def test_selection_report_counts_what_each_step_removed():
    from sklearn.pipeline import Pipeline

    rng = np.random.default_rng(6)
    y = np.repeat([0, 1], 45)
    X = pd.DataFrame(rng.normal(size=(90, 25)), columns=[f"f{i}" for i in range(25)])
    X.iloc[:, :3] += y[:, None] * 1.5
    X["const"] = 0.1  # removed by the ICC stand-in (zero variance)
    steps = build_selection_steps(_selection_cfg(enabled=True), "radiomics", seed=0)
    pipe = Pipeline(steps).fit(X, y)
    report = selection_report(pipe).set_index("step")
    assert list(report.index) == ["icc", "impute", "scale", "ftest", "lasso"]
    assert report.loc["icc", "n_in"] == 26 and report.loc["icc", "n_removed"] >= 1
    assert (report["n_removed"] == report["n_in"] - report["n_out"]).all()
    assert (report["n_out"].iloc[:-1].to_numpy() == report["n_in"].iloc[1:].to_numpy()).all()
    assert report.loc["lasso", "n_out"] == pipe.transform(X).shape[1]


def test_plot_lasso_draws_three_panels():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(60, 8))
    y = (X[:, 0] + rng.normal(0, 0.5, 60) > 0).astype(int)
    lasso = LassoSelector(cv=3, n_alphas=15, store_path=True).fit(X, y)
    fig = plot_lasso(lasso, [f"f{i}" for i in range(8)], title="t")
    assert len(fig.axes) == 3
    with pytest.raises(ValueError, match="store_path"):
        plot_lasso(LassoSelector(cv=3, n_alphas=5).fit(X, y), [f"f{i}" for i in range(8)])
