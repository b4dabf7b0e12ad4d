"""The LASSO figures of the study (Fig. 1a: CV curve, Fig. 1b: coefficient path, Fig. 1c: coefficients)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from cagerisk.features.lasso import LassoSelector

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend, imported on first use (it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lasso(selector: LassoSelector, feature_names: Sequence[str], title: str = "") -> Figure:
    """Three panels: mean CV error against log(lambda) with its SE band and the chosen lambda;
    the coefficient path of every feature; the coefficients of the selected features."""
    if not hasattr(selector, "coef_path_"):
        raise ValueError("the LASSO selector was fitted without store_path=True; no path to plot")
    names = np.asarray(list(feature_names))
    log_alpha = np.log10(selector.alphas_)
    mse = selector.mse_path_
    mean, se = mse.mean(axis=1), mse.std(axis=1, ddof=1) / np.sqrt(mse.shape[1])
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.errorbar(log_alpha, mean, yerr=se, fmt="o", ms=3, color="tab:red", ecolor="lightgray", capsize=2)
    ax.axvline(np.log10(selector.alpha_), ls="--", color="k", lw=1)
    ax.set_xlabel("log10(lambda)")
    ax.set_ylabel("mean squared error (CV)")
    ax.set_title("a  LASSO: lambda by cross-validation")
    ax = axes[1]
    path = selector.coef_path_
    for row in path:
        ax.plot(log_alpha, row, lw=0.8)
    ax.axvline(np.log10(selector.alpha_), ls="--", color="k", lw=1)
    ax.set_xlabel("log10(lambda)")
    ax.set_ylabel("coefficient")
    ax.set_title("b  coefficient path")
    ax = axes[2]
    support = selector.get_support()
    coefs = selector.coef_[support]
    labels = names[support] if len(names) == len(support) else np.array([f"x{i}" for i in np.flatnonzero(support)])
    order = np.argsort(np.abs(coefs))
    ax.barh(np.arange(len(order)), coefs[order], color=np.where(coefs[order] > 0, "tab:red", "tab:blue"))
    ax.set_yticks(np.arange(len(order)), [_short(label) for label in labels[order]], fontsize=7)
    ax.set_xlabel("coefficient at chosen lambda")
    ax.set_title(f"c  {int(support.sum())} selected features")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3) :]
