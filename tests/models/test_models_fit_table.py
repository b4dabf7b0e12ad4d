"""`cagerisk fit-table`: nested CV on a table from elsewhere; permuted labels give chance AUC (no leakage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_cohort import compose_config

from cagerisk.models.data import InputError
from cagerisk.models.fit_table import prepare_table
from cagerisk.stages.fit_table import run_fit_table_stage

ROOT = Path(__file__).resolve().parents[2]
FAST = [
    "fit_table.outer_folds=4",
    "fit_table.outer_repeats=2",
    "fit_table.inner_folds=3",
    "fit_table.n_trials=2",
    "fit_table.final_fit=false",
    "sweep.pruner=null",
    "sweep.sampler_startup_trials=2",
    "classifier.include=[lr,nb]",
    "selection.radiomics.lasso.cv=3",
    "selection.radiomics.lasso.n_alphas=15",
]


def pyradiomics_like_table(path: Path, n: int = 160, p: int = 120, seed: int = 0, permute: bool = False) -> Path:
    """Rows of PyRadiomics-style features with an id, a text label and a diagnostics column.

    Many features and few patients: selection done outside the folds would find "signal" in noise.
    """
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=n)
    label = np.where(rng.random(n) < 1 / (1 + np.exp(-2.5 * latent)), "subsided", "stable")
    X = rng.normal(size=(n, p))
    X[:, :5] += latent[:, None]
    frame = pd.DataFrame(X, columns=[f"original_glcm_F{i}" for i in range(p)])
    frame.insert(0, "case_id", [f"C{i:04d}" for i in range(n)])
    frame["outcome"] = rng.permutation(label) if permute else label
    frame["diagnostics_Versions_PyRadiomics"] = "v3.1"
    frame.to_csv(path, index=False)
    return path


def test_permuted_labels_give_chance_auc_through_the_cli(tmp_path):
    table = pyradiomics_like_table(tmp_path / "permuted.csv", permute=True)
    command = [
        sys.executable,
        "-m",
        "cagerisk.cli",
        "fit-table",
        f"table={table}",
        "id_col=case_id",
        "label_col=outcome",
        "positive_label=subsided",
        "tracking.enabled=false",
        *FAST,
    ]
    proc = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("auc", "auc_ci_low", "auc_ci_high", "n", "n_features_in", "selected_features", "best_classifier"):
        assert key in result
    assert result["n"] == 160 and result["n_features_in"] == 120  # id, label and diagnostics are not features
    assert 0.4 <= result["auc"] <= 0.6, result["auc"]
    assert result["auc_ci_low"] <= result["auc"] <= result["auc_ci_high"]


def test_real_signal_is_found_with_the_same_settings(tmp_path):
    table = pyradiomics_like_table(tmp_path / "signal.csv")
    cfg = compose_config(
        [
            f"++table={table}",
            "++id_col=case_id",
            "++label_col=outcome",
            "++positive_label=subsided",
            "tracking.enabled=false",
            *[f"++{o}" for o in FAST],
        ],
        "fit_table",
    )
    result = run_fit_table_stage(cfg)
    assert result["auc"] > 0.8
    assert {"original_glcm_F0", "original_glcm_F1"} & set(result["selected_features"])


def test_bad_tables_are_named():
    frame = pd.DataFrame({"id": ["a", "b", "c"], "y": ["no", "no", "yes"], "f": [1.0, 2.0, 3.0]})
    X, y, dropped = prepare_table(frame, "id", "y", "yes", ["diagnostics_"], [])
    assert list(y) == [0, 0, 1] and list(X.columns) == ["f"] and dropped == []
    with pytest.raises(InputError, match="label_col 'outcome'"):
        prepare_table(frame, "id", "outcome", "yes", [], [])
    with pytest.raises(InputError, match="no row has y == 'maybe'"):
        prepare_table(frame, "id", "y", "maybe", [], [])
    with pytest.raises(InputError, match=r"listed twice.*\['a'\]"):
        prepare_table(pd.concat([frame, frame.iloc[:1]]), "id", "y", "yes", [], [])
    numeric = pd.DataFrame({"id": [1, 2, 3], "y": [0.0, 1.0, 0.0], "f": [1, 2, 3]})
    assert list(prepare_table(numeric, "id", "y", 1, [], [])[1]) == [0, 1, 0]


DEFAULT_FAST = [
    "fit_table.outer_folds=4",
    "fit_table.outer_repeats=2",
    "classifier.candidates.stack.estimator.n_estimators=100",
]


@pytest.mark.parametrize("permute", [True, False])
def test_the_default_stack_is_fitted_without_an_inner_search_and_stays_honest(tmp_path, permute):
    """fit-table's default: the stacked LR + extra trees on every feature, no Optuna; permuted labels
    give chance AUC, real signal is found, and the interval is the corrected k-fold one around it."""
    table = pyradiomics_like_table(tmp_path / "t.csv", permute=permute, seed=4)
    cfg = compose_config(
        [
            f"++table={table}",
            "++id_col=case_id",
            "++label_col=outcome",
            "++positive_label=subsided",
            "tracking.enabled=false",
            *[f"++{o}" for o in DEFAULT_FAST],
        ],
        "fit_table",
    )
    result = run_fit_table_stage(cfg)
    assert result["classifier_votes"] == {"stack": 8} and result["best_classifier"] == "stack"
    assert result["final_cv_auc"] is None  # nothing was searched
    assert len(result["selected_features"]) == 120  # no univariate selection
    assert result["auc_ci_low"] < result["auc"] < result["auc_ci_high"]
    assert result["auc"] == pytest.approx(result["fold_auc_mean"])
    if permute:
        assert 0.4 <= result["auc"] <= 0.6, result["auc"]
        assert result["auc_ci_low"] < 0.5 < result["auc_ci_high"]
    else:
        assert result["auc"] > 0.7 and result["auc_ci_low"] > 0.5


def test_fit_table_without_its_config_or_table_is_refused():
    with pytest.raises(InputError, match="conf/fit_table.yaml"):
        run_fit_table_stage(compose_config(["++table=x.csv", "tracking.enabled=false"]))
    with pytest.raises(InputError, match="needs table=PATH"):
        run_fit_table_stage(compose_config(["tracking.enabled=false"], "fit_table"))
