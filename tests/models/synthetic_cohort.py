"""A small synthetic cohort on disk (manifest, radiomics and deep tables) for the model stages.

Outcomes follow a latent risk that a few radiomics and deep columns carry (with noise) and the
clinical osteoporosis flag reflects, so a working pipeline must find signal and a leaking one
would show on permuted labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[2] / "conf"


def make_synthetic_cohort(root: Path, n: int = 96, n_rad: int = 60, n_deep: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=n)
    age = np.clip(rng.normal(62, 10, n), 36, 90)
    bmi = np.clip(rng.normal(25.5, 3.6, n), 16.5, 42)
    sex = np.where(rng.random(n) < 0.58, "F", "M")
    diagnosis = rng.choice(["stenosis", "spondylolisthesis", "herniation"], n, p=[0.5, 0.3, 0.2])
    n_levels = rng.choice([1, 2, 3], n, p=[0.6, 0.3, 0.1])
    osteoporosis = (latent + rng.normal(0, 0.5, n) > 0).astype(int)
    logit = -1.0 + 2.2 * latent + 0.1 * (age - 62) / 10
    risk = 1 / (1 + np.exp(-logit))
    cs = (rng.random(n) < risk).astype(int)
    split = np.empty(n, dtype=object)
    for label in (0, 1):
        idx = rng.permutation(np.flatnonzero(cs == label))
        k1, k2 = int(round(0.6 * len(idx))), int(round(0.8 * len(idx)))
        split[idx[:k1]], split[idx[k1:k2]], split[idx[k2:]] = "train", "val", "test"
    ids = [f"SYN{i:03d}" for i in range(n)]
    levels = {1: "L4-L5", 2: "L4-L5;L5-S1", 3: "L3-L4;L4-L5;L5-S1"}
    reader_probs = [1 / (1 + np.exp(-(1.2 * latent + rng.normal(0, 1.0, n) - 1.0))) for _ in range(2)]
    manifest = pd.DataFrame(
        {
            "patient_id": ids,
            "center": rng.choice(["A", "B", "C"], n),
            "sex": sex,
            "age": age.round(1),
            "bmi": bmi.round(1),
            "diagnosis": diagnosis,
            "n_levels": n_levels,
            "osteoporosis": osteoporosis,
            "followup_months": rng.uniform(12, 48, n).round(1),
            "fused_levels": [levels[k] for k in n_levels],
            "cs": cs,
            "split": split,
            "reader_1": (reader_probs[0] >= 0.5).astype(int),
            "reader_2": (reader_probs[1] >= 0.5).astype(int),
            "reader_1_prob": reader_probs[0].round(4),
            "reader_2_prob": reader_probs[1].round(4),
        }
    )
    cohort = root / "cohort"
    features = root / "features"
    cohort.mkdir(parents=True, exist_ok=True)
    features.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(cohort / "manifest.csv", index=False)
    truth = pd.DataFrame({"patient_id": ids, "split": split, "true_risk": risk, "true_logit": logit})
    truth.to_csv(cohort / "truth.csv", index=False)
    held = split != "train"
    from sklearn.metrics import roc_auc_score

    (cohort / "oracle.json").write_text(json.dumps({"oracle_auc": {"val+test": float(roc_auc_score(cs[held], risk[held]))}}))
    table1 = pd.DataFrame({"variable": ["age", "bmi"], "train": ["62 (10)", "25 (4)"], "val": ["61 (9)", "26 (4)"]})
    table1.to_csv(cohort / "table1.csv", index=False)
    (cohort / "table1.md").write_text("| variable | train |\n|---|---|\n| age | 62 (10) |\n")

    def table(prefix: str, n_cols: int, n_signal: int, scale: float) -> pd.DataFrame:
        data = rng.normal(size=(n, n_cols))
        for j in range(n_signal):
            data[:, j] = scale * latent + rng.normal(0, 1.0, n) + 5.0
        data[:, n_signal] = data[:, 0] * 0.99 + rng.normal(0, 0.05, n)  # a near-duplicate for pruning
        return pd.DataFrame(data, columns=[f"{prefix}{j}" for j in range(n_cols)], index=pd.Index(ids, name="patient_id"))

    rad = table("t2_disc_original_firstorder_F", n_rad, 6, 1.0)
    rad.iloc[3, 10] = np.nan  # a degenerate ROI's feature: imputed, not fatal
    rad.reset_index().to_parquet(features / "radiomics.parquet", index=False)
    table("t2_disc_dl_", n_deep, 5, 0.8).reset_index().to_parquet(features / "deep.parquet", index=False)
    return root


def tiny_overrides(root: Path) -> list[str]:
    """Overrides that shrink every search to seconds; the code paths are the stage's own.

    The study's protocol (sweep=study: selection steps, Optuna trials, nested MLflow runs), restricted
    to three quick classifiers; the default models have their own stage test.
    """
    return [
        "sweep=study",
        f"paths.data={root}",
        f"tracking.uri=sqlite:///{root}/mlruns/mlflow.db",
        f"tracking.artifact_root={root}/mlruns/artifacts",
        "sweep.n_trials=4",
        "sweep.cv_folds=3",
        "sweep.pruner=null",
        "sweep.sampler_startup_trials=2",
        "selection.radiomics.lasso.cv=3",
        "selection.radiomics.lasso.n_alphas=20",
        "selection.deep.reduce.n_components=10",
        "classifier.include=[lr,nb,dt]",
        "++evaluation.n_bootstrap=200",
        "++evaluation.permutation_repeats=3",
        "evaluation.acceptance_ratio=0.85",  # not the shipped 0.9: the report must say the configured ratio
    ]


def compose_config(overrides: list[str], config_name: str = "config"):
    """``conf/<config_name>.yaml`` composed as the command composes it (``fit_table`` for fit-table)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name, overrides=overrides)
