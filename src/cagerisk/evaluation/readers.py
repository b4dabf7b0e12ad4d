"""Model against human readers: McNemar on paired correctness, DeLong on probabilities, Cohen's kappa."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

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


def inter_reader_kappa(predictions: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Cohen's kappa for every pair of readers' binary calls."""
    rows = []
    for (a, pa), (b, pb) in itertools.combinations(predictions.items(), 2):
        pa, pb = np.asarray(pa).astype(int), np.asarray(pb).astype(int)
        rows.append({"reader_a": a, "reader_b": b, "n": len(pa), "kappa": float(cohen_kappa_score(pa, pb)), "agreement": float(np.mean(pa == pb))})
    return pd.DataFrame(rows, columns=["reader_a", "reader_b", "n", "kappa", "agreement"])
