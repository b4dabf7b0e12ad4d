"""The serving bundle carries each MRI sequence's U-Net that passed validation; the spec says which masks are optional."""

from __future__ import annotations

import json
from pathlib import Path

from cagerisk.segment.model import SegmentationBundle, build_unet, save_bundle
from cagerisk.serving.bundle import BundleSources, _copy_mri_segmenters
from cagerisk.serving.model import ModelSpec, segment_file

NET = {"_target_": "monai.networks.nets.UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
       "channels": [2, 4], "strides": [2]}  # fmt: skip


def _save(path: Path, sequence: str, accepted: bool) -> None:
    state = {k: v.detach() for k, v in build_unet(NET).state_dict().items()}
    bundle = SegmentationBundle(
        net=NET, state_dict=state, mode="bottom_up", spacing_mm=[4.0, 3.0, 3.0], hu_window=None, roi_size=[16, 16, 16],
        sequence=sequence, classes=[[1, 2, 3, 4, 5, 6], [11, 12, 13, 14, 15]], accepted=accepted,
    )  # fmt: skip
    save_bundle(bundle, path)


def test_only_accepted_unets_are_copied_and_the_others_named(tmp_path: Path):
    models = tmp_path / "models"
    _save(models / "unet_t2.pt", "t2", accepted=True)
    _save(models / "unet_t1ax.pt", "t1ax", accepted=False)  # below segment.min_val_dice
    sources = BundleSources(tmp_path / "combined.joblib", {}, models / "unet_{sequence}.pt", None)
    out, notes = tmp_path / "bundle", []
    out.mkdir()
    copied = _copy_mri_segmenters(out, sources, {"ct", "t1", "t2", "t1ax"}, notes)
    assert copied == ["t2"]
    assert (out / segment_file("t2")).is_file() and not (out / segment_file("t1ax")).exists()
    assert segment_file("t2") == "segment_unet_t2.pt" and segment_file("ct") == "segment_unet.pt"
    assert notes == [
        "no t1 U-Net bundle (segment.model_path): a t1 mask must be sent",
        "the t1ax U-Net's validation Dice is below segment.min_val_dice: a t1ax mask must be sent",
    ]
    # A model_path without {sequence} (a config from before MRI U-Nets) serves no MRI U-Net.
    legacy = BundleSources(tmp_path / "combined.joblib", {}, models / "unet.pt", None)
    assert _copy_mri_segmenters(out, legacy, {"t2"}, []) == []


def test_spec_masks_optional_per_sequence():
    spec = ModelSpec(
        radiomics_features=[], deep_features=[], clinical_variables=[], threshold=0.5,
        radiomics_rois=[["ct", "vertebra"], ["t2", "disc"], ["t1ax", "psoas"]], deep_rois=[],
        ct_segmentation=True, image_scoring=True, segmented_sequences=["ct", "t2"],
    )  # fmt: skip
    fields = spec.expected_inputs()["images"]["fields"]
    assert {s: f["mask_required"] for s, f in fields.items()} == {"ct": False, "t2": False, "t1ax": True}
    assert fields["t2"]["mask_if_absent"] == "predicted by the U-Net" and fields["t1ax"]["mask_if_absent"] is None
    # A spec written before MRI U-Nets (no segmented_sequences): the CT mask alone is optional.
    data = json.loads(spec.to_json())
    del data["segmented_sequences"]
    old = ModelSpec.from_json(json.dumps(data))
    assert old.mask_optional("ct") and not old.mask_optional("t2")
