"""Per-ROI summaries of the feature ICCs and their histogram figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from cagerisk.radiomics.naming import parse_feature_column

# Koo & Li (2016) bands for ICC: poor < 0.5 <= moderate < 0.75 <= good < 0.9 <= excellent.
KOO_LI_BANDS = (("poor", -np.inf, 0.5), ("moderate", 0.5, 0.75), ("good", 0.75, 0.9), ("excellent", 0.9, np.inf))
ICC_TYPES = ("icc2_1", "icc3_1")


def feature_parts(features: pd.Index | list[str]) -> pd.DataFrame:
    """``sequence, roi, image_type, feature_class, feature_name`` of each radiomics column (empty if not one)."""
    rows = []
    for column in features:
        try:
            name = parse_feature_column(str(column))
            rows.append((name.sequence, name.roi, name.image_type, name.feature_class, name.feature))
        except ValueError:
            rows.append(("", "", "", "", str(column)))
    return pd.DataFrame(
        rows, columns=["sequence", "roi", "image_type", "feature_class", "feature_name"], index=pd.Index(features)
    )


def _group_summary(group: pd.DataFrame, threshold: float) -> dict[str, float]:
    out: dict[str, float] = {
        "n_features": int(len(group)),
        "n_patients": int(group["n_targets"].max()) if len(group) else 0,
        "n_icc_undefined": int(group["icc2_1"].isna().sum()),
        "n_identical": int((group["status"] == "identical").sum()),
        "n_constant": int((group["status"] == "constant").sum()),
    }
    for icc in ICC_TYPES:
        values = group[icc]
        defined = values.dropna()
        out[f"{icc}_median"] = float(defined.median()) if len(defined) else float("nan")
        out[f"{icc}_q1"] = float(defined.quantile(0.25)) if len(defined) else float("nan")
        out[f"{icc}_q3"] = float(defined.quantile(0.75)) if len(defined) else float("nan")
        # Share of all features of the ROI (undefined ICC counts as not reproducible, as the filter does).
        out[f"{icc}_n_reproducible"] = int((values >= threshold).sum())
        out[f"{icc}_share_reproducible"] = float((values >= threshold).mean()) if len(values) else float("nan")
    for band, low, high in KOO_LI_BANDS:
        out[f"icc2_1_{band}"] = int(((group["icc2_1"] >= low) & (group["icc2_1"] < high)).sum())
    return out


def summarise_icc(icc: pd.DataFrame, threshold: float = 0.75) -> pd.DataFrame:
    """One row per (sequence, ROI) plus an ``all`` row: counts, median [IQR] ICCs, share >= threshold, bands."""
    rows = []
    for (seq, roi), group in icc.groupby(["sequence", "roi"], sort=False):
        rows.append({"sequence": seq, "roi": roi, **_group_summary(group, threshold)})
    rows.append({"sequence": "all", "roi": "all", **_group_summary(icc, threshold)})
    return pd.DataFrame(rows)


def plot_icc_histograms(icc: pd.DataFrame, threshold: float = 0.75, path: str | Path | None = None):
    """One panel per (sequence, ROI): histograms of ICC(2,1) and ICC(3,1) with the threshold marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    groups = [(key, g) for key, g in icc.groupby(["sequence", "roi"], sort=False)]
    n = max(len(groups), 1)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.8 * nrows), squeeze=False, sharex=True)
    # ICC can be far below 0 for features that are pure reader noise; the lowest bin collects them.
    bins = np.linspace(-1.0, 1.0, 41)
    for ax, ((seq, roi), group) in zip(axes.flat, groups, strict=False):
        # stepfilled/step draw one polygon per histogram instead of a patch per bar (ten times faster).
        for column, style in (
            ("icc2_1", {"color": "tab:blue", "alpha": 0.6, "histtype": "stepfilled"}),
            ("icc3_1", {"color": "tab:orange", "histtype": "step"}),
        ):
            values = group[column].dropna().clip(lower=-1.0)
            ax.hist(values, bins=bins, label=column.replace("icc", "ICC(").replace("_", ",") + ")", **style)
        share = float((group["icc2_1"] >= threshold).mean()) if len(group) else float("nan")
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1)
        ax.set_title(f"{seq} {roi}: {share:.0%} >= {threshold:g}", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("ICC", fontsize=8)
    fig.suptitle(
        f"Inter-observer ICC of radiomics features ({int(icc['n_targets'].max()) if len(icc) else 0} patients)", fontsize=10
    )
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
