"""Figures of the study: ROC curves (Fig. 2), calibration and decision curves (Fig. 3), importance, readers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from cagerisk.atomic import replaced_atomically
from cagerisk.evaluation.metrics import calibration, decision_curve
from cagerisk.features.plots import pyplot

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLORS = {"clinical_model": "tab:green", "rad_sign": "tab:blue", "dl_sign": "tab:orange", "combined": "tab:red"}


def plot_roc_panels(panels: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]], labels: Mapping[str, str]) -> Figure:
    """One ROC panel per cohort split: ``{title: (y, {model: probabilities})}``."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.8), squeeze=False)
    for ax, (title, (y, probs)) in zip(axes[0], panels.items(), strict=False):
        for name, p in probs.items():
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, color=COLORS.get(name), lw=1.6, label=f"{labels.get(name, name)} (AUC {roc_auc_score(y, p):.3f})")
        ax.plot([0, 1], [0, 1], ls=":", color="gray", lw=1)
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_aspect("equal")
    fig.tight_layout()
    return fig


def plot_calibration_and_dca(
    y: np.ndarray, probs: Mapping[str, np.ndarray], labels: Mapping[str, str], title: str, n_bins: int = 5
) -> Figure:
    """(a) calibration curves against the diagonal; (b) decision curves against treat-all / treat-none."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.8))
    for name, p in probs.items():
        cal = calibration(y, p, n_bins=n_bins)
        ax1.plot(cal["predicted"], cal["observed"], marker="o", color=COLORS.get(name), label=labels.get(name, name))
    ax1.plot([0, 1], [0, 1], ls=":", color="gray", label="ideal")
    ax1.set_xlabel("predicted probability")
    ax1.set_ylabel("observed frequency")
    ax1.set_title(f"a  calibration ({title})")
    ax1.legend(fontsize=8)
    dca = decision_curve(y, dict(probs), np.arange(0.01, 0.81, 0.01))
    for name in probs:
        ax2.plot(dca["threshold"], dca[name], color=COLORS.get(name), label=labels.get(name, name))
    ax2.plot(dca["threshold"], dca["treat_all"], color="gray", lw=1, label="treat all")
    ax2.plot(dca["threshold"], dca["treat_none"], color="black", lw=1, label="treat none")
    prevalence = float(np.mean(y))
    ax2.set_ylim(-0.05, max(0.1, prevalence + 0.05))
    ax2.set_xlabel("threshold probability")
    ax2.set_ylabel("net benefit")
    ax2.set_title(f"b  decision curve ({title})")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_importance(tables: Mapping[str, pd.DataFrame], value_columns: Mapping[str, str], top: int = 15) -> Figure:
    """Horizontal bars per table (e.g. LASSO coefficients per signature, permutation importance)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 5), squeeze=False)
    for ax, (title, frame) in zip(axes[0], tables.items(), strict=False):
        column = value_columns[title]
        if frame.empty or column not in frame:
            ax.set_axis_off()
            ax.set_title(f"{title}: no data")
            continue
        data = frame.reindex(frame[column].abs().sort_values(ascending=False).index).head(top).iloc[::-1]
        ax.barh(np.arange(len(data)), data[column], color=np.where(data[column] >= 0, "tab:red", "tab:blue"))
        ax.set_yticks(np.arange(len(data)), [_short(str(f)) for f in data["feature"]], fontsize=7)
        ax.set_xlabel(column)
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_readers(
    y: np.ndarray,
    model_prob: np.ndarray,
    threshold: float,
    readers: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    title: str,
) -> Figure:
    """The model's ROC curve with its operating point and each reader's operating point (and ROC)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5))
    fpr, tpr, _ = roc_curve(y, model_prob)
    ax.plot(fpr, tpr, color=COLORS["combined"], label=f"combined model (AUC {roc_auc_score(y, model_prob):.3f})")
    pred = model_prob >= threshold
    ax.plot(np.mean(pred[y == 0]), np.mean(pred[y == 1]), "o", color=COLORS["combined"], ms=8, label="model at threshold")
    markers = iter("s^Dvp*")
    for name, (calls, prob) in readers.items():
        calls = np.asarray(calls).astype(bool)
        marker = next(markers, "x")
        if prob is not None:
            rf, rt, _ = roc_curve(y, prob)
            ax.plot(rf, rt, lw=1, ls="--", label=f"reader {name} (AUC {roc_auc_score(y, prob):.3f})")
        ax.plot(np.mean(calls[y == 0]), np.mean(calls[y == 1]), marker, ms=8, label=f"reader {name} calls")
    ax.plot([0, 1], [0, 1], ls=":", color="gray")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def save(fig: Figure, path) -> str:
    """Write ``fig`` as ``path`` (atomically) and close it."""
    with replaced_atomically(path) as tmp:
        fig.savefig(tmp, dpi=120)
    pyplot().close(fig)
    return str(path)


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3) :]
