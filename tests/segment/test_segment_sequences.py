"""Per-sequence configs, class maps, the naming of several structures and HD95, against known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cagerisk.config import typed
from cagerisk.config.pipeline import SegmentConfig
from cagerisk.segment.metrics import per_label_hd95
from cagerisk.segment.model import class_labels, name_structures, structure_labels
from cagerisk.segment.sequences import model_path_for, segmented_sequences, sequence_config
from cagerisk.segment.training import TargetClassesd

AFFINE_UP = np.diag([2.0, 2.0, 2.0, 1.0])  # k points superior


def _config(make_config, *overrides: str) -> SegmentConfig:
    return typed(make_config(*overrides).segment, SegmentConfig, "segment")


def test_sequence_configs_are_the_shared_keys_with_their_overrides(make_config):
    config = _config(make_config, "segment.sequences.t2.masks=manual", "segment.lr=0.005")
    assert segmented_sequences(config) == ["ct", "t1", "t2", "t1ax", "t2ax"]
    ct, t2, t2ax = (sequence_config(config, s) for s in ("ct", "t2", "t2ax"))
    # CT: the shared keys as they are; its own model file and checkpoint folder.
    assert (ct.mode, ct.hu_window, ct.spacing_mm, ct.net["channels"]) == (
        "bottom_up",
        [-200.0, 1300.0],
        [2.5, 2.5, 3.5],
        [16, 32, 64, 128],
    )
    assert ct.model_path.endswith("segment/unet_ct.pt") and ct.checkpoint_dir.endswith("checkpoints/ct")
    # Sagittal: percentile scaling, its own spacing, lr and a smaller net; the rest (weight decay, net target) shared.
    assert t2.hu_window is None and t2.spacing_mm == [4.0, 3.0, 3.0] and (t2.lr, ct.lr) == (0.01, 0.005)
    assert t2.weight_decay == ct.weight_decay and t2.trainer["max_epochs"] == 20 and ct.trainer["max_epochs"] == 10
    assert t2.net["channels"] == [8, 16, 32] and t2.net["_target_"] == "monai.networks.nets.UNet"
    assert t2.masks == "manual" and ct.masks == "predicted" and sequence_config(config, "t1").masks == "predicted"
    # out_channels from the mode and the labels: body + disc (bottom-up), six muscles (multiclass).
    assert (ct.net["out_channels"], t2.net["out_channels"], t2ax.net["out_channels"]) == (2, 3, 7)
    assert t2ax.mode == "multiclass" and t2ax.flip_lr is False and ct.flip_lr is True
    assert sequence_config(_config(make_config, "segment.masks=manual"), "t1ax").masks == "manual"
    assert segmented_sequences(_config(make_config, "~segment.sequences.t1", "~segment.sequences.ct")) == ["t2", "t1ax", "t2ax"]


def test_bad_sequence_configs_are_named(make_config):
    config = _config(make_config)
    config.sequences["t3"] = {}
    with pytest.raises(ValueError, match=r"segment.sequences: unknown sequence\(s\) \['t3'\]"):
        segmented_sequences(config)
    config = _config(make_config)
    config.sequences["t1"] = {"epochs": 3}
    with pytest.raises(ValueError, match=r"segment.sequences.t1: unknown key\(s\) \['epochs'\]"):
        sequence_config(config, "t1")
    with pytest.raises(ValueError, match=r"has no \{sequence\}"):
        model_path_for("/m/unet.pt", "t2")
    assert str(model_path_for("/m/unet.pt", "ct")) == "/m/unet.pt"  # a config from before MRI U-Nets


def test_class_labels_and_training_targets():
    sagittal = structure_labels(["vertebra", "disc"])
    assert sagittal == [[1, 2, 3, 4, 5, 6], [11, 12, 13, 14, 15]]
    assert class_labels("bottom_up", sagittal) == sagittal and class_labels("binary", sagittal) == sagittal
    muscles = structure_labels(["psoas", "quadratus", "paraspinal"])
    assert class_labels("multiclass", muscles) == [[21], [22], [23], [24], [25], [26]]
    with pytest.raises(ValueError, match="unknown structure"):
        structure_labels(["liver"])
    mask = torch.tensor([[0, 1, 6, 11, 15, 21, 26, 7]], dtype=torch.float32)
    target = TargetClassesd(keys=["mask"], classes=sagittal)({"mask": mask})["mask"]
    assert target.tolist() == [[0, 1, 1, 2, 2, 0, 0, 0]]
    target = TargetClassesd(keys=["mask"], classes=class_labels("multiclass", muscles))({"mask": mask})["mask"]
    assert target.tolist() == [[0, 0, 0, 0, 0, 1, 6, 0]]


def test_bodies_and_discs_are_numbered_bottom_up_each():
    """Six bodies with five discs between them along k (superior): S1 / L5-S1 are the lowest."""
    probs = np.zeros((3, 12, 12, 120), dtype=np.float32)
    probs[0] = 1.0
    truth = np.zeros((12, 12, 120), dtype=np.uint8)
    k = 2
    for rank in range(6):  # bottom-up: S1 first
        probs[:, 2:10, 2:10, k : k + 12] = [[[[0.0]]], [[[0.95]]], [[[0.05]]]]
        truth[2:10, 2:10, k : k + 12] = 6 - rank
        if rank < 5:
            probs[:, 2:10, 2:10, k + 12 : k + 18] = [[[[0.0]]], [[[0.05]]], [[[0.95]]]]
            truth[2:10, 2:10, k + 12 : k + 18] = 15 - rank
        k += 18
    classes = structure_labels(["vertebra", "disc"])
    labels, summary = name_structures(probs, AFFINE_UP, "bottom_up", classes, min_component_mm3=100.0)
    np.testing.assert_array_equal(labels, truth)
    assert summary["1"]["kept"] == 6 and summary["2"]["kept"] == 5 and summary["2"]["expected"] == 5


def test_multiclass_names_by_argmax():
    probs = np.zeros((3, 4, 4, 4), dtype=np.float32)
    probs[0] = 0.5
    probs[1, :2] = 0.9
    probs[2, 3] = 0.9
    labels, _ = name_structures(probs, AFFINE_UP, "multiclass", [[21], [22]])
    assert (labels[:2] == 21).all() and (labels[2] == 0).all() and (labels[3] == 22).all()


def test_hd95_known_answer():
    reference = np.zeros((20, 20, 20), dtype=np.uint8)
    prediction = np.zeros_like(reference)
    reference[5:10, 5:10, 5:10] = 21
    prediction[5:10, 5:10, 7:12] = 21  # shifted two voxels along the last axis
    prediction[0, 0, 0] = 22  # absent from the reference: undefined, not 0 or inf
    assert per_label_hd95(prediction, reference, [21], [1.0, 1.0, 1.0]) == {"psoas_left": 2.0}
    assert per_label_hd95(prediction, reference, [21], [1.0, 1.0, 3.0]) == {"psoas_left": 6.0}  # in mm
    scores = per_label_hd95(prediction, reference, [22, 23], [1.0, 1.0, 1.0])
    assert np.isnan(scores["psoas_right"]) and np.isnan(scores["quadratus_left"])


def test_bad_manual_masks_are_named_by_patient_and_file(tiny_cohort, tmp_path):
    """A mask off its image's grid and one with a label value of another sequence: one error, both named."""
    import SimpleITK as sitk

    from cagerisk.cohort.manifest import load_manifest
    from cagerisk.segment.segmentation import check_manual_masks

    frame = load_manifest(tiny_cohort / "cohort" / "manifest.csv")
    check_manual_masks(frame, "t1ax", "m.csv")  # the cohort's own masks pass
    shifted = sitk.ReadImage(frame.loc[0, "t1ax_mask"])
    shifted.SetOrigin(tuple(o + 9.0 for o in shifted.GetOrigin()))
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nii.gz"))
    foreign = sitk.ReadImage(frame.loc[1, "t1ax_mask"])
    foreign[0, 0, 0] = 3  # a vertebra label in an axial muscle mask
    sitk.WriteImage(foreign, str(tmp_path / "foreign.nii.gz"))
    frame.loc[0, "t1ax_mask"] = str(tmp_path / "shifted.nii.gz")
    frame.loc[1, "t1ax_mask"] = str(tmp_path / "foreign.nii.gz")
    with pytest.raises(ValueError) as err:
        check_manual_masks(frame, "t1ax", "m.csv")
    message = str(err.value)
    assert f"patient {frame.loc[0, 'patient_id']}: t1ax mask {tmp_path / 'shifted.nii.gz'} is not on the grid" in message
    assert "origin" in message
    assert f"patient {frame.loc[1, 'patient_id']}: t1ax mask {tmp_path / 'foreign.nii.gz'} holds label value(s) [3]" in message
