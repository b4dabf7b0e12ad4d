"""ICCFilter: the scikit-learn contract, every way of giving it a table, missing features, the selection slot."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from repro_helpers import compose_with_reproducibility
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import check_estimator

from cagerisk.features import build_selection_steps, selection_report
from cagerisk.features.icc import ICCFilter

# Generic names x0..x199 cover every array check_estimator makes; x1, x4, x7, ... fail 0.75 but x0
# passes, so one-feature checks keep their feature.
GENERIC_TABLE = pd.Series({f"x{i}": (0.9 if i % 3 != 1 else 0.5) for i in range(200)})


@pytest.mark.parametrize("missing", ["drop", "keep"])
def test_check_estimator(missing):
    # Every check runs (check_array_api_input is skipped by scikit-learn when array-api-strict is absent).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_estimator(ICCFilter(table=GENERIC_TABLE, missing=missing))


def _frame(n: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.normal(size=(n, 6)), columns=["good", "edge", "poor", "nan_icc", "unknown", "great"])


ICC = pd.DataFrame(
    {
        "feature": ["good", "edge", "poor", "nan_icc", "great", "not_in_X"],
        "icc2_1": [0.80, 0.75, 0.74, np.nan, 0.99, 0.9],
        "icc3_1": [0.70, 0.90, 0.95, np.nan, 0.99, 0.9],
        "status": ["ok", "ok", "ok", "constant", "ok", "ok"],
    }
)


def test_keeps_icc_at_or_above_threshold_and_drops_nan():
    X = _frame()
    f = ICCFilter(table=ICC).fit(X)
    assert list(f.get_feature_names_out()) == ["good", "edge", "great"]  # 0.75 itself is kept
    assert f.removal_counts_ == {"below_threshold": 1, "icc_nan": 1, "not_in_table": 1}
    np.testing.assert_array_equal(f.transform(X), X[["good", "edge", "great"]].to_numpy())
    assert list(ICCFilter(table=ICC, column="icc3_1").fit(X).get_feature_names_out()) == ["edge", "poor", "great"]
    assert list(ICCFilter(table=ICC, threshold=0.9).fit(X).get_feature_names_out()) == ["great"]
    # NaN inputs pass through (imputation comes later in the pipeline).
    X.iloc[0, 0] = np.nan
    assert np.isnan(ICCFilter(table=ICC).fit_transform(X)[0, 0])


def test_missing_features_policy():
    X = _frame()
    assert "unknown" not in ICCFilter(table=ICC, missing="drop").fit(X).get_feature_names_out()
    kept = ICCFilter(table=ICC, missing="keep").fit(X)
    assert list(kept.get_feature_names_out()) == ["good", "edge", "unknown", "great"]
    assert kept.removal_counts_["not_in_table"] == 0
    with pytest.raises(ValueError, match=r"1 feature\(s\) not in the ICC table.*unknown"):
        ICCFilter(table=ICC, missing="error").fit(X)
    with pytest.raises(ValueError, match="missing must be one of"):
        ICCFilter(table=ICC, missing="ignore").fit(X)


def test_table_from_parquet_csv_series_and_mapping(tmp_path):
    X = _frame()
    expected = ["good", "edge", "great"]
    ICC.to_parquet(tmp_path / "icc.parquet", index=False)
    ICC.to_csv(tmp_path / "icc.csv", index=False)
    for table in (
        tmp_path / "icc.parquet",
        str(tmp_path / "icc.csv"),
        ICC.set_index("feature"),
        ICC.set_index("feature")["icc2_1"],
    ):
        assert list(ICCFilter(table=table).fit(X).get_feature_names_out()) == expected, type(table)
    assert list(ICCFilter(table={"good": 0.8, "great": 0.76}).fit(X).get_feature_names_out()) == ["good", "great"]
    # A rewritten table is read again (the memo is keyed on the file's size and mtime).
    rewritten = ICC.assign(icc2_1=0.1)
    rewritten.loc[rewritten["feature"] == "poor", "icc2_1"] = 0.95
    rewritten.to_parquet(tmp_path / "icc.parquet", index=False)
    assert list(ICCFilter(table=tmp_path / "icc.parquet").fit(X).get_feature_names_out()) == ["poor"]


def test_errors_name_what_is_wrong(tmp_path):
    X = _frame()
    with pytest.raises(FileNotFoundError, match="cagerisk reproducibility"):
        ICCFilter(table=tmp_path / "absent.parquet").fit(X)
    with pytest.raises(ValueError, match="no column 'icc1_1'"):
        ICCFilter(table=ICC, column="icc1_1").fit(X)
    with pytest.raises(ValueError, match="table=None"):
        ICCFilter().fit(X)
    with pytest.raises(ValueError, match="none of the 6 features"):
        ICCFilter(table={"other": 0.9}).fit(X)
    with pytest.raises(ValueError, match="DataFrame whose columns are the feature names"):
        ICCFilter(table=ICC).fit(X.to_numpy())
    with pytest.raises(ValueError, match=r"keeps no feature.*highest 0\.990"):
        ICCFilter(table=ICC, threshold=0.999).fit(X)
    with pytest.raises(ValueError, match="more than once"):
        ICCFilter(table=pd.concat([ICC, ICC])).fit(X)


def test_selection_with_and_without_the_filter_reports_what_each_step_removed(tmp_path):
    """The real selection config: ICC filter first when selection.icc.enabled, counts in the report."""
    rng = np.random.default_rng(3)
    n, p = 80, 40
    y = np.repeat([0, 1], n // 2)
    X = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"t2_disc_original_firstorder_F{i}" for i in range(p)])
    X.iloc[:, :6] += y[:, None] * 1.2  # informative: 0..5; reproducible: even columns
    icc = pd.DataFrame({"feature": X.columns, "icc2_1": np.where(np.arange(p) % 2 == 0, 0.9, 0.4)})
    icc.to_parquet(tmp_path / "icc.parquet", index=False)
    common = [
        f"paths.data={tmp_path}",
        f"selection.icc.filter.table={tmp_path}/icc.parquet",
        "selection.radiomics.lasso.cv=3",
        "selection.radiomics.lasso.n_alphas=10",
    ]

    reports = {}
    for enabled in (True, False):
        cfg = compose_with_reproducibility([*common, f"selection.icc.enabled={str(enabled).lower()}"])
        pipe = Pipeline(build_selection_steps(cfg.selection, "radiomics", seed=0)).fit(X, y)
        reports[enabled] = selection_report(pipe).set_index("step")
        assert (reports[enabled]["n_removed"] == reports[enabled]["n_in"] - reports[enabled]["n_out"]).all()

    with_icc, without = reports[True], reports[False]
    assert list(with_icc.index)[:2] == ["icc", "impute"] and "icc" not in without.index
    assert with_icc.loc["icc", "transformer"] == "ICCFilter"
    assert (with_icc.loc["icc", "n_in"], with_icc.loc["icc", "n_removed"]) == (p, p // 2)
    assert with_icc.loc["ftest", "n_in"] == p // 2 and without.loc["ftest", "n_in"] == p
    # The filter's removals are the odd (non-reproducible) columns, whatever their signal.
    cfg = compose_with_reproducibility([*common, "selection.icc.enabled=true"])
    icc_step = build_selection_steps(cfg.selection, "radiomics")[0][1].fit(X, y)
    assert list(icc_step.get_feature_names_out()) == list(X.columns[::2])
