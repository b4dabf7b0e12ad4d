"""Model against human readers: McNemar on paired correctness, DeLong on probabilities, Cohen's kappa."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from cagerisk.cohort.schema import READER_PREFIX
from cagerisk.evaluation.metrics import classification_metrics, delong_test


def reader_columns(frame: pd.DataFrame) -> dict[str, tuple[str, str | None]]:
    """``{reader: (binary column, probability column or None)}`` from ``reader_<name>[_prob]`` columns."""
    readers: dict[str, tuple[str, str | None]] = {}
    for column in frame.columns:
        if column.startswith(READER_PREFIX) and not column.endswith("_prob"):
            name = column[len(READER_PREFIX) :]
            prob = f"{column}_prob"
            readers[name] = (column, prob if prob in frame.columns else None)
    return readers


def mcnemar_paired(y, pred_a, pred_b) -> dict[str, float]:
    """McNemar's test of equal accuracy of two binary predictions on the same patients.

    Exact binomial test when fewer than 25 patients are discordant, the chi-square statistic with
    continuity correction otherwise (statsmodels' ``mcnemar``).
    """
    from statsmodels.stats.contingency_tables import mcnemar  # slow to import; needed only here

    y, a, b = (np.asarray(v).astype(int) for v in (y, pred_a, pred_b))
    correct_a, correct_b = a == y, b == y
    table = np.array(
        [
            [np.sum(correct_a & correct_b), np.sum(correct_a & ~correct_b)],
            [np.sum(~correct_a & correct_b), np.sum(~correct_a & ~correct_b)],
        ]
    )
    discordant = int(table[0, 1] + table[1, 0])
    exact = discordant < 25
    result = mcnemar(table, exact=exact, correction=True)
    return {
        "a_only_correct": int(table[0, 1]),
        "b_only_correct": int(table[1, 0]),
        "statistic": float(result.statistic),
        "p_value": float(result.pvalue) if discordant else 1.0,
        "exact": bool(exact),
    }


def compare_with_readers(
    y, model_prob, threshold: float, readers: Mapping[str, tuple[np.ndarray, np.ndarray | None]]
) -> pd.DataFrame:
    """One row per reader: reader and model accuracy/sensitivity/specificity, McNemar p (model at
    ``threshold`` against the reader's calls) and DeLong p (model against reader probabilities)."""
    y = np.asarray(y).astype(int)
    model_prob = np.asarray(model_prob, dtype=float)
    model_pred = (model_prob >= threshold).astype(int)
    model_metrics = classification_metrics(y, model_prob, threshold)
    rows = []
    for name, (pred, prob) in readers.items():
        pred = np.asarray(pred).astype(int)
        reader_metrics = classification_metrics(y, pred.astype(float), 0.5)
        test = mcnemar_paired(y, model_pred, pred)
        row = {
            "reader": name,
            "n": len(y),
            "reader_accuracy": reader_metrics["accuracy"],
            "reader_sensitivity": reader_metrics["sensitivity"],
            "reader_specificity": reader_metrics["specificity"],
            "model_accuracy": model_metrics["accuracy"],
            "model_sensitivity": model_metrics["sensitivity"],
            "model_specificity": model_metrics["specificity"],
            "mcnemar_p": test["p_value"],
            "model_only_correct": test["a_only_correct"],
            "reader_only_correct": test["b_only_correct"],
        }
        if prob is not None and 0 < y.sum() < len(y):
            dl = delong_test(y, model_prob, np.asarray(prob, dtype=float))
            row.update(model_auc=dl.auc1, reader_auc=dl.auc2, delong_p=dl.p_value)
        rows.append(row)
    return pd.DataFrame(rows)


def kappa_with_ci(calls_a, calls_b, level: float = 0.95) -> dict[str, float]:
    """Cohen's kappa of two readers' calls on the same patients, with its asymptotic standard error
    (Fleiss, Cohen & Everitt 1969), a Wald confidence interval and the test of kappa = 0 (statsmodels'
    ``cohens_kappa``, the same quantities as SAS PROC FREQ's AGREE option). Calls may have any
    number of categories; the table is over the categories either reader used."""
    from statsmodels.stats.inter_rater import cohens_kappa  # slow to import; needed only here

    a, b = pd.Series(np.asarray(calls_a)).astype(str), pd.Series(np.asarray(calls_b)).astype(str)
    if len(a) != len(b):
        raise ValueError(f"the readers' calls have different lengths ({len(a)} and {len(b)})")
    categories = sorted(set(a) | set(b))
    table = pd.crosstab(a, b).reindex(index=categories, columns=categories, fill_value=0).to_numpy()
    n = int(table.sum())
    agreement = float(np.trace(table) / n) if n else float("nan")
    out = {
        "n": n,
        "kappa": float("nan"),
        "kappa_se": float("nan"),
        "kappa_ci_low": float("nan"),
        "kappa_ci_high": float("nan"),
        "kappa_p": float("nan"),
        "agreement": agreement,
    }
    chance = float((table.sum(axis=1) @ table.sum(axis=0)) / n**2) if n else 1.0
    if len(categories) < 2 or chance >= 1.0:  # one category used by both readers: kappa is 0/0
        return out
    result = cohens_kappa(table)
    z = float(stats.norm.ppf(0.5 + level / 2))  # statsmodels' kappa_low/kappa_upp are fixed at 95 %
    out.update(
        kappa=float(result.kappa),
        kappa_se=float(result.std_kappa),
        kappa_ci_low=float(result.kappa - z * result.std_kappa),
        kappa_ci_high=float(result.kappa + z * result.std_kappa),
        kappa_p=float(result.pvalue_two_sided),
    )
    return out


def inter_reader_kappa(predictions: Mapping[str, np.ndarray], level: float = 0.95) -> pd.DataFrame:
    """Cohen's kappa with standard error, confidence interval and p (kappa = 0) for every pair of readers."""
    rows = []
    for (a, pa), (b, pb) in itertools.combinations(predictions.items(), 2):
        rows.append({"reader_a": a, "reader_b": b, **kappa_with_ci(pa, pb, level)})
    return pd.DataFrame(
        rows, columns=["reader_a", "reader_b", "n", "kappa", "kappa_se", "kappa_ci_low", "kappa_ci_high", "kappa_p", "agreement"]
    )
