"""Coverage of fit-table's AUC interval, by simulation of tables with a known population AUC.

Each replicate draws a table (``--n`` patients, ``--p`` Gaussian features, the outcome logistic in
the first ``--informative`` of them), runs fit-table's outer loop (stratified 5-fold x 2 repeats) with
a procedure fitted on each outer training part, and builds two 95 % intervals:

- ``corrected``: fit-table's interval (models/intervals.py, corrected repeated k-fold t on the fold AUCs,
  k - 1 degrees of freedom); also shown with k x r - 1 degrees of freedom, the textbook choice;
- ``delong``: DeLong on the pooled out-of-fold scores, fit-table's interval before issue 11.

The target is what nested CV estimates: the procedure's expected AUC when trained on an outer
training part's worth of patients. Every fold model's population AUC is measured on one large
independent sample (``--n-population``); their grand mean over all replicates is that expectation.
Coverage is also reported for each replicate's own mean of its fold models' population AUCs.

    python benchmarks/ci_coverage.py                          # L2 logistic regression, 200 replicates
    python benchmarks/ci_coverage.py --procedure default --replicates 300 --out cov.jsonl   # fit-table's default (slow)
    python benchmarks/ci_coverage.py --summarise cov.jsonl cov_seed1.jsonl   # coverage of the replicates logged so far

``--procedure default`` is fit-table's default classifier as conf/classifier/space/stack.yaml builds it
(the stack, 500 trees, seeded as fit-table seeds it); the tables have no missing values, so the
default's only selection step (median imputation) is the identity. ``--out`` logs each replicate as
it finishes (a JSON line), so a long run can be summarised at any time.

A benchmark (minutes); ``tests/models/test_models_intervals.py`` runs a small version.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


@dataclass(frozen=True)
class Population:
    p: int
    informative: int
    effect: float

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        X = rng.normal(size=(n, self.p))
        logit = self.effect * X[:, : self.informative].sum(axis=1) / np.sqrt(self.informative)
        y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
        return X, y


def make_procedure(name: str, seed: int):
    if name == "lr":
        return lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    if name == "default":
        from pathlib import Path

        from omegaconf import OmegaConf

        from cagerisk.models.zoo import ClassifierSpec

        # Built as fit-table builds it (zoo's ClassifierSpec.build), so the benchmark follows the
        # config: a change of the default's settings is measured without editing this file.
        conf = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/classifier/space/stack.yaml")
        spec = ClassifierSpec(name="stack", label=str(conf.label), estimator=OmegaConf.to_container(conf.estimator), space={})
        return lambda: spec.build(seed=seed)
    raise ValueError(f"unknown procedure {name!r}: lr or default")


def replicate(population: Population, n: int, procedure, big: tuple[np.ndarray, np.ndarray], rng, folds=5, repeats=2):
    """(corrected interval, DeLong interval, population AUCs of the fold models)."""
    from cagerisk.evaluation.metrics import delong_covariance
    from cagerisk.models.intervals import corrected_cv_interval

    X, y = population.draw(n, rng)
    X_big, y_big = big
    outer = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=int(rng.integers(1 << 31)))
    oof = np.zeros((repeats, n))
    fold_aucs, true_aucs, n_train, n_test = [], [], [], []
    for i, (train, test) in enumerate(outer.split(X, y)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = procedure().fit(X[train], y[train])
        prob = model.predict_proba(X[test])[:, 1]
        oof[i // folds, test] = prob
        fold_aucs.append(roc_auc_score(y[test], prob))
        true_aucs.append(roc_auc_score(y_big, model.predict_proba(X_big)[:, 1]))
        n_train.append(len(train))
        n_test.append(len(test))
    _, low, high, _ = corrected_cv_interval(fold_aucs, np.mean(n_train), np.mean(n_test), folds_per_repeat=folds)
    _, low_j, high_j, _ = corrected_cv_interval(fold_aucs, np.mean(n_train), np.mean(n_test), folds_per_repeat=None)
    aucs, variances = [], []
    for row in oof:
        auc, cov = delong_covariance(y, row)
        aucs.append(float(auc[0]))
        variances.append(float(cov[0, 0]))
    z = stats.norm.ppf(0.975)
    centre, se = float(np.mean(aucs)), float(np.sqrt(np.mean(variances)))
    return (low, high), (centre - z * se, centre + z * se), np.asarray(true_aucs), (low_j, high_j)


def coverage(
    replicates: int = 200,
    n: int = 100,
    p: int = 60,
    informative: int = 5,
    effect: float = 1.5,
    procedure: str = "lr",
    n_population: int = 20000,
    seed: int = 0,
    out: str | None = None,
) -> dict[str, float]:
    """Share of replicates whose interval holds the target, for both intervals and both targets.

    With ``out``, each replicate is appended to that file as a JSON line when it finishes.
    """
    rng = np.random.default_rng(seed)
    population = Population(p, informative, effect)
    big = population.draw(n_population, rng)
    make = make_procedure(procedure, seed)
    results = []
    started = time.perf_counter()
    for i in range(replicates):
        results.append(replicate(population, n, make, big, rng))
        if out is not None:
            corrected, delong, true_aucs, df_all = results[-1]
            record = {"corrected": corrected, "delong": delong, "true_aucs": true_aucs.tolist(), "df_all": df_all}
            with open(out, "a") as handle:
                handle.write(json.dumps({"procedure": procedure, "n": n, "p": p, "replicate": i, **record}) + "\n")
            print(f"replicate {i + 1}/{replicates} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    return summarise(results)


def summarise(results: list) -> dict[str, float]:
    """Coverage of the replicates' intervals; each is (corrected, DeLong, fold models' AUCs, J - 1 df)."""
    expected = float(np.mean([np.mean(r[2]) for r in results]))  # grand mean: the procedure's expected AUC

    def share(kind: int, target) -> float:
        return float(np.mean([r[kind][0] <= target(r) <= r[kind][1] for r in results]))

    return {
        "expected_auc": expected,
        "corrected": share(0, lambda r: expected),
        "delong": share(1, lambda r: expected),
        "corrected_df_all_folds": share(3, lambda r: expected),
        "corrected_own_models": share(0, lambda r: np.mean(r[2])),
        "delong_own_models": share(1, lambda r: np.mean(r[2])),
        "corrected_mean_width": float(np.mean([r[0][1] - r[0][0] for r in results])),
        "delong_mean_width": float(np.mean([r[1][1] - r[1][0] for r in results])),
        "replicates": len(results),
    }


def load(paths: list[str]) -> tuple[list, dict]:
    """Replicates logged by ``--out`` (one or more runs of the same settings, e.g. other seeds)."""
    rows = [json.loads(line) for path in paths for line in open(path) if line.strip()]
    if not rows:
        raise SystemExit(f"{paths}: no replicates logged yet")
    settings = {(r["procedure"], r["n"], r["p"]) for r in rows}
    if len(settings) > 1:
        raise SystemExit(f"{paths}: replicates of different settings (procedure, n, p): {sorted(settings)}")
    results = [(r["corrected"], r["delong"], np.asarray(r["true_aucs"]), r["df_all"]) for r in rows]
    return results, {"procedure": rows[0]["procedure"], "n": rows[0]["n"], "p": rows[0]["p"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--p", type=int, default=60)
    parser.add_argument("--informative", type=int, default=5)
    parser.add_argument("--effect", type=float, default=1.5, help="log-odds per SD of the informative sum")
    parser.add_argument("--procedure", choices=["lr", "default"], default="lr")
    parser.add_argument("--n-population", type=int, default=20000, help="size of the sample that measures population AUCs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="append each replicate to this file (JSON lines) as it finishes")
    parser.add_argument(
        "--summarise", nargs="+", metavar="JSONL", help="coverage of the replicates logged in these files; runs nothing"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.summarise:
        results, settings = load(args.summarise)
        result = summarise(results)
        args.procedure, args.n, args.p = settings["procedure"], settings["n"], settings["p"]
    else:
        result = coverage(
            args.replicates, args.n, args.p, args.informative, args.effect, args.procedure, args.n_population, args.seed, args.out
        )
    replicates = result["replicates"]
    se = np.sqrt(0.95 * 0.05 / replicates)
    print(f"procedure {args.procedure}, n={args.n}, p={args.p}, {replicates} replicates, ", end="")
    print(f"expected AUC {result['expected_auc']:.3f}")
    print(f"coverage at nominal 0.95 (binomial SE {se:.3f}):")
    print(f"  corrected k-fold t (fit-table): {result['corrected']:.3f}  ", end="")
    print(f"(own fold models: {result['corrected_own_models']:.3f}), mean width {result['corrected_mean_width']:.3f}")
    print(f"  same, t on J-1 = k*r-1 df:      {result['corrected_df_all_folds']:.3f}")
    print(f"  DeLong on pooled OOF (before):  {result['delong']:.3f}  ", end="")
    print(f"(own fold models: {result['delong_own_models']:.3f}), mean width {result['delong_mean_width']:.3f}")
    print(f"({time.perf_counter() - started:.0f} s)")
    ok = result["corrected"] >= 0.93
    print("PASS" if ok else "FAIL", "(target: corrected coverage >= 0.93)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
