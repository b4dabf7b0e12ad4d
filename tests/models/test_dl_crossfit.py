"""Cross-fitted DL-sign: no training patient's signature value comes from a model that saw its label.

The deep table is made like the deep stage's (one row per patient and fold model, ``label_seen``), with a
fine-tuned network's failure mode built in: each fold model's embedding carries the label of every patient
it was trained on (memorised), and only noise in that column for the others. A DL-sign fitted on in-sample
embeddings ranks the training patients almost perfectly; the cross-fitted one must not.
"""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score
from synthetic_cohort import compose_config, make_synthetic_cohort, tiny_overrides

from cagerisk.deep import FOLD_COLUMN, SEEN_COLUMN
from cagerisk.models.compiled import compile_pipeline
from cagerisk.models.crossfit import CrossFittedSignature, read_deep_table
from cagerisk.models.served import positive_proba
from cagerisk.stages.combined import run_combined_stage
from cagerisk.stages.signatures import run_signatures_stage

K = 3


def crossfit_deep_table(root: Path, seed: int = 1) -> pd.DataFrame:
    """Replace ``features/deep.parquet`` by a cross-fitted long table of K fold models with a label leak."""
    rng = np.random.default_rng(seed)
    manifest = pd.read_csv(root / "cohort" / "manifest.csv")
    plain = pd.read_parquet(root / "features" / "deep.parquet").set_index("patient_id").loc[manifest["patient_id"]]
    train = manifest["split"].eq("train").to_numpy()
    fold_of = np.full(len(manifest), -1)
    fold_of[train] = rng.permutation(np.arange(train.sum()) % K)
    leak = "t2_disc_dl_39"
    parts = []
    for fold in range(K):
        part = plain.copy() + rng.normal(0, 0.1, plain.shape)  # each network embeds a little differently
        seen = train & (fold_of != fold)
        part[leak] = np.where(seen, 3.0 * manifest["cs"].to_numpy() + rng.normal(0, 0.3, len(part)), rng.normal(0, 1, len(part)))
        part = part.reset_index()
        part.insert(1, FOLD_COLUMN, fold)
        part.insert(2, SEEN_COLUMN, seen)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    table.to_parquet(root / "features" / "deep.parquet", index=False)
    return table


@pytest.fixture(scope="module")
def crossfitted(tmp_path_factory: pytest.TempPathFactory):
    root = make_synthetic_cohort(tmp_path_factory.mktemp("crossfit"))
    table = crossfit_deep_table(root)
    # The default models (DL-sign: impute + PCA + CV-tuned L2 LR), searches shrunk to seconds.
    overrides = [o for o in tiny_overrides(root) if not o.startswith(("sweep=", "classifier.include", "sweep.n_trials"))]
    # Rad-sign is not under test here: the quick L2 LR instead of the stack.
    cfg = compose_config([*overrides, "sweep.include.rad=[lr_cv]", "tracking.enabled=false"])
    summary = run_signatures_stage(cfg)
    return root, cfg, table, summary


def test_no_training_dl_sign_comes_from_a_model_that_saw_its_label(crossfitted):
    root, _, table, summary = crossfitted
    out = root / "models" / "signatures"
    scores = pd.read_parquet(out / "scores.parquet").set_index("patient_id")
    model = joblib.load(out / "dl_pipeline.joblib")
    assert isinstance(model, CrossFittedSignature) and model.n_folds == K
    deep = read_deep_table(root / "features" / "deep.parquet")
    wide, seen = deep.features.loc[scores.index], deep.label_seen.loc[scores.index]
    fold_proba = model.fold_proba(wide)
    train = (scores["split"] == "train").to_numpy()
    # Each fold pipeline was fitted on exactly the training patients its network saw.
    for fold in range(K):
        assert set(model.trained_on[fold]) == set(seen.index[seen[fold] & train])
    for i, (pid, row) in enumerate(scores.iterrows()):
        fold = int(row["dl_sign_fold"])
        if not train[i]:
            assert fold == -1
            assert row["dl_sign"] == pytest.approx(fold_proba[i].mean(), abs=1e-12)
            continue
        assert 0 <= fold < K, pid
        assert pid not in model.trained_on[fold], f"{pid}: DL-sign from fold pipeline {fold}, fitted on its label"
        assert not seen.loc[pid, fold], f"{pid}: DL-sign from fold network {fold}, trained on its label"
        assert row["dl_sign"] == pytest.approx(fold_proba[i, fold], abs=1e-12)
    # Every training patient held out exactly once over the folds.
    assert sorted(scores.loc[train, "dl_sign_fold"].value_counts().index) == list(range(K))
    entry = summary["signatures"]["dl"]
    assert entry["crossfit"]["folds"] == K and entry["cv_auc"] == pytest.approx(entry["oof_auc_train"])


def test_crossfitting_removes_the_in_sample_optimism(crossfitted):
    """Behaviour: the memorised label makes each fold pipeline near-perfect on its own patients; the
    out-of-fold training DL-sign stays near what validation patients get."""
    root = crossfitted[0]
    scores = pd.read_parquet(root / "models" / "signatures" / "scores.parquet").set_index("patient_id")
    model = joblib.load(root / "models" / "signatures" / "dl_pipeline.joblib")
    wide = read_deep_table(root / "features" / "deep.parquet").features.loc[scores.index]
    y, train, val = scores["cs"].to_numpy(), (scores["split"] == "train").to_numpy(), (scores["split"] == "val").to_numpy()
    fold_proba = model.fold_proba(wide)
    in_sample = [
        roc_auc_score(y[np.isin(scores.index, ids)], fold_proba[np.isin(scores.index, ids), fold])
        for fold, ids in enumerate(model.trained_on)
    ]
    oof, val_auc = roc_auc_score(y[train], scores.loc[train, "dl_sign"]), roc_auc_score(y[val], scores.loc[val, "dl_sign"])
    assert min(in_sample) > 0.93, in_sample  # the leak is there to be exploited
    assert oof < min(in_sample) - 0.1 and abs(oof - val_auc) < 0.15, (oof, val_auc, in_sample)


def test_served_dl_sign_is_the_pipelines(crossfitted, tmp_path):
    """The combined model and the serving bundle carry the K fold pipelines: the served DL-sign of a
    held-out patient is the signatures stage's (1e-6), from the wide deep columns of every fold."""
    from cagerisk.serving.bundle import BundleSources, build_serving_bundle, feature_rows, read_training_tables
    from cagerisk.serving.model import CageRiskModel

    root, cfg, _, _ = crossfitted
    run_combined_stage(cfg)  # its own check: the saved model reproduces the held-out scores
    combined = joblib.load(root / "models" / "combined" / "model.joblib")
    assert isinstance(combined.dl_pipeline, CrossFittedSignature)
    tables = read_training_tables(root / "cohort", root / "features")
    radiomics = OmegaConf.to_container(cfg.radiomics, resolve=True)
    sources = BundleSources(root / "models" / "combined" / "model.joblib", radiomics, segment_model=None, deep_model=None)
    spec = build_serving_bundle(tmp_path / "bundle", tables, sources)
    assert all(c.rsplit("_", 1)[1] in {f"f{j}" for j in range(K)} for c in spec.deep_features)
    served = CageRiskModel()
    served.load_bundle(tmp_path / "bundle")
    assert served.compiled is not None  # the numpy path takes the K fold pipelines too (checked at load)
    scores = pd.read_parquet(root / "models" / "signatures" / "scores.parquet").set_index("patient_id")
    held = scores.index[scores["split"] != "train"][:12].tolist()
    out = served.score(feature_rows(spec, tables, held))
    np.testing.assert_allclose(out["dl_sign"].to_numpy(float), scores.loc[held, "dl_sign"].to_numpy(), atol=1e-6)
    # Value arrays in the pipeline's column order score as the named table does.
    X = tables.deep.loc[held, combined.deep_features]
    np.testing.assert_allclose(positive_proba(combined.dl_pipeline, X.to_numpy()), positive_proba(combined.dl_pipeline, X))
    compiled = compile_pipeline(combined.dl_pipeline)
    np.testing.assert_allclose(compiled.positive_proba(X.to_numpy()), positive_proba(combined.dl_pipeline, X), rtol=0, atol=1e-12)
    assert compiled.positive_proba(X.to_numpy()[:, :-1]) is None  # a wrong width is scikit-learn's to refuse


def test_a_plain_deep_table_keeps_the_single_pipeline(tmp_path):
    """A deep table made elsewhere (one row per patient) is fitted as before: one pipeline, CV scores."""
    root = make_synthetic_cohort(tmp_path / "plain")
    deep = read_deep_table(root / "features" / "deep.parquet")
    assert not deep.crossfitted and deep.features.index.is_unique


def test_a_broken_crossfit_table_is_a_clear_error(tmp_path):
    from cagerisk.models.data import InputError

    root = make_synthetic_cohort(tmp_path / "broken")
    table = crossfit_deep_table(root)
    table[~((table["patient_id"] == table["patient_id"].iloc[0]) & (table[FOLD_COLUMN] == 1))].to_parquet(
        root / "features" / "deep.parquet", index=False
    )
    first = table["patient_id"].iloc[0]
    with pytest.raises(
        InputError, match=rf"deep.parquet: deep table: patient\(s\) without exactly one row per fold model: \['{first}'\]"
    ):
        read_deep_table(root / "features" / "deep.parquet")


def test_combined_refuses_a_training_dl_sign_that_is_not_out_of_fold(crossfitted):
    from cagerisk.config.modelling import model_config
    from cagerisk.models.combined import fit_combined, read_signature_outputs
    from cagerisk.models.data import InputError, read_manifest

    root, cfg, _, _ = crossfitted
    manifest = read_manifest(root / "cohort" / "manifest.csv")
    signatures, pipelines = read_signature_outputs(root / "models" / "signatures", manifest)
    first = signatures.index[signatures["split"] == "train"][0]
    signatures.loc[first, "dl_sign_fold"] = -1  # as if it had the mean of all fold models, its own included
    with pytest.raises(InputError, match=rf"training patient\(s\) whose DL-sign is not out-of-fold: \['{first}'\]"):
        fit_combined(model_config(cfg), manifest.loc[signatures.index], signatures, pipelines, "synthetic")
