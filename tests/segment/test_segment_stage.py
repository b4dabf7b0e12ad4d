"""The segment stage on the tiny synthetic cohort: real U-Net training (every sequence), inference,
manifest, scores, MLflow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from cagerisk.cohort.manifest import load_manifest
from cagerisk.cohort.schema import SEQUENCES
from cagerisk.segment import ct_mask_for_features, ct_mask_sources, segment_ct, segment_image
from cagerisk.segment.manifest import mask_for_features, with_feature_masks
from cagerisk.segment.model import load_bundle
from cagerisk.stages.segment import run_segment_stage

TINY_UNET = [
    "segment.net.channels=[4,8,16]",
    "segment.net.strides=[2,2]",
    "segment.spacing_mm=[4.0,4.0,5.0]",
    "segment.roi_size=[32,32,16]",
    "segment.batch_size=4",
    "segment.sw_batch_size=4",
    "segment.trainer.check_val_every_n_epoch=1",
    "segment.torch_threads=1",
    "segment.min_val_dice=0",  # 1-2 epochs of a tiny net: accept whatever it learnt
]
# The MRI U-Nets keep their own spacing / patch (the config's); only smaller nets and 1 epoch here.
TINY_MRI = [
    f"segment.sequences.{seq}.{key}"
    for seq in ("t1", "t2", "t1ax", "t2ax")
    for key in ("net.channels=[4,8,16]", "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1")
]
CT_ONLY = [f"~segment.sequences.{seq}" for seq in ("t1", "t2", "t1ax", "t2ax")]


@pytest.mark.slow
def test_segment_stage_end_to_end(tiny_cohort: Path, make_config, tmp_path: Path):
    manifest = tiny_cohort / "cohort" / "manifest.csv"
    cfg = make_config(
        f"segment.manifest={manifest}", "segment.trainer.max_epochs=2", "segment.sequences.t2.masks=manual", *TINY_UNET, *TINY_MRI
    )
    score = run_segment_stage(cfg)
    assert 0.0 <= score <= 1.0

    out = Path(cfg.paths.segment)
    cohort = load_manifest(manifest)
    seg = load_manifest(out / "manifest.csv")
    # Same patients and columns as the cohort, plus every sequence's predicted mask and its source.
    assert list(seg["patient_id"]) == list(cohort["patient_id"])
    added = {f"{seq}_mask_{what}" for seq in SEQUENCES for what in ("pred", "source")}
    assert set(cohort.columns) | added == set(seg.columns)
    for seq in ("ct", "t1", "t1ax", "t2ax"):
        assert (seg[f"{seq}_mask_source"] == "predicted").all()
        assert list(mask_for_features(seg, seq)) == list(seg[f"{seq}_mask_pred"])
    # segment.sequences.t2.masks=manual: later stages read the manual T2 masks (every patient has one).
    assert (seg["t2_mask_source"] == "manual").all()
    assert list(mask_for_features(seg, "t2")) == list(seg["t2_mask"])
    features, counts = with_feature_masks(seg)
    assert list(features["t1ax_mask"]) == list(seg["t1ax_mask_pred"]) and counts["t2"] == {"manual": len(seg)}
    # The manual masks stay (reproducibility reads both readers' manual masks).
    assert [os.path.realpath(p) for p in seg["t1ax_mask"]] == [os.path.realpath(p) for p in cohort["t1ax_mask"]]
    assert list(ct_mask_for_features(seg)) == list(seg["ct_mask_pred"])
    allowed = {
        "ct": set(range(7)),
        "t1": set(range(7)) | set(range(11, 16)),
        "t2": set(range(7)) | set(range(11, 16)),
        "t1ax": {0} | set(range(21, 27)),
        "t2ax": {0} | set(range(21, 27)),
    }
    for _, row in seg.iterrows():
        for seq in SEQUENCES:
            pred, image = sitk.ReadImage(row[f"{seq}_mask_pred"]), sitk.ReadImage(row[f"{seq}_image"])
            assert pred.GetSize() == image.GetSize() and np.allclose(pred.GetOrigin(), image.GetOrigin())
            assert set(np.unique(sitk.GetArrayViewFromImage(pred))) <= allowed[seq]
    scores = pd.read_csv(out / "dice.csv")
    assert set(scores["split"]) == {"train", "val", "test"}
    # One row per patient and structure of each sequence: 6 bodies (CT), 6 + 5 (sagittal), 6 muscles (axial).
    per_patient = {"ct": 6, "t1": 11, "t2": 11, "t1ax": 6, "t2ax": 6}
    assert scores.groupby("sequence").size().to_dict() == {s: n * len(cohort) for s, n in per_patient.items()}
    assert ((scores["dice"] >= 0) & (scores["dice"] <= 1)).all()
    assert (scores["hd95"].dropna() >= 0).all()

    # One MLflow run: per-epoch curves of each U-Net from Lightning, Dice / HD95 per structure, the models.
    client = mlflow.MlflowClient(cfg.tracking.uri)
    runs = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment).experiment_id], "tags.`cagerisk.stage` = 'segment'"
    )
    assert len(runs) == 1
    run = runs[0]
    metrics = run.data.metrics
    for split in ("val", "test"):
        for name in ("vertebra_L1", "vertebra_S1", "vertebra", "mean"):
            assert f"dice_ct_{split}_{name}" in metrics
        for name in ("disc_L4-L5", "disc", "vertebra"):
            assert f"dice_t1_{split}_{name}" in metrics
        for name in ("psoas_left", "quadratus_right", "paraspinal"):
            assert f"dice_t2ax_{split}_{name}" in metrics
    written = json.loads((out / "metrics.json").read_text())
    assert {f"hd95_{seq}_test_mean" for seq in SEQUENCES} <= set(written)
    # MLflow gets every finite mean (HD95 is NaN where no prediction holds the structure).
    assert {k for k, v in written.items() if np.isfinite(v)} <= set(metrics)
    assert len(client.get_metric_history(run.info.run_id, "ct-train_loss")) == 2
    assert len(client.get_metric_history(run.info.run_id, "ct-val_dice")) == 2
    assert len(client.get_metric_history(run.info.run_id, "t1ax-val_dice")) == 1
    assert run.info.status == "FINISHED"
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert {f"unet_{seq}" for seq in SEQUENCES} <= {m.name for m in models if m.source_run_id == run.info.run_id}
    assert "| psoas_left |" in (out / "report.md").read_text()

    # Every sequence's saved model segments its image on the image's own grid, as in the stage.
    for seq in ("t2", "t1ax"):
        model = Path(cfg.segment.model_path.replace("{sequence}", seq))
        labels = segment_image(seg[f"{seq}_image"].iloc[0], model)
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(sitk.ReadImage(seg[f"{seq}_mask_pred"].iloc[0]))
        )

    # Serving: the saved model segments a CT given as a path or an image, on the CT's own grid.
    ct_path = seg["ct_image"].iloc[0]
    ct_model = cfg.segment.model_path.replace("{sequence}", "ct")
    labels = segment_ct(ct_path, ct_model)
    again = segment_ct(sitk.ReadImage(ct_path), ct_model)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(again))
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(sitk.ReadImage(seg["ct_mask_pred"].iloc[0]))
    )

    # Resumable: one more epoch continues from last.ckpt instead of starting over.
    last = Path(cfg.segment.checkpoint_dir) / "ct" / "last.ckpt"
    steps = torch.load(last, weights_only=True, map_location="cpu")["global_step"]
    # ...with a validation-Dice bar no U-Net can pass: its masks are not used (manual) and it is marked.
    ungated = [o for o in TINY_UNET if not o.startswith("segment.min_val_dice")]
    resumed = make_config(
        f"segment.manifest={manifest}",
        "segment.trainer.max_epochs=3",
        "segment.resume=last",
        "segment.min_val_dice=1.01",
        *ungated,
        *CT_ONLY,
    )
    run_segment_stage(resumed)
    second = client.search_runs(
        [run.info.experiment_id], "tags.`cagerisk.stage` = 'segment'", order_by=["attributes.start_time DESC"]
    )[0]
    assert second.info.run_id != run.info.run_id
    # No epoch before the checkpoint was trained again (the first logged step is the checkpoint's).
    assert min(m.step for m in client.get_metric_history(second.info.run_id, "ct-train_loss")) >= steps - 1
    assert torch.load(last, weights_only=True, map_location="cpu")["global_step"] == steps * 3 // 2
    assert (load_manifest(out / "manifest.csv")["ct_mask_source"] == "manual").all()
    assert load_bundle(ct_model).accepted is False and load_bundle(ct_model.replace("_ct.", "_t1.")).accepted is True


def test_missing_columns_and_model_are_clear_errors(tmp_path: Path, make_config):
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"patient_id": ["P1"], "cs": [0], "split": ["train"], "ct_image": ["x.nii.gz"]}).to_csv(manifest, index=False)
    with pytest.raises(ValueError, match=r"manifest .*manifest\.csv: missing column\(s\) \['ct_mask'\]"):
        run_segment_stage(make_config(f"segment.manifest={manifest}", *CT_ONLY))
    # Every sequence's columns are checked before any training starts (here the first MRI one).
    with pytest.raises(ValueError, match=r"missing column\(s\) \['t1_image', 't1_mask'\]"):
        run_segment_stage(make_config(f"segment.manifest={manifest}", "~segment.sequences.ct"))
    with pytest.raises(FileNotFoundError, match=r"segmentation model .*nothing\.pt does not exist"):
        segment_ct(tmp_path / "ct.nii.gz", tmp_path / "nothing.pt")


@pytest.mark.slow
def test_a_ct_that_fails_to_segment_names_the_patient_and_keeps_the_model(tiny_cohort: Path, make_config, tmp_path: Path):
    frame = load_manifest(tiny_cohort / "cohort" / "manifest.csv")
    broken = tmp_path / "broken_ct.nii.gz"
    broken.write_bytes(b"not a nifti image")
    victim = frame.index[frame["split"] == "test"][0]
    frame.loc[victim, "ct_image"] = str(broken)
    # Without a manual mask the patient passes the check before training (which would name it there) and
    # fails at inference, after training.
    frame.loc[victim, "ct_mask"] = None
    manifest = tmp_path / "manifest.csv"
    frame.to_csv(manifest, index=False)
    cfg = make_config(
        f"segment.manifest={manifest}", "segment.trainer.max_epochs=1", "tracking.enabled=false", *TINY_UNET, *CT_ONLY
    )
    with pytest.raises(RuntimeError, match=rf"patient {frame.loc[victim, 'patient_id']}: segmenting ct image .*broken_ct"):
        run_segment_stage(cfg)
    # The trained network was saved before inference: fixing the input needs no retraining to score.
    model = Path(cfg.segment.model_path.replace("{sequence}", "ct"))
    assert model.is_file()
    segment_ct(frame.loc[frame.index[0], "ct_image"], model)


def test_ct_mask_sources():
    frame = pd.DataFrame({"ct_mask": ["a.nii.gz", None, ""]})
    assert ct_mask_sources(frame, "predicted") == ["predicted"] * 3
    assert ct_mask_sources(frame, "manual") == ["manual", "predicted", "predicted"]
    with pytest.raises(ValueError, match="segment.masks"):
        ct_mask_sources(frame, "best")
