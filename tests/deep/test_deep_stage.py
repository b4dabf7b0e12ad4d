"""The cross-fitted deep stage on the tiny synthetic cohort, the folds' and the DataModule's split discipline,
the paper-size ViT."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from omegaconf import OmegaConf

from cagerisk.cohort.manifest import load_manifest
from cagerisk.config.pipeline import DeepCrossfitConfig
from cagerisk.deep import (
    FOLD_COLUMN,
    SEEN_COLUMN,
    DeepDataModule,
    DeepEmbedder,
    PreprocessError,
    PreprocessSettings,
    build_deep_net,
    crossfit_plan,
    deep_inputs,
    feature_columns,
    fold_samples,
    load_deep_bundle,
    preprocess_cohort,
)
from cagerisk.models.crossfit import long_to_wide
from cagerisk.stages.deep import run_deep_stage

INPUTS = ["ct_vertebra", "t2_disc", "t1ax_psoas"]
TINY_VIT = [
    f"deep.inputs=[{','.join(INPUTS)}]",
    "deep.backbone.img_size=16",
    "deep.backbone.patch_size=8",
    "deep.backbone.hidden_size=32",
    "deep.backbone.mlp_dim=64",
    "deep.backbone.num_layers=1",
    "deep.backbone.num_heads=2",
    "deep.backbone.proj_type=conv",
    "deep.head.embed_dim=4",
    "deep.batch_size=8",
    "deep.preprocess_workers=0",
    "deep.torch_threads=1",
]


def vit2d_checkpoint(path: Path) -> None:
    """A 2-D ViT checkpoint (timm names) matching the tiny backbone's width."""
    torch.manual_seed(0)
    torch.save(
        {
            "patch_embed.proj.weight": torch.randn(32, 3, 8, 8),
            "patch_embed.proj.bias": torch.randn(32),
            "blocks.0.mlp.fc1.weight": torch.randn(64, 32),
            "blocks.0.norm1.weight": torch.randn(32),
            "head.weight": torch.randn(10, 32),
        },
        path,
    )


@pytest.mark.slow
def test_deep_stage_end_to_end(tiny_cohort: Path, make_config, tmp_path: Path):
    manifest = tiny_cohort / "cohort" / "manifest.csv"
    vit2d_checkpoint(tmp_path / "vit2d.pt")
    overrides = [f"deep.manifest={manifest}", f"deep.pretrained={tmp_path / 'vit2d.pt'}", "deep.crossfit.folds=2", *TINY_VIT]
    cfg = make_config(*overrides, "deep.trainer.max_epochs=2")
    oof_auc = run_deep_stage(cfg)
    assert 0.0 <= oof_auc <= 1.0

    cohort = load_manifest(manifest)
    table = pd.read_parquet(Path(cfg.paths.features) / "deep.parquet")
    pairs = deep_inputs(INPUTS)
    assert list(table.columns) == ["patient_id", FOLD_COLUMN, SEEN_COLUMN, *feature_columns(pairs, 4)]
    # One row per (patient, fold model), every patient embedded by both fold networks.
    assert len(table) == 2 * len(cohort)
    assert all(folds == [0, 1] for folds in table.groupby("patient_id")[FOLD_COLUMN].apply(sorted))
    assert np.isfinite(table[feature_columns(pairs, 4)].to_numpy()).all()
    assert table.filter(like="t2_disc_dl_").std().min() > 0, "embeddings differ between patients"
    # Labels seen: training patients only, each held out by exactly one fold model; never val/test.
    split = cohort.set_index("patient_id")["split"]
    seen = table.pivot(index="patient_id", columns=FOLD_COLUMN, values=SEEN_COLUMN)
    assert not seen.loc[split[split != "train"].index].to_numpy().any()
    assert (seen.loc[split[split == "train"].index].sum(axis=1) == 1).all()

    client = mlflow.MlflowClient(cfg.tracking.uri)
    run = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment).experiment_id], "tags.`cagerisk.stage` = 'deep'"
    )[0]
    for fold in (0, 1):  # per epoch and fold model, via Lightning; the epoch choice is on the inner split
        assert len(client.get_metric_history(run.info.run_id, f"fold{fold}-val_auc")) == 2
        assert len(client.get_metric_history(run.info.run_id, f"fold{fold}-train_loss")) == 2
    assert run.data.metrics["pretrained_inflated"] == 1 and run.data.metrics["pretrained_loaded"] == 3
    # Only `evaluate` reads test-split outcomes: the deep stage neither writes nor logs a test metric.
    deep_metrics = json.loads((Path(cfg.paths.features) / "deep_metrics.json").read_text())
    assert {"oof_auc", "val_auc", "fold0_stop_auc", "n_folds"} <= set(deep_metrics)
    assert not [k for k in deep_metrics if "test" in k]
    assert not [k for k in run.data.metrics if "test" in k]
    report = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="pretrained_report.json", tracking_uri=cfg.tracking.uri
            )
        ).read_text()
    )
    assert report["unexpected"] == ["head.weight"]
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert any(m.source_run_id == run.info.run_id and m.name == "vit3d" for m in models)

    # The bundle records whom each fold network was trained on, as the table does.
    bundle = load_deep_bundle(cfg.deep.model_path)
    assert bundle.n_folds == 2
    for fold in (0, 1):
        assert set(bundle.trained_on[fold]) == set(seen.index[seen[fold]])

    # Scoring parity: a new patient's in-memory volumes give the exported rows of every fold network.
    row = cohort.iloc[0]
    embedder = DeepEmbedder.load(cfg.deep.model_path)
    volumes = {seq: (sitk.ReadImage(row[f"{seq}_image"]), sitk.ReadImage(row[f"{seq}_mask"])) for seq in ("ct", "t2", "t1ax")}
    features = embedder.embed(volumes, row["fused_levels"], patient_id=row["patient_id"])
    wide = long_to_wide(table).features
    assert sorted(features) == sorted(wide.columns) == sorted(embedder.columns)
    expected = wide.loc[row["patient_id"]].astype(float)
    np.testing.assert_allclose([features[c] for c in expected.index], expected.to_numpy(), atol=1e-5)

    # Resumable: the next run continues each fold from its last.ckpt (and reads its inputs from the cache).
    last = Path(cfg.deep.checkpoint_dir) / "fold1" / "last.ckpt"
    steps = torch.load(last, weights_only=True, map_location="cpu")["global_step"]
    run_deep_stage(make_config(*overrides, "deep.trainer.max_epochs=3", "deep.resume=last", "deep.patience=10"))
    second = client.search_runs(
        [run.info.experiment_id], "tags.`cagerisk.stage` = 'deep'", order_by=["attributes.start_time DESC"]
    )[0]
    assert second.info.run_id != run.info.run_id
    # No epoch before the checkpoint was trained again (the first logged step is the checkpoint's).
    assert min(m.step for m in client.get_metric_history(second.info.run_id, "fold1-train_loss")) >= steps - 1
    assert torch.load(last, weights_only=True, map_location="cpu")["global_step"] == steps * 3 // 2


def test_crossfit_plan_folds_are_disjoint_stratified_and_never_use_validation():
    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame(
        {
            "patient_id": [f"P{i:03d}" for i in range(n)],
            "split": ["train"] * 40 + ["val"] * 10 + ["test"] * 10,
            "cs": rng.permutation([1] * 12 + [0] * 28).tolist() + [1, 0] * 10,
        }
    )
    plans = crossfit_plan(frame, DeepCrossfitConfig(folds=4, inner_fraction=0.2, monitor="val_loss"), seed=3, source="m.csv")
    train_ids = set(frame.loc[frame["split"] == "train", "patient_id"])
    assert sorted(p for plan in plans for p in plan.held_out) == sorted(train_ids)  # each held out once
    y = frame.set_index("patient_id")["cs"]
    for plan in plans:
        assert set(plan.fit) | set(plan.stop) | set(plan.held_out) == train_ids
        assert not set(plan.fit) & set(plan.stop) and not set(plan.trained_on) & set(plan.held_out)
        assert set(y[plan.stop]) == {0, 1} and 2 <= y[plan.held_out].sum() <= 4  # stratified
        relabelled = fold_samples([{"patient_id": p, "split": "train"} for p in frame["patient_id"]], plan)
        assert {s["patient_id"] for s in relabelled if s["split"] == "val"} == set(plan.stop)
        assert {s["patient_id"] for s in relabelled} == set(plan.trained_on)
    again = crossfit_plan(frame, DeepCrossfitConfig(folds=4, inner_fraction=0.2, monitor="val_loss"), seed=3, source="m.csv")
    assert [p.fit for p in again] == [p.fit for p in plans]  # seeded
    with pytest.raises(ValueError, match=r"m\.csv: 12 training patient\(s\) of the minority outcome; deep.crossfit.folds=7"):
        crossfit_plan(frame, DeepCrossfitConfig(folds=7, inner_fraction=0.2, monitor="val_loss"), seed=3, source="m.csv")


def test_datamodule_trains_on_the_training_split_only():
    samples = [
        {"image": torch.zeros(1, 4, 4, 4), "input_index": 0, "label": float(i % 4 == 0), "patient_id": f"P{i}", "split": split}
        for i, split in enumerate(["train"] * 8 + ["val"] * 4 + ["test"] * 4 + [None])
    ]
    dm = DeepDataModule(samples, batch_size=4, augment={"enabled": False})
    seen = {pid for batch in dm.train_dataloader() for pid in batch["patient_id"]}
    assert seen == {f"P{i}" for i in range(8)}
    assert {pid for batch in dm.val_dataloader() for pid in batch["patient_id"]} == {f"P{i}" for i in range(8, 12)}
    assert dm.pos_weight() == pytest.approx(6 / 2)  # P0 and P4 positive among 8
    balanced = DeepDataModule(samples, batch_size=4, augment={"enabled": False}, balanced_sampler=True)
    loader = balanced.train_dataloader()  # one loader, many epochs: its generator moves on
    labels = torch.cat([b["label"] for _ in range(50) for b in loader])
    assert 0.4 < float(labels.mean()) < 0.6


def test_preprocess_errors_name_the_patient_and_keep_the_rest(tiny_cohort: Path, tmp_path: Path):
    frame = load_manifest(tiny_cohort / "cohort" / "manifest.csv").head(3).copy()
    broken = tmp_path / "broken_t2.nii.gz"
    broken.write_bytes(b"this is not a NIfTI file")
    original = frame["t2_image"].iloc[1]
    frame.loc[frame.index[1], "t2_image"] = str(broken)
    bad_pid = frame["patient_id"].iloc[1]
    cache = tmp_path / "cache"
    settings = PreprocessSettings(input_size=8, margin_mm=5.0)
    with pytest.raises(PreprocessError, match=rf"(?s)1 of 6 volume\(s\).*patient {bad_pid}, t2 .*broken_t2\.nii\.gz"):
        preprocess_cohort(frame, deep_inputs(["ct_vertebra", "t2_disc"]), settings, cache_dir=cache)
    assert len(list(cache.glob("*.pt"))) == 5, "the good volumes are cached"
    shutil.copy(original, broken)  # "fix" the file
    samples = preprocess_cohort(frame, deep_inputs(["ct_vertebra", "t2_disc"]), settings, cache_dir=cache)
    assert len(samples) == 6 and all(tuple(s["image"].shape) == (1, 8, 8, 8) for s in samples)


def test_unknown_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"deep.inputs: unknown input 'ct_disc'"):
        deep_inputs(["ct_disc"])


def test_paper_size_vit_forward_backward(make_config):
    cfg = make_config("deep=vit3d")
    assert (
        cfg.deep.backbone.img_size,
        cfg.deep.backbone.patch_size,
        cfg.deep.backbone.hidden_size,
        cfg.deep.backbone.num_layers,
        cfg.deep.backbone.num_heads,
        cfg.deep.backbone.mlp_dim,
        cfg.deep.lr,
    ) == (128, 16, 1024, 6, 8, 2048, 2e-5)
    net = build_deep_net(OmegaConf.to_container(cfg.deep, resolve=True), deep_inputs(None))
    image = torch.randn(1, 1, 128, 128, 128)
    logit = net(image, torch.tensor([3]))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.ones(1))
    loss.backward()
    assert logit.shape == (1,)
    grad = net.backbone.patch_embedding.patch_embeddings.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
