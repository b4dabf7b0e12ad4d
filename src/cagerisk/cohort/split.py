"""Stratified train/val/test splits with exact group sizes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cagerisk.cohort.schema import SPLITS


def split_counts(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Exact sizes from fractions by largest remainder (305 at 7:2:1 -> 214/61/30)."""
    total = sum(float(fractions[s]) for s in SPLITS)
    raw = {s: n * float(fractions[s]) / total for s in SPLITS}
    counts = {s: int(np.floor(v)) for s, v in raw.items()}
    for s in sorted(SPLITS, key=lambda s: raw[s] - counts[s], reverse=True)[: n - sum(counts.values())]:
        counts[s] += 1
    return counts


def stratified_split(strata: Sequence[str] | pd.Series, counts: Mapping[str, int], seed: int) -> np.ndarray:
    """Assign each row a split so every stratum is spread over splits in proportion.

    Test and validation are filled first, each by largest remainder over strata, so the split sizes
    are exact and each stratum's share in every split is as close to proportional as integers allow.
    """
    strata = np.asarray(strata, dtype=object)
    n = len(strata)
    if sum(int(counts[s]) for s in SPLITS) != n:
        raise ValueError(f"split sizes {dict(counts)} do not add up to {n} patients")
    rng = np.random.default_rng(seed)
    labels = np.empty(n, dtype=object)
    remaining = {key: list(rng.permutation(np.flatnonzero(strata == key))) for key in sorted(set(strata))}
    left = n
    for split in ("test", "val"):
        want = int(counts[split])
        sizes = {k: len(v) for k, v in remaining.items()}
        quota = {k: want * sizes[k] / left if left else 0.0 for k in sizes}
        take = {k: min(int(np.floor(q)), sizes[k]) for k, q in quota.items()}
        order = sorted(quota, key=lambda k: (quota[k] - take[k], sizes[k]), reverse=True)
        i = 0
        while sum(take.values()) < want:
            k = order[i % len(order)]
            if take[k] < sizes[k]:
                take[k] += 1
            i += 1
        for k, m in take.items():
            chosen, remaining[k] = remaining[k][:m], remaining[k][m:]
            labels[chosen] = split
        left -= want
    for rows in remaining.values():
        labels[rows] = "train"
    return labels


def assign_splits(
    frame: pd.DataFrame,
    outcome: str,
    fractions: Mapping[str, float],
    seed: int,
    counts: Mapping[str, int] | None = None,
    by_center: bool = True,
) -> pd.Series:
    """Stratify by outcome (and center): the study's 7:2:1 split, or exact ``counts``."""
    sizes = dict(counts) if counts else split_counts(len(frame), fractions)
    strata = frame[outcome].astype(str)
    if by_center and "center" in frame:
        strata = strata + "|" + frame["center"].astype(str)
    return pd.Series(stratified_split(strata, sizes, seed), index=frame.index, name="split")
