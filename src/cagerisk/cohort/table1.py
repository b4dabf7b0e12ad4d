"""Table 1: baseline characteristics per split, with the study's tests.

Within each split, CS and non-CS patients are compared: continuous variables by Student's t-test when
both groups look normal (Shapiro-Wilk p > 0.05) and Levene's test finds equal variances, Welch's
t-test when the variances differ, and the Mann-Whitney U test when a group is not normal; categorical
variables by Pearson's chi-square test, or Fisher's exact test when an expected count is below 5.
Across the three splits: one-way ANOVA (normal groups) or Kruskal-Wallis, and chi-square/Fisher.

Every p-value is the same on every run, so DVC sees an unchanged Table 1: Fisher's test on tables
larger than 2 x 2 (Freeman-Halton) enumerates every table with the observed margins when there are at
most ``EXACT_TABLE_LIMIT`` of them; beyond that it draws ``MONTE_CARLO_TABLES`` random tables with a
fixed seed, and the test column says so ("Fisher exact (Monte Carlo, 100000 tables, seed 0)").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import gammaln

from cagerisk.cohort.schema import OUTCOME, SPLITS

ALPHA = 0.05
EXACT_TABLE_LIMIT = 2_000_000  # tables enumerated for an exact r x c Fisher test (about a second)
MONTE_CARLO_TABLES = 100_000  # beyond that: Monte Carlo p-value, standard error <= 0.0016
FISHER_SEED = 0


@dataclass(frozen=True)
class Table1Variable:
    name: str
    label: str
    kind: str  # "continuous" or "categorical"


TABLE1_VARIABLES: tuple[Table1Variable, ...] = (
    Table1Variable("sex", "Sex", "categorical"),
    Table1Variable("age", "Age (years)", "continuous"),
    Table1Variable("bmi", "BMI (kg/m^2)", "continuous"),
    Table1Variable("diagnosis", "Diagnosis", "categorical"),
    Table1Variable("n_levels", "Fused levels", "categorical"),
    Table1Variable("osteoporosis", "Osteoporosis", "categorical"),
    Table1Variable("followup_months", "Follow-up (months)", "continuous"),
)


@dataclass(frozen=True)
class TestResult:
    test: str
    p_value: float


def is_normal(values: np.ndarray) -> bool:
    values = values[np.isfinite(values)]
    if len(values) < 3 or np.ptp(values) == 0:
        return False
    return bool(stats.shapiro(values).pvalue > ALPHA)


def compare_two_continuous(a: np.ndarray, b: np.ndarray) -> TestResult:
    """t-test after Levene (Welch when variances differ), Mann-Whitney when not normal."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return TestResult("n/a", float("nan"))
    if is_normal(a) and is_normal(b):
        equal = bool(stats.levene(a, b).pvalue > ALPHA)
        p = stats.ttest_ind(a, b, equal_var=equal).pvalue
        return TestResult("t-test" if equal else "Welch t-test", float(p))
    return TestResult("Mann-Whitney U", float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue))


def compare_many_continuous(groups: Sequence[np.ndarray]) -> TestResult:
    groups = [np.asarray(g, float) for g in groups if len(g) >= 2]
    if len(groups) < 2:
        return TestResult("n/a", float("nan"))
    if all(is_normal(g) for g in groups):
        return TestResult("ANOVA", float(stats.f_oneway(*groups).pvalue))
    return TestResult("Kruskal-Wallis", float(stats.kruskal(*groups).pvalue))


def compare_categorical(table: np.ndarray, seed: int = FISHER_SEED) -> TestResult:
    """Chi-square, or Fisher's exact test when an expected count is below 5 (exact enumeration for
    r x c tables when feasible, else a Monte Carlo p-value with ``seed``, named in the result)."""
    table = np.asarray(table, dtype=int)
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    if table.shape[0] < 2 or table.shape[1] < 2:
        return TestResult("n/a", float("nan"))
    expected = stats.contingency.expected_freq(table)
    if (expected < 5).any():
        if table.shape == (2, 2):
            return TestResult("Fisher exact", float(stats.fisher_exact(table).pvalue))
        try:
            return TestResult("Fisher exact", fisher_exact_rxc(table))
        except TooManyTables:
            method = stats.MonteCarloMethod(n_resamples=MONTE_CARLO_TABLES, rng=np.random.default_rng(seed))
            p = float(np.ravel(stats.fisher_exact(table, method=method).pvalue)[0])
            return TestResult(f"Fisher exact (Monte Carlo, {MONTE_CARLO_TABLES} tables, seed {seed})", p)
    correction = table.shape == (2, 2)
    return TestResult("chi-square", float(stats.chi2_contingency(table, correction=correction).pvalue))


class TooManyTables(RuntimeError):
    """More tables with the observed margins than an exact Fisher test will enumerate."""


def _column_vectors(remaining: np.ndarray, total: int) -> np.ndarray:
    """Every count vector v (one entry per row) with 0 <= v <= remaining and sum(v) == total."""
    if len(remaining) == 1:
        return np.array([[total]]) if total <= remaining[0] else np.empty((0, 1), dtype=np.int64)
    grids = np.meshgrid(*[np.arange(min(int(x), total) + 1) for x in remaining[:-1]], indexing="ij")
    head = np.stack([g.ravel() for g in grids], axis=1)
    last = total - head.sum(axis=1)
    ok = (last >= 0) & (last <= remaining[-1])
    return np.column_stack([head[ok], last[ok]]).astype(np.int64)


def _log_weights(remaining: np.ndarray, columns: np.ndarray, limit: int, count: list[int]) -> np.ndarray:
    """-sum log(n_ij!) of every completion of a table, column by column; the last two columns at once."""
    if len(columns) == 1:
        return np.array([-gammaln(remaining + 1).sum()])
    vectors = _column_vectors(remaining, int(columns[0]))
    own = -gammaln(vectors + 1).sum(axis=1)
    if len(columns) == 2:  # the last column is what is left of each row
        count[0] += len(vectors)
        if count[0] > limit:
            raise TooManyTables(f"more than {limit} tables")
        return own - gammaln(remaining - vectors + 1).sum(axis=1)
    parts = [term + _log_weights(remaining - v, columns[1:], limit, count) for v, term in zip(vectors, own, strict=False)]
    return np.concatenate(parts) if parts else np.empty(0)


def fisher_exact_rxc(table: np.ndarray, limit: int | None = None) -> float:
    """Exact Fisher (Freeman-Halton) p-value of an r x c table: the total probability, under
    independence with both margins fixed, of the tables no more probable than the observed one
    (with R's relative tolerance of 1e-7). Enumerates every table; raises :class:`TooManyTables`
    beyond ``limit`` of them (default ``EXACT_TABLE_LIMIT``). Checked against scipy (2 x 2), a brute-force enumeration and R's
    ``fisher.test(Job)`` (p = 0.7827)."""
    limit = EXACT_TABLE_LIMIT if limit is None else int(limit)
    table = np.asarray(table, dtype=np.int64)
    if table.shape[0] < table.shape[1]:
        table = table.T  # fewer columns: fewer nested loops
    rows, columns = table.sum(axis=1), table.sum(axis=0)
    n = int(table.sum())
    constant = gammaln(rows + 1).sum() + gammaln(columns + 1).sum() - gammaln(n + 1)
    log_p = constant + _log_weights(rows, np.sort(columns), limit, [0])
    observed = constant - gammaln(table + 1).sum()
    # Normalised by the enumerated total (1 up to rounding), so "every table" gives exactly 1.
    weights = np.exp(log_p - log_p.max())
    return float(min(1.0, weights[log_p <= observed + np.log1p(1e-7)].sum() / weights.sum()))


def describe_continuous(values: pd.Series) -> str:
    v = values.astype(float)
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else (f"{v.mean():.1f}" if len(v) else "-")


def build_table1(manifest: pd.DataFrame, splits: Sequence[str] = SPLITS) -> pd.DataFrame:
    """One row per variable level: counts or mean ± SD per split and outcome group, with p-values."""
    rows = []
    present = [s for s in splits if (manifest["split"] == s).any()]
    for var in TABLE1_VARIABLES:
        if var.name not in manifest.columns:
            continue
        data = manifest[[var.name, OUTCOME, "split"]].dropna(subset=[var.name])
        if var.kind == "continuous":
            row: dict[str, object] = {"variable": var.label, "level": ""}
            for s in present:
                part = data[data["split"] == s]
                cs, no = part[part[OUTCOME] == 1][var.name], part[part[OUTCOME] == 0][var.name]
                row[f"{s} CS"] = describe_continuous(cs)
                row[f"{s} non-CS"] = describe_continuous(no)
                res = compare_two_continuous(cs.to_numpy(float), no.to_numpy(float))
                row[f"{s} p"], row[f"{s} test"] = res.p_value, res.test
            res = compare_many_continuous([data[data["split"] == s][var.name].to_numpy(float) for s in present])
            row["splits p"], row["splits test"] = res.p_value, res.test
            rows.append(row)
            continue
        levels = sorted(data[var.name].astype(str).unique())
        tests: dict[str, TestResult] = {}
        for s in present:
            part = data[data["split"] == s]
            table = pd.crosstab(part[var.name].astype(str), part[OUTCOME]).reindex(index=levels, columns=[1, 0], fill_value=0)
            tests[s] = compare_categorical(table.to_numpy())
        across = pd.crosstab(data[var.name].astype(str), data["split"]).reindex(index=levels, columns=present, fill_value=0)
        across_test = compare_categorical(across.to_numpy())
        for i, level in enumerate(levels):
            row = {"variable": var.label, "level": level}
            for s in present:
                part = data[data["split"] == s]
                for group, name in ((1, "CS"), (0, "non-CS")):
                    sub = part[part[OUTCOME] == group]
                    k = int((sub[var.name].astype(str) == level).sum())
                    row[f"{s} {name}"] = f"{k} ({100.0 * k / len(sub):.1f}%)" if len(sub) else "0"
                row[f"{s} p"] = tests[s].p_value if i == 0 else np.nan
                row[f"{s} test"] = tests[s].test if i == 0 else ""
            row["splits p"] = across_test.p_value if i == 0 else np.nan
            row["splits test"] = across_test.test if i == 0 else ""
            rows.append(row)
    header = {"variable": "Patients", "level": ""}
    for s in present:
        part = manifest[manifest["split"] == s]
        header[f"{s} CS"] = str(int((part[OUTCOME] == 1).sum()))
        header[f"{s} non-CS"] = str(int((part[OUTCOME] == 0).sum()))
    return pd.DataFrame([header, *rows])


def table1_markdown(table: pd.DataFrame) -> str:
    """Markdown with p-values printed the way papers do (<0.001)."""

    def fmt(value: object) -> str:
        if isinstance(value, float):
            if np.isnan(value):
                return ""
            return "<0.001" if value < 0.001 else f"{value:.3f}"
        return str(value)

    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    lines += ["", TABLE1_NOTE]
    return "\n".join(lines) + "\n"


TABLE1_NOTE = (
    f"Fisher's exact test on tables larger than 2 x 2 enumerates every table with the observed margins "
    f"(up to {EXACT_TABLE_LIMIT} tables); beyond that it is a Monte Carlo p-value from {MONTE_CARLO_TABLES} "
    f"random tables with seed {FISHER_SEED} (said in the test column), so the table is the same on every run."
)
