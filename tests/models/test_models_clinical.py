"""Clinical logistic regression against statsmodels fitted directly; the encoding of model inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from cagerisk.models.clinical import analyse_clinical, clinical_preprocessor, design_matrix


@pytest.fixture
def clinical():
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "age": rng.normal(62, 10, n),
            "bmi": rng.normal(25, 4, n),
            "sex": rng.choice(["F", "M"], n),
            "diagnosis": rng.choice(["stenosis", "spondylolisthesis", "herniation"], n),
            "osteoporosis": rng.integers(0, 2, n),
        },
        index=[f"P{i}" for i in range(n)],
    )
    logit = -1.0 + 1.6 * frame["osteoporosis"] + 0.06 * (frame["age"] - 62)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).to_numpy().astype(int)
    return frame, y


def test_univariate_and_multivariate_match_statsmodels(clinical):
    frame, y = clinical
    variables = ["age", "bmi", "sex", "diagnosis", "osteoporosis"]
    analysis = analyse_clinical(frame, y, variables)
    # Univariate p of a continuous variable: likelihood-ratio test of Logit(y ~ 1 + age).
    uni = sm.Logit(y, sm.add_constant(frame[["age"]])).fit(disp=0)
    assert analysis.univariate_p["age"] == pytest.approx(uni.llr_pvalue)
    row = analysis.table.query("model == 'univariate' and term == 'age'").iloc[0]
    assert row["odds_ratio"] == pytest.approx(np.exp(uni.params["age"]))
    # Three-level diagnosis: one LR test on two indicator columns.
    design, terms = design_matrix(frame, ["diagnosis"])
    assert terms["diagnosis"] == ["diagnosis[spondylolisthesis]", "diagnosis[herniation]"]
    dx = sm.Logit(y, sm.add_constant(design)).fit(disp=0)
    assert analysis.univariate_p["diagnosis"] == pytest.approx(dx.llr_pvalue)
    # Multivariate model of the variables with univariate p < 0.05; Wald p of each single term.
    entered = [v for v in variables if analysis.univariate_p[v] < 0.05]
    assert {"osteoporosis", "age"} <= set(entered)
    full_design, _ = design_matrix(frame, entered)
    full = sm.Logit(y, sm.add_constant(full_design)).fit(disp=0)
    assert analysis.multivariate_p["osteoporosis"] == pytest.approx(full.pvalues["osteoporosis"])
    assert "osteoporosis" in analysis.significant and "age" in analysis.significant
    assert "bmi" not in analysis.significant


def test_missing_variable_is_named(clinical):
    frame, y = clinical
    with pytest.raises(ValueError, match="smoking"):
        analyse_clinical(frame, y, ["age", "smoking"])


def test_postoperative_variables_are_never_candidate_predictors(clinical):
    # Follow-up is measured after surgery (and longer follow-up finds more subsidence): refused even
    # when the column is there, and absent from the default candidate list.
    from pathlib import Path

    from omegaconf import OmegaConf

    from cagerisk.cohort.schema import CANDIDATE_PREDICTORS, POSTOPERATIVE

    frame, y = clinical
    frame = frame.assign(followup_months=np.where(y == 1, 40.0, 20.0))
    with pytest.raises(ValueError, match=r"followup_months.*after surgery"):
        analyse_clinical(frame, y, ["age", "followup_months"])
    assert POSTOPERATIVE == ("followup_months",) and "followup_months" not in CANDIDATE_PREDICTORS
    default = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "selection" / "default.yaml")
    assert list(default.clinical.variables) == list(CANDIDATE_PREDICTORS)


def test_preprocessor_encodes_signatures_on_the_logit_scale(clinical):
    frame, y = clinical
    frame = frame.assign(rad_sign=np.linspace(0.01, 0.99, len(frame)), dl_sign=0.5)
    prep = clinical_preprocessor(frame, ["age", "sex", "diagnosis", "osteoporosis"], signatures=["rad_sign", "dl_sign"])
    out = prep.fit_transform(frame, y)
    names = list(prep.get_feature_names_out())
    assert names[:2] == ["rad_sign", "dl_sign"]
    assert "sex_M" in names and "diagnosis_spondylolisthesis" in names and "diagnosis_herniation" in names
    rad = out[:, 0]
    logit = np.log(frame["rad_sign"] / (1 - frame["rad_sign"]))
    np.testing.assert_allclose(rad, (logit - logit.mean()) / logit.std(ddof=0), atol=1e-9)
    # An unseen category at prediction time is ignored, not an error.
    odd = frame.iloc[:2].assign(diagnosis="other")
    with pytest.warns(UserWarning, match="unknown categories"):
        assert np.isfinite(prep.transform(odd)).all()
