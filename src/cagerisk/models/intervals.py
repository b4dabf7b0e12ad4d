"""Confidence intervals for an AUC estimated by (repeated) cross-validation of a whole procedure.

DeLong's interval on pooled out-of-fold predictions treats them as the scores of one fixed model: it
leaves out that every fold's model was fitted on a different training set, and that the folds
share patients. For nested CV of a selection + classifier procedure on 100 patients it covered the
procedure's AUC 81-85 % of the time at nominal 95 % (issue 11).

The corrected repeated k-fold interval (Nadeau & Bengio, Machine Learning 52, 2003; Bouckaert & Frank,
PAKDD 2004) takes the variance of the J = k x r fold AUCs and inflates it for the overlap of the
training sets: Var(mean) = (1/J + n_test/n_train) s^2, with a t quantile on J - 1 degrees of freedom.
It costs nothing beyond the folds already run; ``benchmarks/ci_coverage.py`` measures its coverage
of the procedure's expected AUC by simulation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def corrected_cv_interval(
    fold_aucs: Sequence[float],
    n_train: float,
    n_test: float,
    level: float = 0.95,
    folds_per_repeat: int | None = None,
) -> tuple[float, float, float, float]:
    """(centre, low, high, standard error) of the mean fold AUC by the corrected resampled t.

    ``n_train`` and ``n_test`` are the (average) sizes of a fold's training and test parts. With
    ``folds_per_repeat`` (k), the t quantile has k - 1 degrees of freedom instead of J - 1: repeats
    re-split the same patients, so they add little independent information about the variance
    (measured: 0.925 coverage with J - 1 at n=100, p=60; benchmarks/ci_coverage.py).
    """
    values = np.asarray(fold_aucs, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        raise ValueError(f"need at least 2 fold AUCs for an interval, got {values.size}")
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"fold sizes must be positive, got n_train={n_train}, n_test={n_test}")
    centre = float(values.mean())
    variance = (1.0 / values.size + float(n_test) / float(n_train)) * float(values.var(ddof=1))
    se = float(np.sqrt(variance))
    df = values.size - 1 if folds_per_repeat is None else max(1, min(int(folds_per_repeat), values.size) - 1)
    half = float(stats.t.ppf(0.5 + level / 2.0, df=df)) * se
    return centre, max(0.0, centre - half), min(1.0, centre + half), se
