"""cagerisk.models.compiled against scikit-learn's own predict_proba on fitted pipelines of the kinds
the served model holds: the combined / clinical model (ColumnTransformer of signatures, continuous,
binary and categorical inputs, then scaler + logistic regression), the DL-sign (imputer, ZScorePCA,
scaler + logistic regression) and the Rad-sign (imputer + LinearTreeStack)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.feature_selection import VarianceThreshold
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from cagerisk.features.deep import ZScorePCA
from cagerisk.models.clinical import _as_text, clinical_preprocessor, logit_clipped
from cagerisk.models.compiled import CompiledPipeline, compile_pipeline
from cagerisk.models.ensemble import LinearTreeStack

TOL = 1e-12


def zoo_lr() -> Pipeline:
    """The zoo's logistic regression as the demo champion holds it (scaler + LogisticRegressionCV)."""
    return make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(
            Cs=[1e-3, 1e-2, 0.1, 1.0, 10.0],
            cv=3,
            l1_ratios=[0.0],
            max_iter=2000,
            scoring="neg_log_loss",
            use_legacy_attributes=False,
            random_state=0,
        ),
    )


@pytest.fixture(scope="module")
def clinical_table():
    rng = np.random.default_rng(3)
    n = 160
    frame = pd.DataFrame(
        {
            "rad_sign": rng.uniform(0, 1, n),
            "dl_sign": rng.uniform(0, 1, n),
            "age": rng.normal(62, 10, n),
            "osteoporosis": rng.integers(0, 2, n).astype(float),
            "sex": rng.choice(["F", "M"], n),
            "diagnosis": rng.choice(["stenosis", "spondylolisthesis", "herniation"], n),
        }
    )
    frame.loc[::9, "age"] = np.nan
    frame.loc[::7, "osteoporosis"] = np.nan
    frame.loc[0, "rad_sign"] = 0.0  # clipped by logit_clipped
    logit = 2.0 * (frame["rad_sign"] - 0.5) + 1.2 * frame["osteoporosis"].fillna(0) + 0.04 * (frame["age"].fillna(62) - 62)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).to_numpy().astype(int)
    return frame, y


def combined_pipeline(frame: pd.DataFrame, y: np.ndarray, signatures=("rad_sign", "dl_sign")) -> Pipeline:
    variables = ["age", "osteoporosis", "sex", "diagnosis"]
    prepare = clinical_preprocessor(frame, variables, signatures=list(signatures))
    return Pipeline([("prepare", prepare), ("classifier", zoo_lr())]).fit(frame[[*signatures, *variables]], y)


def new_patients() -> pd.DataFrame:
    """Rows a server may see: missing numbers (imputed), the reference and an unseen category,
    probabilities at 0 and 1 (clipped), integers where floats were fitted."""
    return pd.DataFrame(
        {
            "rad_sign": [0.2, 0.0, 1.0, 0.7, 0.5, 0.33],
            "dl_sign": [0.9, 0.5, 0.1, 1e-9, 0.5, 0.66],
            "age": [70.0, np.nan, 45.0, 81.5, np.nan, 60.0],
            "osteoporosis": [1.0, 0.0, np.nan, 1.0, np.nan, 0.0],
            "sex": ["M", "F", "F", "M", "M", "F"],
            "diagnosis": ["stenosis", "herniation", "spondylolisthesis", "unseen-diagnosis", "herniation", "stenosis"],
        }
    )


def assert_close(a, b, tol=TOL):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) <= tol, np.max(np.abs(a - b))


def test_combined_pipeline_equals_sklearn(clinical_table):
    frame, y = clinical_table
    pipe = combined_pipeline(frame, y)
    compiled = compile_pipeline(pipe)
    assert compiled is not None
    rows = new_patients()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unseen category's warning
        expected = pipe.predict_proba(rows)
    assert_close(compiled.predict_proba(rows), expected)
    # a mapping of columns (what the server passes), in another order, with an extra column
    columns = {c: rows[c].to_numpy() for c in reversed(rows.columns)} | {"unused": np.zeros(len(rows))}
    assert_close(compiled.predict_proba(columns), expected)
    # integers where floats were fitted, one row at a time
    ints = rows.assign(osteoporosis=[1, 0, 0, 1, 1, 0], age=[70, 50, 45, 81, 66, 60])
    for i in range(len(ints)):
        one = ints.iloc[[i]]
        assert_close(compiled.predict_proba(one), pipe.predict_proba(one))
    # the training rows themselves
    training = frame[rows.columns]
    assert_close(compiled.predict_proba(training), pipe.predict_proba(training))
    assert_close(compiled.positive_proba(rows), expected[:, 1])


def test_clinical_only_pipeline_equals_sklearn(clinical_table):
    frame, y = clinical_table
    pipe = combined_pipeline(frame, y, signatures=())
    compiled = compile_pipeline(pipe)
    assert compiled is not None
    rows = new_patients().drop(columns=["rad_sign", "dl_sign"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_close(compiled.predict_proba(rows), pipe.predict_proba(rows))


def test_missing_or_non_text_category_goes_to_sklearn(clinical_table):
    """pandas turns a missing category into "nan" or NaN depending on its version: left to scikit-learn."""
    frame, y = clinical_table
    compiled = compile_pipeline(combined_pipeline(frame, y))
    rows = new_patients()
    for value in (None, np.nan, 1):
        odd = rows.astype({"sex": object})
        odd.loc[2, "sex"] = value
        assert compiled.predict_proba(odd) is None
    assert compiled.predict_proba(rows.drop(columns=["age"])) is None  # scikit-learn names the missing column
    assert compiled.predict_proba(rows.assign(age=rows["age"].astype(str))) is None
    assert compiled.predict_proba(rows.assign(age=np.inf)) is None  # scikit-learn raises its error


def test_unknown_category_refused_goes_to_sklearn(clinical_table):
    frame, y = clinical_table
    prepare = ColumnTransformer(
        [
            ("num", StandardScaler(), ["age"]),
            ("cat", OneHotEncoder(handle_unknown="error", sparse_output=False), ["sex", "diagnosis"]),
        ]
    )
    data = frame.assign(age=frame["age"].fillna(60))
    pipe = make_pipeline(prepare, LogisticRegression()).fit(data[["age", "sex", "diagnosis"]], y)
    compiled = compile_pipeline(pipe)
    assert compiled is not None
    rows = new_patients().assign(age=60.0)[["age", "sex", "diagnosis"]]
    known = rows.iloc[[0, 1, 2, 5]]
    assert_close(compiled.predict_proba(known), pipe.predict_proba(known))
    assert compiled.predict_proba(rows) is None
    with pytest.raises(ValueError, match="unknown categor"):
        pipe.predict_proba(rows)


@pytest.fixture(scope="module")
def deep_table():
    rng = np.random.default_rng(5)
    n, k = 120, 40
    latent = rng.normal(size=(n, 3))
    X = latent @ rng.normal(size=(3, k)) + 0.3 * rng.normal(size=(n, k))
    y = (latent[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    frame = pd.DataFrame(X, columns=[f"deep_{j}" for j in range(k)])
    frame.iloc[::11, 3] = np.nan
    frame["deep_39"] = np.nan  # no observed value: the imputer drops it
    return frame, y


def test_dl_sign_pipeline_equals_sklearn(deep_table):
    frame, y = deep_table
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = Pipeline(
            [("impute", SimpleImputer(strategy="median")), ("reduce", ZScorePCA(random_state=0)), ("classifier", zoo_lr())]
        ).fit(frame, y)
    compiled = compile_pipeline(pipe)
    assert compiled is not None
    rng = np.random.default_rng(9)
    new = frame.iloc[:7].copy()
    new.iloc[:, :10] += rng.normal(size=(7, 10))
    new.iloc[1, 5] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # imputer's "skipping features", arrays without names
        expected = pipe.predict_proba(new)
        assert_close(compiled.predict_proba(new), expected)  # named table
        assert_close(compiled.predict_proba(new.to_numpy()), pipe.predict_proba(new.to_numpy()))  # positional
        assert_close(compiled.predict_proba(new.iloc[:1].to_numpy()), pipe.predict_proba(new.iloc[:1].to_numpy()))
    assert compiled.predict_proba(new.to_numpy()[:, :-1]) is None  # wrong width: scikit-learn's error


def test_imputer_keep_empty_and_most_frequent():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 4))
    X[:, 2] = np.nan
    X[::5, 0] = np.nan
    X[:, 3] = rng.integers(0, 3, 60)
    X[::4, 3] = np.nan
    y = (X[:, 1] > 0).astype(int)
    new = np.array([[np.nan, 0.3, np.nan, np.nan], [1.0, -2.0, 5.0, 2.0]])
    for imputer in (
        SimpleImputer(strategy="median", keep_empty_features=True),
        SimpleImputer(strategy="mean"),
        SimpleImputer(strategy="most_frequent"),
        SimpleImputer(strategy="constant", fill_value=-1.0),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe = make_pipeline(imputer, StandardScaler(), LogisticRegression()).fit(X, y)
            expected = pipe.predict_proba(new)
        compiled = compile_pipeline(pipe)
        assert compiled is not None, imputer
        assert_close(compiled.predict_proba(new), expected)


@pytest.mark.parametrize(
    ("combine", "calibration"), [("select", "platt"), ("equal", "platt"), ("learned", "platt"), ("select", "members")]
)
def test_rad_sign_stack_equals_sklearn(combine, calibration):
    """The Rad-sign: imputer + LinearTreeStack, each way of combining its members; values beyond the
    training range (clipped), missing values (imputed)."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(80, 12))
    X[::6, 4] = np.nan
    y = (X[:, 0] + 0.5 * X[:, 1] ** 2 + 0.5 * rng.normal(size=80) > 0.3).astype(int)
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(12)])
    stack = LinearTreeStack(n_estimators=25, combine=combine, calibration=calibration, random_state=0)
    pipe = Pipeline([("impute", SimpleImputer(strategy="median")), ("classifier", stack)]).fit(frame, y)
    compiled = compile_pipeline(pipe)
    assert compiled is not None
    new = np.vstack([X[:6] + 0.1, 10 * rng.normal(size=(3, 12))])
    new[0, 4] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arrays without feature names
        assert_close(compiled.predict_proba(new), pipe.predict_proba(new))
        assert_close(compiled.predict_proba(new[:1]), pipe.predict_proba(new[:1]))
    assert_close(compiled.predict_proba(frame), pipe.predict_proba(frame))


def test_logit_clipped_and_as_text_are_what_the_functions_do():
    from cagerisk.models.compiled import LOGIT_CLIP, _AsText, _LogitClipped

    p = np.array([[0.0, 1e-5], [0.5, 1.0], [0.999999, 0.3]])
    assert np.array_equal(_LogitClipped()(p), logit_clipped(p))
    assert np.array_equal(logit_clipped([0.0]), logit_clipped([LOGIT_CLIP]))
    text = np.array([["M", "stenosis"], ["F", "x"]], dtype=object)
    assert np.array_equal(_AsText()(text), _as_text(text))


@pytest.mark.parametrize(
    "pipe",
    [
        # an unknown step would receive the caller's table
        make_pipeline(VarianceThreshold(), LogisticRegression()),
        # a function it does not know
        make_pipeline(FunctionTransformer(np.log1p), LogisticRegression()),
        # a step after the ColumnTransformer that is itself a ColumnTransformer
        make_pipeline(
            ColumnTransformer([("a", StandardScaler(), ["a"])]),
            ColumnTransformer([("b", StandardScaler(), [0])]),
            LogisticRegression(),
        ),
    ],
)
def test_steps_it_cannot_place_are_not_compiled(pipe):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.uniform(0.1, 2, 40), "b": rng.uniform(0.1, 2, 40)})
    y = np.tile([0, 1], 20)
    pipe.fit(frame, y)
    assert compile_pipeline(pipe) is None


def test_three_classes_are_not_compiled():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, np.arange(60) % 3)
    assert compile_pipeline(pipe) is None
    with pytest.raises(Exception):  # noqa: B017 - any refusal
        CompiledPipeline(pipe)


def test_pipeline_with_passthrough_and_opaque_middle_step():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(70, 6))
    y = (X[:, 0] > 0).astype(int)
    pipe = Pipeline(
        [("scale", StandardScaler()), ("skip", "passthrough"), ("select", VarianceThreshold(0.5)), ("lr", LogisticRegression())]
    ).fit(X, y)
    compiled = compile_pipeline(pipe)
    assert compiled is not None
    assert_close(compiled.predict_proba(X[:9]), pipe.predict_proba(X[:9]))
