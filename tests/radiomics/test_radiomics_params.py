"""The real configuration: parameter files per sequence, settings hash, feature naming and counts."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cagerisk.cohort import schema
from cagerisk.radiomics import (
    RoiTask,
    extract_roi,
    feature_groups,
    params_by_sequence,
    parse_feature_column,
    prefixed_features,
    settings_hash,
)
from tests.conftest import compose_config

REPO = Path(__file__).resolve().parents[2]
SEVEN_CLASSES = {"shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"}


def _radiomics_cfg(*overrides: str) -> dict:
    return OmegaConf.to_container(compose_config(list(overrides)).radiomics, resolve=True)  # type: ignore[return-value]


def test_real_parameter_files_state_the_study_settings():
    params = params_by_sequence(_radiomics_cfg(), list(schema.SEQUENCES))
    assert set(params) == set(schema.SEQUENCES)
    for seq, p in params.items():
        setting = p.params["setting"]
        assert setting["normalize"] is True, seq
        assert setting["binWidth"] > 0 and "binCount" not in setting, seq
        assert len(setting["resampledPixelSpacing"]) == 3 and setting["interpolator"] == "sitkBSpline", seq
        assert setting["label"] == 1 and setting["force2D"] is False, seq
        image_types = p.params["imageType"]
        assert set(image_types) == {"Original", "LoG", "Wavelet"}, seq
        assert 4.0 in image_types["LoG"]["sigma"] and len(image_types["LoG"]["sigma"]) >= 2, seq
        assert set(p.params["featureClass"]) == SEVEN_CLASSES, seq
        assert p.path.name in ("ct.yaml", "mri.yaml") and p.path.parent == REPO / "conf" / "radiomics" / "params"
    assert params["t1"].sha256 == params["t2"].sha256 != params["ct"].sha256 or params["ct"].params == params["t1"].params


def test_settings_hash_follows_content_not_layout():
    a = {"setting": {"binWidth": 5, "normalize": True}, "imageType": {"Original": {}}}
    b = {"imageType": {"Original": {}}, "setting": {"normalize": True, "binWidth": 5}}
    versions = {"pyradiomics": "x"}
    assert settings_hash(a, versions) == settings_hash(b, versions)
    assert settings_hash(a, versions) != settings_hash(a, {"pyradiomics": "y"})
    assert settings_hash(a, versions) != settings_hash({**a, "setting": {"binWidth": 10, "normalize": True}}, versions)


def test_hydra_override_changes_only_its_sequence():
    sequences = list(schema.SEQUENCES)
    base = params_by_sequence(_radiomics_cfg(), sequences)
    changed = params_by_sequence(_radiomics_cfg("+radiomics.overrides.t2.setting.binWidth=10"), sequences)
    assert changed["t2"].params["setting"]["binWidth"] == 10
    assert changed["t2"].params["setting"]["normalize"] is True  # merged, not replaced
    assert changed["t2"].sha256 != base["t2"].sha256
    assert all(changed[s].sha256 == base[s].sha256 for s in sequences if s != "t2")
    fast = params_by_sequence(_radiomics_cfg("radiomics=fast"), sequences)
    assert all(p.path.name == "fast.yaml" for p in fast.values())


def test_feature_names_split_into_their_five_parts():
    name = parse_feature_column("t2_disc_wavelet-LLH_glcm_Contrast")
    assert (name.sequence, name.roi, name.image_type, name.feature_class, name.feature) == (
        "t2",
        "disc",
        "wavelet-LLH",
        "glcm",
        "Contrast",
    )
    assert parse_feature_column("ct_vertebra_log-sigma-4-0-mm-3D_firstorder_Mean").image_type == "log-sigma-4-0-mm-3D"
    with pytest.raises(ValueError):
        parse_feature_column("t2_disc_dl_3")
    cols = prefixed_features("t1ax", "psoas", {"diagnostics_Versions_PyRadiomics": "v", "original_shape_Sphericity": 0.5})
    assert cols == {"t1ax_psoas_original_shape_Sphericity": 0.5}
    assert feature_groups(["patient_id", *cols, "t1ax_psoas_dl_0"]) == {("t1ax", "psoas"): list(cols)}


def test_real_settings_give_more_than_1000_features_per_roi(roi_cohort):
    """One ROI through the real CT parameter file: Original + 2 LoG sigmas + 8 wavelets, seven classes."""
    manifest = roi_cohort(n_patients=1, sequences=("ct",))
    p = params_by_sequence(_radiomics_cfg(), ["ct"])["ct"]
    task = RoiTask(
        "P000",
        "ct",
        "vertebra",
        manifest.loc[0, "ct_image"],
        manifest.loc[0, "ct_mask"],
        (3, 4, 5, 6),
        p.extractor_params(),
        p.sha256,
    )
    features = prefixed_features("ct", "vertebra", extract_roi(task))
    assert len(features) > 1000
    image_types = {parse_feature_column(c).image_type for c in features}
    assert image_types == {
        "original",
        "log-sigma-2-0-mm-3D",
        "log-sigma-4-0-mm-3D",
        *(f"wavelet-{b}" for b in ("LLL", "LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH")),
    }
    assert {parse_feature_column(c).feature_class for c in features} == SEVEN_CLASSES
    assert "ct_vertebra_log-sigma-4-0-mm-3D_firstorder_Mean" in features
