"""How far from 1 the calibration slope of a perfectly calibrated model falls by chance, by simulation.

A slope measured on a small split (the paper cohort's test split: 30 patients, 6 with CS) says little:
this prints the slope's sampling distribution when the model is calibrated by construction, and how
often it lands in a band such as issue 12's 0.7-1.3.

Two kinds of "true risks" (outcomes are then drawn from them, so intercept 0 and slope 1 are true):

- parametric (default): a calibrated model whose logit is normal, with the given prevalence and AUC
  (``--auc``, ``--prevalence``); each replicate draws new patients, ``--events`` of them with the outcome,
  as a stratified split does. Without ``--n`` it prints the paper cohort's split sizes.
- ``--scores``: a model's own predicted probabilities on one split (e.g. the combined model's on test,
  ``data/models/combined/scores.parquet``), taken as the patients' true risks. Only the probability
  column is read, never an outcome.

    python benchmarks/calibration_slope_sampling.py                         # paper split sizes, AUC 0.87
    python benchmarks/calibration_slope_sampling.py --n 30 --events 6 --auc 0.87
    python benchmarks/calibration_slope_sampling.py --scores data-paper/models/combined/scores.parquet \\
        --column combined --split test --events 6 --observed 2.75

Each slope is the maximum-likelihood fit of ``cagerisk.evaluation.calibration_intercept_slope`` (the
evaluate stage's), computed for all replicates at once (``recalibration_slopes``). Seconds to run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from cagerisk.evaluation import SlopeSampling, calibration_slope_sampling, recalibration_slopes

# The paper cohort's splits (305 patients, 214 / 61 / 30; val + test = the held-out 91): (name, n, events)
PAPER_SPLITS = (("train", 214, 43), ("val", 61, 13), ("test", 30, 6), ("val+test", 91, 19))


def calibrated_logit_normal(auc: float, prevalence: float, pool: int = 200_000, seed: int = 0):
    """(mu, sigma, z): a model whose risk is expit(mu + sigma z), z ~ N(0, 1), with the given prevalence
    and AUC; ``z`` is the standard-normal pool the values were solved on (and are drawn from)."""
    z = np.sort(np.random.default_rng(seed).standard_normal(pool))

    def mu_for(sigma: float) -> float:
        return brentq(lambda mu: expit(mu + sigma * z).mean() - prevalence, -30, 30, xtol=1e-12)

    def auc_of(sigma: float) -> float:
        # A calibrated model's AUC: cases weigh expit(L), controls 1 - expit(L); z is sorted, so the
        # control weight below each case is a cumulative sum (no ties in a continuous pool).
        risk = expit(mu_for(sigma) + sigma * z)
        below = np.cumsum(1 - risk) - (1 - risk)
        return float(np.sum(risk * below) / (risk.sum() * (1 - risk).sum()))

    sigma = brentq(lambda s: auc_of(s) - auc, 1e-3, 20, xtol=1e-8)
    return mu_for(sigma), sigma, z


def parametric(n: int, events: int, auc: float, prevalence: float, n_sim: int, band, seed: int) -> SlopeSampling:
    """Slopes of a calibrated logit-normal model on ``n`` new patients per replicate, ``events`` of them
    cases: cases drawn from the pool with weight risk, controls with weight 1 - risk (exactly the
    conditional distributions given the outcome)."""
    mu, sigma, z = calibrated_logit_normal(auc, prevalence, seed=seed)
    logit = mu + sigma * z
    risk = expit(logit)
    rng = np.random.default_rng(seed + 1)
    cases = rng.choice(len(z), size=(n_sim, events), p=risk / risk.sum())
    controls = rng.choice(len(z), size=(n_sim, n - events), p=(1 - risk) / (1 - risk).sum())
    L = logit[np.concatenate([cases, controls], axis=1)]
    Y = np.concatenate([np.ones((n_sim, events)), np.zeros((n_sim, n - events))], axis=1)
    return SlopeSampling.of(recalibration_slopes(L, Y), n, events, band)


def line(name: str, result: SlopeSampling) -> str:
    events = result.events if result.events is not None else "-"
    return (
        f"{name:<10} {result.n:>4} {events:>6} "
        + " ".join(f"{q:>6.2f}" for q in result.quantiles.values())
        + f" {result.share_in_band:>9.3f} {result.share_not_estimable:>8.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, help="patients per replicate (parametric); default: the paper's splits")
    parser.add_argument("--events", type=int, help="patients with the outcome per replicate")
    parser.add_argument("--auc", type=float, default=0.87, help="the calibrated model's AUC (parametric)")
    parser.add_argument("--prevalence", type=float, default=0.21, help="its mean risk (parametric)")
    parser.add_argument("--scores", type=Path, help="a scores table (parquet or CSV) with a probability column")
    parser.add_argument("--column", default="combined", help="the probability column of --scores")
    parser.add_argument("--split", help="keep only these rows of --scores (its 'split' column; several: val,test)")
    parser.add_argument("--observed", type=float, help="a slope measured on --scores' patients: how often is one as far out?")
    parser.add_argument("--sims", type=int, default=20_000)
    parser.add_argument("--band", type=float, nargs=2, default=(0.7, 1.3))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    band = tuple(args.band)
    head = (
        f"{'split':<10} {'n':>4} {'events':>6} "
        + " ".join(f"{f'q{level:g}':>6}" for level in SlopeSampling.LEVELS)
        + f" {f'in {band[0]:g}-{band[1]:g}':>9} {'no slope':>8}"
    )
    if args.scores:
        import pandas as pd

        frame = pd.read_parquet(args.scores) if args.scores.suffix == ".parquet" else pd.read_csv(args.scores)
        if args.column not in frame.columns:
            print(f"{args.scores}: no column {args.column!r} (columns: {list(frame.columns)})", file=sys.stderr)
            return 2
        if args.split:
            if "split" not in frame.columns:
                print(f"{args.scores}: no 'split' column to select {args.split!r}", file=sys.stderr)
                return 2
            frame = frame[frame["split"].isin(args.split.split(","))]
            if frame.empty:
                print(f"{args.scores}: no rows with split {args.split!r}", file=sys.stderr)
                return 2
        prob = frame[args.column].to_numpy(dtype=np.float64)
        result = calibration_slope_sampling(
            prob, n_sim=args.sims, events=args.events, band=band, seed=args.seed, observed=args.observed
        )
        print(f"true risks: {args.scores} column {args.column!r}" + (f", split {args.split!r}" if args.split else ""))
        print(f"a calibrated model on these {len(prob)} patients, {args.sims} outcome draws:\n")
        print(head)
        print(line(args.split or "all", result))
        if result.observed is not None:
            side = ">=" if result.observed >= 1 else "<="
            print(f"\nslope {side} {result.observed:g} in {result.share_as_extreme:.3f} of the draws")
        return 0
    splits = PAPER_SPLITS if args.n is None else ((f"n={args.n}", args.n, args.events),)
    if any(events is None for _, _, events in splits):
        parser.error("--n needs --events")
    print(f"a calibrated logit-normal model, AUC {args.auc:g}, prevalence {args.prevalence:g}; {args.sims} replicates\n")
    print(head)
    for name, n, events in splits:
        result = parametric(n, events, args.auc, args.prevalence, args.sims, band, args.seed)
        print(line(name, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
