"""Table 1 tests against scipy on data whose properties are known."""

import numpy as np
import pandas as pd
from scipy import stats

from cagerisk.cohort.table1 import build_table1, compare_categorical, compare_many_continuous, compare_two_continuous, table1_markdown


def test_normal_equal_variances_use_students_t():
    rng = np.random.default_rng(0)
    a, b = rng.normal(60, 8, 80), rng.normal(64, 8, 90)
    res = compare_two_continuous(a, b)
    assert res.test == "t-test"
    assert res.p_value == stats.ttest_ind(a, b, equal_var=True).pvalue


def test_normal_unequal_variances_use_welch():
    rng = np.random.default_rng(1)
    a, b = rng.normal(60, 3, 80), rng.normal(62, 15, 90)
    assert stats.levene(a, b).pvalue < 0.05
    res = compare_two_continuous(a, b)
    assert res.test == "Welch t-test"
    assert res.p_value == stats.ttest_ind(a, b, equal_var=False).pvalue


def test_skewed_groups_use_mann_whitney():
    rng = np.random.default_rng(2)
    a, b = rng.exponential(10, 80), rng.exponential(14, 90)
    res = compare_two_continuous(a, b)
    assert res.test == "Mann-Whitney U"
    assert res.p_value == stats.mannwhitneyu(a, b, alternative="two-sided").pvalue


def test_three_groups_anova_or_kruskal():
    rng = np.random.default_rng(3)
    groups = [rng.normal(m, 5, 60) for m in (50, 51, 53)]
    res = compare_many_continuous(groups)
    assert res.test == "ANOVA" and res.p_value == stats.f_oneway(*groups).pvalue
    skewed = [rng.lognormal(0, 1, 60) for _ in range(3)]
    res = compare_many_continuous(skewed)
    assert res.test == "Kruskal-Wallis" and res.p_value == stats.kruskal(*skewed).pvalue


def test_categorical_chi_square_or_fisher():
    large = np.array([[30, 20], [25, 40]])
    res = compare_categorical(large)
    assert res.test == "chi-square"
    assert res.p_value == stats.chi2_contingency(large, correction=True).pvalue
    # Fisher's tea-tasting example: 3/1 vs 1/3, two-sided p = 0.4857
    tea = np.array([[3, 1], [1, 3]])
    res = compare_categorical(tea)
    assert res.test == "Fisher exact"
    assert round(res.p_value, 4) == 0.4857


def test_build_table1_layout_and_markdown():
    rng = np.random.default_rng(4)
    n = 120
    frame = pd.DataFrame(
        {
            "sex": rng.choice(["F", "M"], n),
            "age": rng.normal(62, 10, n).round(1),
            "bmi": rng.normal(25, 3, n).round(1),
            "diagnosis": rng.choice(["stenosis", "spondylolisthesis", "herniation"], n),
            "n_levels": rng.choice([1, 2, 3], n),
            "osteoporosis": rng.choice([0, 1], n),
            "followup_months": rng.gamma(6, 4, n).round(1),
            "cs": rng.choice([0, 1], n, p=[0.75, 0.25]),
            "split": rng.choice(["train", "val", "test"], n, p=[0.7, 0.2, 0.1]),
        }
    )
    table = build_table1(frame)
    age = table[table["variable"] == "Age (years)"].iloc[0]
    train = frame[frame["split"] == "train"]
    expected = compare_two_continuous(train[train.cs == 1].age.to_numpy(), train[train.cs == 0].age.to_numpy())
    assert age["train p"] == expected.p_value
    assert age["train CS"] == f"{train[train.cs == 1].age.mean():.1f} ± {train[train.cs == 1].age.std():.1f}"
    sex = table[table["variable"] == "Sex"]
    assert list(sex["level"]) == ["F", "M"]
    assert table.iloc[0]["train CS"] == str(int((train.cs == 1).sum()))
    md = table1_markdown(table)
    assert md.count("\n") == len(table) + 2 and "| Age (years) |" in md


def test_fisher_on_r_by_c_tables_gives_a_number():
    res = compare_categorical(np.array([[1, 0, 1], [0, 1, 1]]))
    assert res.test == "Fisher exact" and res.p_value == 1.0
