"""The segment stage on the tiny synthetic cohort: real U-Net training, inference, manifest, MLflow."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from cagerisk.cohort.manifest import load_manifest
from cagerisk.segment import ct_mask_for_features, ct_mask_sources, segment_ct
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
]


@pytest.mark.slow
def test_segment_stage_end_to_end(tiny_cohort: Path, make_config, tmp_path: Path):
    manifest = tiny_cohort / "cohort" / "manifest.csv"
    cfg = make_config(f"segment.manifest={manifest}", "segment.trainer.max_epochs=2", *TINY_UNET)
    score = run_segment_stage(cfg)
    assert 0.0 <= score <= 1.0

    out = Path(cfg.paths.segment)
    cohort = load_manifest(manifest)
    seg = load_manifest(out / "manifest.csv")
    # Same patients and columns as the cohort, plus the predicted mask and its source.
    assert list(seg["patient_id"]) == list(cohort["patient_id"])
    assert set(cohort.columns) | {"ct_mask_pred", "ct_mask_source"} == set(seg.columns)
    assert (seg["ct_mask_source"] == "predicted").all()
    assert list(ct_mask_for_features(seg)) == list(seg["ct_mask_pred"])
    for _, row in seg.iterrows():
        pred, ct = sitk.ReadImage(row["ct_mask_pred"]), sitk.ReadImage(row["ct_image"])
        assert pred.GetSize() == ct.GetSize() and np.allclose(pred.GetOrigin(), ct.GetOrigin())
        assert set(np.unique(sitk.GetArrayViewFromImage(pred))) <= set(range(7))
    dice = pd.read_csv(out / "dice.csv")
    assert set(dice["split"]) == {"train", "val", "test"} and len(dice) == len(cohort)

    # One MLflow run: per-epoch curves from Lightning, per-vertebra Dice, the model.
    client = mlflow.MlflowClient(cfg.tracking.uri)
    runs = client.search_runs(
        [client.get_experiment_by_name(cfg.tracking.experiment).experiment_id], "tags.`cagerisk.stage` = 'segment'"
    )
    assert len(runs) == 1
    run = runs[0]
    for split in ("val", "test"):
        for name in ("L1", "L2", "L3", "L4", "L5", "S1", "mean"):
            assert f"dice_{split}_{name}" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
    assert len(client.get_metric_history(run.info.run_id, "val_dice")) == 2
    assert run.info.status == "FINISHED"
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    assert any(m.source_run_id == run.info.run_id and m.name == "unet" for m in models)

    # Serving: the saved model segments a CT given as a path or an image, on the CT's own grid.
    ct_path = seg["ct_image"].iloc[0]
    labels = segment_ct(ct_path, cfg.segment.model_path)
    again = segment_ct(sitk.ReadImage(ct_path), cfg.segment.model_path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(again))
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(sitk.ReadImage(seg["ct_mask_pred"].iloc[0]))
    )

    # Resumable: one more epoch continues from last.ckpt instead of starting over.
    last = Path(cfg.segment.checkpoint_dir) / "last.ckpt"
    steps = torch.load(last, weights_only=True, map_location="cpu")["global_step"]
    resumed = make_config(f"segment.manifest={manifest}", "segment.trainer.max_epochs=3", "segment.resume=last", *TINY_UNET)
    run_segment_stage(resumed)
    second = client.search_runs(
        [run.info.experiment_id], "tags.`cagerisk.stage` = 'segment'", order_by=["attributes.start_time DESC"]
    )[0]
    assert second.info.run_id != run.info.run_id
    # No epoch before the checkpoint was trained again (the first logged step is the checkpoint's).
    assert min(m.step for m in client.get_metric_history(second.info.run_id, "train_loss")) >= steps - 1
    assert torch.load(last, weights_only=True, map_location="cpu")["global_step"] == steps * 3 // 2


def test_missing_columns_and_model_are_clear_errors(tmp_path: Path, make_config):
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"patient_id": ["P1"], "cs": [0], "split": ["train"], "ct_image": ["x.nii.gz"]}).to_csv(manifest, index=False)
    with pytest.raises(ValueError, match=r"manifest .*manifest\.csv: missing column\(s\) \['ct_mask'\]"):
        run_segment_stage(make_config(f"segment.manifest={manifest}"))
    with pytest.raises(FileNotFoundError, match=r"segmentation model .*nothing\.pt does not exist"):
        segment_ct(tmp_path / "ct.nii.gz", tmp_path / "nothing.pt")


@pytest.mark.slow
def test_a_ct_that_fails_to_segment_names_the_patient_and_keeps_the_model(tiny_cohort: Path, make_config, tmp_path: Path):
    frame = load_manifest(tiny_cohort / "cohort" / "manifest.csv")
    broken = tmp_path / "broken_ct.nii.gz"
    broken.write_bytes(b"not a nifti image")
    victim = frame.index[frame["split"] == "test"][0]
    frame.loc[victim, "ct_image"] = str(broken)
    manifest = tmp_path / "manifest.csv"
    frame.to_csv(manifest, index=False)
    cfg = make_config(f"segment.manifest={manifest}", "segment.trainer.max_epochs=1", "tracking.enabled=false", *TINY_UNET)
    with pytest.raises(RuntimeError, match=rf"patient {frame.loc[victim, 'patient_id']}: segmenting CT .*broken_ct"):
        run_segment_stage(cfg)
    # The trained network was saved before inference: fixing the input needs no retraining to score.
    assert Path(cfg.segment.model_path).is_file()
    segment_ct(frame.loc[frame.index[0], "ct_image"], cfg.segment.model_path)


def test_ct_mask_sources():
    frame = pd.DataFrame({"ct_mask": ["a.nii.gz", None, ""]})
    assert ct_mask_sources(frame, "predicted") == ["predicted"] * 3
    assert ct_mask_sources(frame, "manual") == ["manual", "predicted", "predicted"]
    with pytest.raises(ValueError, match="segment.ct_mask"):
        ct_mask_sources(frame, "best")
