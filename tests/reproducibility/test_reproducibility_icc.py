"""ICC(2,1) and ICC(3,1): Shrout & Fleiss' worked example, pingouin's own numbers, and the edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from repro_helpers import SHROUT_FLEISS

from cagerisk.reproducibility import feature_icc, two_way_icc


@pytest.fixture
def pingouin_unrounded(monkeypatch):
    # pingouin rounds its CI column to 2 decimals by default; compare against the full numbers.
    monkeypatch.setitem(pg.options, "round.column.CI95", None)


def pingouin_icc(ratings: np.ndarray) -> pd.DataFrame:
    """pingouin.intraclass_corr of a (targets, raters) array, indexed by ICC type."""
    long = pd.DataFrame(
        [(i, j, ratings[i, j]) for i in range(ratings.shape[0]) for j in range(ratings.shape[1])],
        columns=["target", "rater", "rating"],
    )
    return pg.intraclass_corr(long, targets="target", raters="rater", ratings="rating", nan_policy="omit").set_index("Type")


def assert_matches_pingouin(ours: pd.Series, ratings: np.ndarray) -> None:
    ref = pingouin_icc(ratings)
    for ours_key, ref_key in (("icc2_1", "ICC(A,1)"), ("icc3_1", "ICC(C,1)")):
        np.testing.assert_allclose(ours[ours_key], ref.loc[ref_key, "ICC"], rtol=1e-10)
        np.testing.assert_allclose([ours[f"{ours_key}_ci_low"], ours[f"{ours_key}_ci_high"]], ref.loc[ref_key, "CI95"], rtol=1e-9)
        np.testing.assert_allclose(ours["f_value"], ref.loc[ref_key, "F"], rtol=1e-10)
        np.testing.assert_allclose(ours["p_value"], ref.loc[ref_key, "pval"], rtol=1e-8)
        assert ours["df1"] == ref.loc[ref_key, "df1"] and ours["df2"] == ref.loc[ref_key, "df2"]


def test_shrout_fleiss_worked_example(pingouin_unrounded):
    result = two_way_icc(SHROUT_FLEISS).iloc[0]
    # The published values (Shrout & Fleiss 1979, Table 4).
    assert round(result["icc2_1"], 2) == 0.29
    assert round(result["icc3_1"], 2) == 0.71
    assert result["status"] == "ok" and result["n_targets"] == 6
    # Their ANOVA (Table 3): BMS = 11.24, JMS = 32.49, EMS = 1.02.
    assert (round(result["ms_targets"], 2), round(result["ms_raters"], 2), round(result["ms_error"], 2)) == (11.24, 32.49, 1.02)
    assert_matches_pingouin(result, SHROUT_FLEISS)


def test_pingouin_documented_wine_example(pingouin_unrounded):
    # pingouin's docstring example: 8 wines x 4 judges -> ICC(A,1) 0.728, ICC(C,1) 0.729, CI [0.43, 0.93].
    wine = pg.read_dataset("icc").pivot(index="Wine", columns="Judge", values="Scores").to_numpy(float)
    result = two_way_icc(wine).iloc[0]
    assert round(result["icc2_1"], 3) == 0.728 and round(result["icc3_1"], 3) == 0.729
    assert [round(result["icc2_1_ci_low"], 2), round(result["icc2_1_ci_high"], 2)] == [0.43, 0.93]
    assert_matches_pingouin(result, wine)


def test_vectorised_matches_pingouin_feature_by_feature_with_missing_values(pingouin_unrounded):
    rng = np.random.default_rng(11)
    n, k, p = 25, 3, 12
    truth = rng.normal(0, 1, size=(n, 1, p)) * rng.uniform(0.2, 3, size=p)
    ratings = truth + rng.normal(0, 0.6, size=(n, k, p)) + rng.normal(0, 0.4, size=(1, k, p))
    ratings[rng.random((n, k, p)) < 0.04] = np.nan  # a patient missing a value drops out of that feature only
    result = two_way_icc(ratings)
    for f in range(p):
        complete = np.isfinite(ratings[:, :, f]).all(axis=1)
        assert result.loc[f, "n_targets"] == complete.sum()
        assert_matches_pingouin(result.loc[f], ratings[complete, :, f])


def test_identical_readers_give_exactly_one():
    rng = np.random.default_rng(2)
    values = rng.lognormal(3, 2, size=(7, 1, 50)) * 10.0 ** rng.integers(-8, 9, size=50)  # any magnitude
    result = two_way_icc(np.repeat(values, 2, axis=1))
    assert (result["status"] == "identical").all()
    for column in ("icc2_1", "icc3_1", "icc2_1_ci_low", "icc2_1_ci_high", "icc3_1_ci_low", "icc3_1_ci_high"):
        assert (result[column] == 1.0).all(), column
    assert np.isinf(result["f_value"]).all() and (result["p_value"] == 0).all()


def test_constant_too_few_and_offset_features_are_explicit():
    n = 6
    ratings = np.zeros((n, 2, 4))
    ratings[:, :, 0] = 3.5  # constant everywhere: ICC undefined
    ratings[:, 0, 1] = np.arange(n)  # only 2 complete patients
    ratings[:, 1, 1] = np.arange(n)
    ratings[2:, 1, 1] = np.nan
    ratings[:, 0, 2] = np.arange(n)  # reader 2 = reader 1 + 5: perfect consistency, imperfect agreement
    ratings[:, 1, 2] = np.arange(n) + 5.0
    ratings[:, 0, 3] = 1.0  # patients identical, readers differ: no between-patient variance, ICC <= 0
    ratings[:, 1, 3] = [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]
    result = two_way_icc(ratings, min_targets=3)
    assert result.loc[0, "status"] == "constant" and np.isnan(result.loc[0, ["icc2_1", "icc3_1", "p_value"]].astype(float)).all()
    assert result.loc[1, "status"] == "too_few_patients" and result.loc[1, "n_targets"] == 2
    assert np.isnan(result.loc[1, "icc2_1"])
    assert result.loc[2, "status"] == "ok"
    assert result.loc[2, "icc3_1"] == 1.0 and 0 < result.loc[2, "icc2_1"] < 1
    assert result.loc[2, "icc2_1"] == pytest.approx(3.5 / (3.5 + 25 / 2))  # var(targets) / (var + offset^2/2)
    assert result.loc[3, "status"] == "ok" and result.loc[3, "icc2_1"] <= 0 and result.loc[3, "icc3_1"] <= 0


def test_icc_is_invariant_to_units_and_reader_order_and_icc3_ignores_reader_bias():
    rng = np.random.default_rng(5)
    ratings = rng.normal(size=(15, 1, 8)) + rng.normal(0, 0.5, size=(15, 2, 8))
    base = two_way_icc(ratings)
    cols = ["icc2_1", "icc3_1", "icc2_1_ci_low", "icc3_1_ci_high"]
    np.testing.assert_allclose(two_way_icc(ratings * 1e6 - 3e4)[cols], base[cols], rtol=1e-9)
    np.testing.assert_allclose(two_way_icc(ratings[:, ::-1])[cols], base[cols], rtol=1e-12)
    biased = ratings.copy()
    biased[:, 1] += 2.0
    shifted = two_way_icc(biased)
    np.testing.assert_allclose(shifted["icc3_1"], base["icc3_1"], rtol=1e-9)
    assert (shifted["icc2_1"] < base["icc2_1"]).all()


def test_feature_icc_matches_patients_by_index_and_keeps_column_order():
    rng = np.random.default_rng(8)
    patients = [f"P{i:03d}" for i in range(10)]
    r1 = pd.DataFrame(rng.normal(size=(10, 3)), index=patients, columns=["b", "a", "c"])
    r2 = r1 + rng.normal(0, 0.3, size=(10, 3))
    shuffled = r2.sample(frac=1.0, random_state=1)[["c", "a", "b"]]
    extra = pd.concat([shuffled, pd.DataFrame(rng.normal(size=(1, 3)), index=["P999"], columns=["c", "a", "b"])])
    result = feature_icc([r1, extra])
    assert list(result.index) == ["b", "a", "c"] and (result["n_targets"] == 10).all()
    expected = two_way_icc(np.stack([r1.to_numpy(), r2[r1.columns].to_numpy()], axis=1))
    np.testing.assert_allclose(result["icc2_1"].to_numpy(), expected["icc2_1"].to_numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="lacks 1 feature"):
        feature_icc([r1, r2.drop(columns="a")])


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="at least 2 raters"):
        two_way_icc(np.ones((5, 1)))
    with pytest.raises(ValueError, match="shape"):
        two_way_icc(np.ones(5))
