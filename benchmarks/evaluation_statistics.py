"""Size and coverage of the evaluate stage's tests, by simulation, old rule against new in the same run.

    .venv/bin/python benchmarks/evaluation_statistics.py [--reps N] [--seed S]

Prints, for N simulated data sets each (default 1000; about a minute on 2 cores):

- Hosmer-Lemeshow on calibrated held-out scores (the true probabilities, nothing fitted; n = 300,
  10 groups): rejection rate at 5 % with g degrees of freedom (the stage's rule) and with g - 2 (the
  old rule); and on a logistic regression's own training fit, where g - 2 is right.
- Calibration intercept and slope: coverage of the true values (0 and 1) by the 95 % Wald intervals on
  calibrated scores (n = 150).
- DeLong: a perfect score against a constant one (AUC 1.0 vs 0.5) on 20 + 20 patients, p of the old
  rule (1.0) and the new (a paired permutation test), and DeLong's size under the null (n = 80).
- Table 1: Fisher's test of a 3 x 3 table on two runs: scipy's default (random tables, unseeded) and
  the stage's exact enumeration.

Targets: rejection rates and 1 - coverage near 0.05 (within 0.02 at N = 1000 is about 2 binomial SEs).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats
from sklearn.linear_model import LogisticRegression

from cagerisk.cohort.table1 import compare_categorical
from cagerisk.evaluation import calibration_intercept_slope, delong_covariance, delong_test, hosmer_lemeshow


def hosmer_lemeshow_size(reps: int, rng: np.random.Generator) -> dict[str, float]:
    held, fitted = [], []
    for _ in range(reps):
        p = rng.uniform(0.05, 0.95, 300)
        y = (rng.random(300) < p).astype(int)
        held.append(hosmer_lemeshow(y, p).statistic)
        x = rng.normal(0, 1, (300, 1))
        y = (rng.random(300) < 1 / (1 + np.exp(0.5 - x[:, 0]))).astype(int)
        f = LogisticRegression(C=1e6, solver="newton-cholesky").fit(x, y).predict_proba(x)[:, 1]
        fitted.append(hosmer_lemeshow(y, f, in_sample=True).statistic)
    held, fitted = np.array(held), np.array(fitted)
    return {
        "held-out mean C (g = 10)": held.mean(),
        "held-out rejection, g df (new)": np.mean(stats.chi2.sf(held, 10) < 0.05),
        "held-out rejection, g - 2 df (old)": np.mean(stats.chi2.sf(held, 8) < 0.05),
        "in-sample mean C": fitted.mean(),
        "in-sample rejection, g - 2 df": np.mean(stats.chi2.sf(fitted, 8) < 0.05),
    }


def calibration_coverage(reps: int, rng: np.random.Generator) -> dict[str, float]:
    cover_a = cover_b = 0
    for _ in range(reps):
        p = 1 / (1 + np.exp(-rng.normal(-0.7, 1.2, 150)))
        y = (rng.random(150) < p).astype(int)
        fit = calibration_intercept_slope(y, p)
        cover_a += fit.intercept_low <= 0 <= fit.intercept_high
        cover_b += fit.slope_low <= 1 <= fit.slope_high
    return {"intercept CI coverage": cover_a / reps, "slope CI coverage": cover_b / reps}


def delong_checks(reps: int, rng: np.random.Generator) -> dict[str, float]:
    y = np.repeat([0, 1], 20)
    perfect, constant = y * 1.0, np.full(40, 0.5)
    degenerate = delong_test(y, perfect, constant)
    # The old rule: p = 1 whenever DeLong's variance of the difference was below 1e-15.
    auc, cov = delong_covariance(y, perfect, constant)
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    old_p = 1.0 if var <= 1e-15 else float(2 * stats.norm.sf(abs(auc[0] - auc[1]) / np.sqrt(var)))
    rejections = 0
    for _ in range(reps):
        yy = np.repeat([0, 1], 40)
        base = yy * 1.0
        rejections += delong_test(yy, base + rng.normal(0, 1, 80), base + rng.normal(0, 1, 80)).p_value < 0.05
    return {
        "AUC 1.0 vs 0.5 (20 + 20): old p": old_p,
        f"AUC 1.0 vs 0.5 (20 + 20): new p ({degenerate.method})": degenerate.p_value,
        "DeLong size under the null": rejections / reps,
    }


def table1_repeatability() -> dict[str, float]:
    table = np.array([[8, 2, 3], [1, 5, 4], [3, 3, 9]])
    return {
        "scipy default, run 1": float(np.ravel(stats.fisher_exact(table).pvalue)[0]),
        "scipy default, run 2": float(np.ravel(stats.fisher_exact(table).pvalue)[0]),
        "exact, run 1": compare_categorical(table).p_value,
        "exact, run 2": compare_categorical(table).p_value,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for title, block in (
        ("Hosmer-Lemeshow", lambda: hosmer_lemeshow_size(args.reps, rng)),
        ("Calibration intercept and slope", lambda: calibration_coverage(args.reps, rng)),
        ("DeLong", lambda: delong_checks(args.reps, rng)),
        ("Table 1, Fisher 3 x 3", table1_repeatability),
    ):
        start = time.perf_counter()
        values = block()
        print(f"{title} ({time.perf_counter() - start:.0f} s)")
        for name, value in values.items():
            print(f"  {name:<48} {value:.4f}")


if __name__ == "__main__":
    main()
