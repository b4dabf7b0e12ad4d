"""Clinical variables: univariate then multivariate logistic regression (statsmodels), and their encoding.

Variables significant in the multivariate model (p below ``selection.clinical.multivariate_p``)
join the signatures in the combined model and form the clinical model.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from cagerisk.cohort.schema import CLINICAL, POSTOPERATIVE

log = logging.getLogger(__name__)

KINDS: dict[str, str] = {v.name: v.kind for v in CLINICAL}
CATEGORIES: dict[str, tuple[str, ...]] = {v.name: v.categories for v in CLINICAL if v.categories}


@dataclass
class ClinicalAnalysis:
    """Univariate and multivariate logistic regression of the outcome on clinical variables."""

    table: pd.DataFrame  # one row per model term: OR, 95 % CI, p (univariate and multivariate)
    univariate_p: dict[str, float]  # per variable (likelihood-ratio test)
    multivariate_p: dict[str, float]  # per variable entered in the multivariate model
    significant: list[str]  # variables with multivariate p below the threshold


def variable_kind(name: str, values: pd.Series) -> str:
    """Schema kind of a clinical variable; columns outside the schema are judged by their dtype."""
    if name in KINDS:
        return KINDS[name]
    if not pd.api.types.is_numeric_dtype(values):
        return "categorical"
    return "binary" if set(pd.unique(values.dropna())) <= {0, 1} else "continuous"


def design_matrix(frame: pd.DataFrame, variables: Sequence[str]) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Numeric design (no constant) and, per variable, its columns. Categorical variables become
    indicator columns against their first category (the reference)."""
    parts, terms = [], {}
    for name in variables:
        values = frame[name]
        if variable_kind(name, values) == "categorical":
            categories = list(CATEGORIES.get(name) or sorted(pd.unique(values.dropna().astype(str))))
            observed = [c for c in categories if (values.astype(str) == c).any()]
            dummies = pd.DataFrame(
                {f"{name}[{c}]": (values.astype(str) == c).astype(float) for c in observed[1:]}, index=frame.index
            )
            parts.append(dummies)
            terms[name] = list(dummies.columns)
        else:
            parts.append(pd.to_numeric(values, errors="coerce").astype(float).rename(name).to_frame())
            terms[name] = [name]
    design = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=frame.index)
    return design, terms


def _fit_logit(y: np.ndarray, design: pd.DataFrame):
    # statsmodels takes seconds to import; only this analysis needs it.
    import statsmodels.api as sm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sm.Logit(y, sm.add_constant(design, has_constant="add")).fit(disp=0, maxiter=200)


def _lr_test(full, reduced, df: int) -> float:
    statistic = 2.0 * (full.llf - reduced.llf)
    return float(stats.chi2.sf(max(statistic, 0.0), df))


def _term_rows(res, name: str, cols: Sequence[str], model: str, p_variable: float) -> list[dict[str, object]]:
    """One row per design column of ``name`` in a fitted logit: odds ratio with its 95 % CI and p-values."""
    ci = res.conf_int()
    return [
        {
            "variable": name,
            "term": col,
            "model": model,
            "odds_ratio": float(np.exp(res.params[col])),
            "ci_low": float(np.exp(ci.loc[col, 0])),
            "ci_high": float(np.exp(ci.loc[col, 1])),
            "p_term": float(res.pvalues[col]),
            "p_variable": p_variable,
        }
        for col in cols
    ]


def analyse_clinical(
    frame: pd.DataFrame,
    y: np.ndarray,
    variables: Sequence[str],
    univariate_p: float = 0.05,
    multivariate_p: float = 0.05,
) -> ClinicalAnalysis:
    """Univariate logistic regression per variable (likelihood-ratio p), then one multivariate model of
    the variables with univariate p < ``univariate_p``; significant: multivariate p < ``multivariate_p``
    (Wald for a single term, likelihood ratio for a multi-level categorical)."""
    postoperative = [v for v in variables if v in POSTOPERATIVE]
    if postoperative:
        raise ValueError(
            f"clinical variable(s) {postoperative} are measured after surgery and cannot be predictors; "
            "remove them from selection.clinical.variables (Table 1 still reports them)"
        )
    missing = [v for v in variables if v not in frame.columns]
    if missing:
        raise ValueError(f"clinical variable(s) {missing} not in the manifest")
    y = np.asarray(y).astype(int)
    complete = frame[list(variables)].notna().all(axis=1).to_numpy()
    if not complete.all():
        log.warning(
            "clinical analysis: %d patient(s) with a missing value left out: %s",
            int((~complete).sum()),
            list(frame.index[~complete][:10]),
        )
    frame, y = frame.loc[complete], y[complete]
    design, terms = design_matrix(frame, variables)
    null = _fit_logit(y, design.iloc[:, :0])
    rows, uni_p = [], {}
    for name in variables:
        cols = terms[name]
        if not cols or design[cols].nunique().max() < 2:
            log.warning("clinical variable %s is constant in the training split; skipped", name)
            uni_p[name] = float("nan")
            continue
        try:
            res = _fit_logit(y, design[cols])
        except Exception as error:  # noqa: BLE001 - separation etc.: report, do not stop
            log.warning("univariate logistic regression of %s failed: %s", name, error)
            uni_p[name] = float("nan")
            continue
        uni_p[name] = _lr_test(res, null, len(cols))
        rows.extend(_term_rows(res, name, cols, "univariate", uni_p[name]))
    entered = [v for v in variables if np.isfinite(uni_p.get(v, np.nan)) and uni_p[v] < univariate_p]
    multi_p: dict[str, float] = {}
    if entered:
        cols_all = [c for v in entered for c in terms[v]]
        try:
            full = _fit_logit(y, design[cols_all])
            for name in entered:
                cols = terms[name]
                if len(cols) == 1:
                    multi_p[name] = float(full.pvalues[cols[0]])
                else:
                    reduced = _fit_logit(y, design[[c for c in cols_all if c not in cols]])
                    multi_p[name] = _lr_test(full, reduced, len(cols))
                rows.extend(_term_rows(full, name, cols, "multivariate", multi_p[name]))
        except Exception as error:  # noqa: BLE001
            log.warning("multivariate logistic regression failed (%s); using univariate p-values", error)
            multi_p = {v: uni_p[v] for v in entered}
    significant = [v for v in entered if multi_p.get(v, 1.0) < multivariate_p]
    table = pd.DataFrame(rows, columns=["variable", "term", "model", "odds_ratio", "ci_low", "ci_high", "p_term", "p_variable"])
    return ClinicalAnalysis(table=table, univariate_p=uni_p, multivariate_p=multi_p, significant=significant)


def logit_clipped(p):
    """log(p / (1 - p)) with p clipped to [1e-4, 1 - 1e-4]: signatures enter linear models on the logit scale."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def clinical_preprocessor(frame: pd.DataFrame, variables: Sequence[str], signatures: Sequence[str] = ()) -> ColumnTransformer:
    """Encoding of the combined (or clinical) model's inputs, fitted inside each CV fold:
    signature probabilities -> logit -> z-score; continuous -> median impute -> z-score;
    binary -> most-frequent impute; categorical -> one-hot (unknown categories ignored)."""
    transformers = []
    if signatures:
        transformers.append(
            (
                "signature",
                make_pipeline(FunctionTransformer(logit_clipped, feature_names_out="one-to-one"), StandardScaler()),
                list(signatures),
            )
        )
    continuous = [v for v in variables if variable_kind(v, frame[v]) == "continuous"]
    binary = [v for v in variables if variable_kind(v, frame[v]) == "binary"]
    categorical = [v for v in variables if variable_kind(v, frame[v]) == "categorical"]
    if continuous:
        transformers.append(("continuous", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), continuous))
    if binary:
        transformers.append(("binary", SimpleImputer(strategy="most_frequent"), binary))
    if categorical:
        categories = [list(CATEGORIES.get(v) or sorted(pd.unique(frame[v].dropna().astype(str)))) for v in categorical]
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("text", FunctionTransformer(_as_text, feature_names_out="one-to-one")),
                        (
                            "onehot",
                            OneHotEncoder(categories=categories, drop="first", handle_unknown="ignore", sparse_output=False),
                        ),
                    ]
                ),
                categorical,
            )
        )
    if not transformers:
        raise ValueError("the model has no input variable")
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)


def _as_text(frame):
    return pd.DataFrame(frame).astype(str).to_numpy(dtype=object)
