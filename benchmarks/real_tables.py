"""fit-table's default vs. the study's protocol vs. plain baselines, on the twelve radMLBench tables.

For each table, in one process and on identical outer folds (stratified 5-fold, repeated with seeds
100 and 101 as in the tables' README), four procedures are fitted on each outer training part and
scored on its test part:

- ``default``: what ``cagerisk fit-table`` runs by default (conf/sweep/default.yaml: the stacked L2-LR +
  extra trees on every imputed feature), through fit-table's own ``fit_procedure``;
- ``study``: the study's protocol, ``sweep=study`` (F-test, Pearson 0.9, LASSO 10-fold, Optuna over the
  14 classifiers with ``--study-trials`` trials and 5-fold inner CV), the same code path;
- ``L2-LR`` and ``ET``: the README's baselines (median imputation + StandardScaler +
  ``LogisticRegressionCV(Cs=10, cv=5, scoring="roc_auc")``; median imputation +
  ``ExtraTreesClassifier(500, random_state=0)``).

The AUC of a repeat is that of its pooled out-of-fold predictions; a table's AUC is the mean over
repeats (the README's protocol). Printed: per-table AUCs, each default minus the better baseline, and
the ratio mean(default) / best baseline mean.

    python benchmarks/real_tables.py                        # all twelve, results to stdout
    python benchmarks/real_tables.py --tables LNDb HNSCC --study-trials 5
    python benchmarks/real_tables.py --no-study --out r.jsonl   # one JSON line per table, appended
    python benchmarks/real_tables.py --summarise r1.jsonl r2.jsonl  # the table from saved lines
    python benchmarks/real_tables.py --tables C4KC-KiTS --only default --seed 1  # another stack seed
    python benchmarks/real_tables.py --tables HNSCC --only default --set classifier.candidates.stack.estimator.calibration=members

CPU heavy (minutes per table on two cores); a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data/radmlbench beside the checkout (or beside the directory holding a git worktree)
DATA = next(
    (p for p in (ROOT.parent / "shared/data/radmlbench", ROOT.parent.parent / "shared/data/radmlbench") if p.is_dir()),
    ROOT.parent / "shared/data/radmlbench",
)
TABLES = (
    "Song2020",
    "LNDb",
    "WORC-Lipo",
    "Deng2023",
    "Arita2018",
    "HNSCC",
    "WORC-GIST",
    "Head-Neck-Radiomics-HN1",
    "Hosny2018B",
    "Keek2020",
    "C4KC-KiTS",
    "Ahn2021",
)
SEEDS = (100, 101)
METHODS = ("default", "study", "L2-LR", "ET")


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return hydra_compose("fit_table", overrides=overrides)


def readme_lr(cv=5):
    """The README's L2-LR baseline as a fit(X, y): median imputation, StandardScaler,
    ``LogisticRegressionCV(Cs=10, cv=cv, scoring="roc_auc")`` (the README's cv: 5, unshuffled folds)."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return lambda X, y: make_pipeline(
        SimpleImputer(strategy="median"), StandardScaler(), LogisticRegressionCV(Cs=10, cv=cv, scoring="roc_auc")
    ).fit(X, y)


def readme_et(random_state: int = 0):
    """The README's ET baseline as a fit(X, y): median imputation, ``ExtraTreesClassifier(500)``."""
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    return lambda X, y: make_pipeline(SimpleImputer(strategy="median"), ExtraTreesClassifier(500, random_state=random_state)).fit(
        X, y
    )


def procedures(study_trials: int, with_study: bool, seed: int | None = None, overrides: list[str] | None = None):
    """name -> fit(X_train, y_train) -> object with predict_proba, all built before any fold runs."""
    from dataclasses import replace

    from cagerisk.config import typed
    from cagerisk.config.modelling import FitTableConfig, model_config
    from cagerisk.models.fit_table import fit_procedure, table_search_settings

    def fit_table_procedure(overrides: list[str], n_trials: int):
        cfg = compose(overrides)
        config = model_config(cfg)
        ft = replace(typed(cfg.fit_table, FitTableConfig, "fit_table"), n_trials=n_trials)
        settings = table_search_settings(config, ft, fit_best=True)
        return lambda X, y: fit_procedure(config, ft, "bench", X, y, settings)[0]

    # `seed` is the root config's (fit-table's random_state of every model: the stack's trees and inner
    # folds); the outer folds stay the README's
    seeded = ([] if seed is None else [f"seed={seed}"]) + list(overrides or [])
    fits = {"default": fit_table_procedure(seeded, 30)}
    if with_study:
        fits["study"] = fit_table_procedure(["sweep=study", *seeded], study_trials)
    fits["L2-LR"] = readme_lr()
    fits["ET"] = readme_et()
    return fits


def run_table(name: str, fits, folds: int, data: Path = DATA) -> dict:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from cagerisk.models.fit_table import prepare_table
    from cagerisk.models.search import positive_proba

    X, y, _ = prepare_table(pd.read_csv(data / f"{name}.csv.gz"), "ID", "Target", 1, ["diagnostics_"], [], source=name)
    X = X.replace([np.inf, -np.inf], np.nan)
    aucs = {m: [] for m in fits}
    seconds = dict.fromkeys(fits, 0.0)
    for seed in SEEDS:
        oof = {m: np.full(len(y), np.nan) for m in fits}
        for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
            for method, fit in fits.items():
                started = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = fit(X.iloc[train], y[train])
                    oof[method][test] = positive_proba(model, X.iloc[test])
                seconds[method] += time.perf_counter() - started
        for method in fits:
            aucs[method].append(float(roc_auc_score(y, oof[method])))
    return {
        "table": name,
        "n": int(len(y)),
        "p": int(X.shape[1]),
        "auc": {m: float(np.mean(v)) for m, v in aucs.items()},
        "auc_per_repeat": aucs,
        "seconds": {m: round(s, 1) for m, s in seconds.items()},
    }


def merge(lines: list[tuple[Path, dict]]) -> list[dict]:
    """One row per table from saved lines; a procedure measured in several files: the last file wins.

    Rows whose procedures came from different runs say so (``from``), and the summary prints it.
    """
    rows: dict[str, dict] = {}
    for path, line in lines:
        row = rows.setdefault(line["table"], {**line, "auc": {}, "seconds": {}, "from": {}})
        row["auc"].update(line["auc"])
        row["seconds"].update(line["seconds"])
        row["from"].update(dict.fromkeys(line["auc"], path.name))
    return list(rows.values())


def summarise(rows: list[dict]) -> int:
    """Print the table and the acceptance lines; 0 when both hold, 1 otherwise."""
    if not all({"default", "L2-LR", "ET"} <= set(r["auc"]) for r in rows):
        for r in rows:
            print(f"{r['table']:<24} " + ", ".join(f"{m} {a:.3f}" for m, a in r["auc"].items()))
        print("(no acceptance lines without the default and both baselines: --summarise with the baselines' lines)")
        return 1
    methods = [m for m in METHODS if all(m in r["auc"] for r in rows)]
    head = f"{'table':<24} {'n':>4} {'p':>5} " + " ".join(f"{m:>8}" for m in methods) + f" {'def-best':>8} {'s/fold(def)':>11}"
    print(head)
    print("-" * len(head))
    gaps = []
    for r in rows:
        best = max(r["auc"]["L2-LR"], r["auc"]["ET"])
        gap = r["auc"]["default"] - best
        gaps.append(gap)
        per_fold = r["seconds"]["default"] / (len(SEEDS) * 5)
        print(
            f"{r['table']:<24} {r['n']:>4} {r['p']:>5} "
            + " ".join(f"{r['auc'][m]:>8.3f}" for m in methods)
            + f" {gap:>+8.3f} {per_fold:>11.1f}"
        )
    means = {m: float(np.mean([r["auc"][m] for r in rows])) for m in methods}
    print("-" * len(head))
    print(f"{'mean':<24} {'':>4} {'':>5} " + " ".join(f"{means[m]:>8.3f}" for m in methods))
    best_baseline = max(means["L2-LR"], means["ET"])
    ratio = means["default"] / best_baseline
    worst = int(np.argmin(gaps))
    print(
        f"\nratio mean(default) / best baseline mean = {means['default']:.3f} / {best_baseline:.3f} = {ratio:.3f}"
        "  (target >= 1.00)"
    )
    print(f"worst table vs. its better baseline: {rows[worst]['table']} {gaps[worst]:+.3f}  (target >= -0.03)")
    if "study" in means:
        print(f"ratio mean(default) / mean(study) = {means['default'] / means['study']:.3f}")
    seconds = {m: sum(r["seconds"][m] for r in rows) for m in methods}
    print("total fit seconds: " + ", ".join(f"{m} {s:.0f}" for m, s in seconds.items()))
    sources = {f"{m} <- {r['from'][m]}" for r in rows for m in methods if len(set(r.get("from", {}).values())) > 1}
    if sources:
        print("procedures from different runs (same folds, same script): " + ", ".join(sorted(sources)))
    ok = ratio >= 1.0 and gaps[worst] >= -0.03
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", default=list(TABLES), help="subset of the twelve tables")
    parser.add_argument("--data", type=Path, default=DATA, help=f"folder of the radMLBench tables (default {DATA})")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--study-trials", type=int, default=30, help="Optuna trials per outer fold for sweep=study")
    parser.add_argument("--no-study", action="store_true", help="skip the study's protocol (the slowest)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=METHODS,
        help="run only these procedures (e.g. a changed default against baselines saved by an earlier run: "
        "--summarise merges the lines of a table; the baselines are deterministic, and the table says which "
        "run each AUC came from)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="the config's seed for default and study (fit-table's: 20260); the stack's seed moves the small "
        "tables by 0.03-0.06, so check a change at several",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="OVERRIDE",
        help="Hydra overrides for default and study, e.g. classifier.candidates.stack.estimator.calibration=members",
    )
    parser.add_argument("--out", type=Path, help="append one JSON line per table to this file")
    parser.add_argument("--summarise", nargs="+", type=Path, help="print the table from saved JSON lines and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.summarise:
        rows = merge(
            [(path, json.loads(line)) for path in args.summarise for line in path.read_text().splitlines() if line.strip()]
        )
        order = {t: i for i, t in enumerate(TABLES)}
        return summarise(sorted(rows, key=lambda r: order.get(r["table"], 99)))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    unknown = sorted(set(args.tables) - set(TABLES))
    if unknown:
        parser.error(f"unknown tables {unknown}; choose from {list(TABLES)}")
    fits = procedures(args.study_trials, not args.no_study, args.seed, args.set)
    if args.only:
        fits = {m: f for m, f in fits.items() if m in args.only}
    rows = []
    for name in args.tables:
        started = time.perf_counter()
        row = run_table(name, fits, args.folds, args.data)
        rows.append(row)
        print(
            f"# {name}: "
            + ", ".join(f"{m} {a:.3f}" for m, a in row["auc"].items())
            + f" ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        if args.out:
            with args.out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
    return summarise(rows)


if __name__ == "__main__":
    sys.exit(main())
