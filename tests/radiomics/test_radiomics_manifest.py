"""Which manifest and which CT masks the radiomics stage reads."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from cagerisk.radiomics.extraction import radiomics_manifest_path, with_feature_ct_masks


def _segment_manifest() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": ["P1", "P2"],
            "ct_mask": ["/m/P1_manual.nii.gz", "/m/P2_manual.nii.gz"],
            "ct_mask_pred": ["/s/P1_pred.nii.gz", "/s/P2_pred.nii.gz"],
            "ct_mask_source": ["predicted", "manual"],
            "t2_mask": ["/m/P1_t2.nii.gz", "/m/P2_t2.nii.gz"],
        }
    )


def test_reader1_takes_the_ct_mask_the_segment_stage_chose():
    frame = _segment_manifest()
    out = with_feature_ct_masks(frame, 1)
    assert out["ct_mask"].tolist() == ["/s/P1_pred.nii.gz", "/m/P2_manual.nii.gz"]
    assert out["t2_mask"].tolist() == frame["t2_mask"].tolist()
    assert frame["ct_mask"].tolist() == ["/m/P1_manual.nii.gz", "/m/P2_manual.nii.gz"]  # input untouched


def test_second_reader_and_cohort_manifests_are_left_alone():
    frame = _segment_manifest()
    assert with_feature_ct_masks(frame, 2) is frame
    cohort = frame.drop(columns=["ct_mask_pred", "ct_mask_source"])
    assert with_feature_ct_masks(cohort, 1) is cohort


def test_default_manifest_is_the_segment_stages_when_it_exists(tmp_path: Path):
    paths = SimpleNamespace(segment=tmp_path / "segment", cohort=tmp_path / "cohort")
    assert radiomics_manifest_path(None, paths) == tmp_path / "cohort" / "manifest.csv"
    (tmp_path / "segment").mkdir()
    (tmp_path / "segment" / "manifest.csv").write_text("patient_id\n")
    assert radiomics_manifest_path(None, paths) == tmp_path / "segment" / "manifest.csv"
    assert radiomics_manifest_path("/elsewhere/m.csv", paths) == Path("/elsewhere/m.csv")
