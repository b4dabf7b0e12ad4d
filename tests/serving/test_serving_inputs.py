"""Input checks of the scoring path and the reduction of a signature to the features it needs."""

from __future__ import annotations

import math
from http import HTTPStatus
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from cagerisk.features import FTestSelector, LassoSelector, MedianIQRScaler, ZScorePCA
from cagerisk.serving.errors import ScoringInputError
from cagerisk.serving.features import blank_unrequired, required_inputs, serving_inputs, verify_required_inputs
from cagerisk.serving.inputs import (
    check_clinical,
    check_features,
    check_mask,
    check_roi_present,
    read_checked_image,
    sniff_image_format,
)

GOOD = {
    "sex": "F",
    "age": 63.0,
    "bmi": 27.5,
    "diagnosis": "stenosis",
    "n_levels": 2,
    "osteoporosis": 1,
    "followup_months": 24,
    "fused_levels": "L5-S1;L4-L5",
}


def raises(field: str, status: HTTPStatus, fn, *args):
    with pytest.raises(ScoringInputError) as info:
        fn(*args)
    assert info.value.field == field, str(info.value)
    assert info.value.status == status
    assert str(info.value).startswith(field)
    return info.value


def test_clinical_values_are_checked_and_normalised():
    out = check_clinical(GOOD, ["age", "osteoporosis"])
    assert out["fused_levels"] == "L4-L5;L5-S1"  # sorted like the schema's levels
    assert out["age"] == 63.0 and out["osteoporosis"] == 1.0
    raises("clinical.age", HTTPStatus.BAD_REQUEST, check_clinical, {**GOOD, "age": None}, ["age"])
    raises("clinical.age", HTTPStatus.UNPROCESSABLE_ENTITY, check_clinical, {**GOOD, "age": math.nan}, ["age"])
    raises("clinical.age", HTTPStatus.UNPROCESSABLE_ENTITY, check_clinical, {**GOOD, "age": 230}, [])
    raises("clinical.age", HTTPStatus.UNPROCESSABLE_ENTITY, check_clinical, {**GOOD, "age": "63"}, [])
    raises("clinical.bmi", HTTPStatus.UNPROCESSABLE_ENTITY, check_clinical, {**GOOD, "bmi": math.inf}, [])
    raises("clinical.sex", HTTPStatus.UNPROCESSABLE_ENTITY, check_clinical, {**GOOD, "sex": "X"}, [])
    raises("clinical.osteoporosis", HTTPStatus.UNPROCESSABLE_ENTITY, check_clinical, {**GOOD, "osteoporosis": 2}, [])
    raises("clinical.osteoporosis", HTTPStatus.UNPROCESSABLE_ENTITY, check_clinical, {**GOOD, "osteoporosis": True}, [])
    raises("clinical.fused_levels", HTTPStatus.UNPROCESSABLE_ENTITY, check_clinical, {**GOOD, "fused_levels": "L6-L7"}, [])
    raises("clinical.Age", HTTPStatus.UNPROCESSABLE_ENTITY, check_clinical, {**GOOD, "Age": 50}, [])
    raises("clinical.n_levels", HTTPStatus.UNPROCESSABLE_ENTITY, check_clinical, {**GOOD, "n_levels": 3}, [])
    raises(
        "clinical.n_levels", HTTPStatus.UNPROCESSABLE_ENTITY, check_clinical, {**GOOD, "n_levels": 1.5, "fused_levels": None}, []
    )
    assert isinstance(check_clinical({"n_levels": 2.0, "osteoporosis": 1.0}, [])["n_levels"], int)


def test_features_need_every_required_name_and_numbers():
    required = ["a", "b", "c"]
    assert check_features({"a": 1, "b": 2.5, "c": None, "extra": 9}, required) == {
        "a": 1.0,
        "b": 2.5,
        "c": pytest.approx(math.nan, nan_ok=True),
    }
    err = raises("features", HTTPStatus.BAD_REQUEST, check_features, {"a": 1}, required)
    assert "2 required feature(s) missing" in str(err) and "'b'" in str(err)
    raises("features", HTTPStatus.UNPROCESSABLE_ENTITY, check_features, {"a": 1, "b": math.inf, "c": 0}, required)
    raises("features", HTTPStatus.UNPROCESSABLE_ENTITY, check_features, {"a": 1, "b": "x", "c": 0}, required)
    raises("features", HTTPStatus.BAD_REQUEST, check_features, [1, 2, 3], required)


def _volume(size=(12, 10, 8), spacing=(1.0, 1.0, 2.0), labels=False) -> sitk.Image:
    rng = np.random.default_rng(0)
    if labels:
        array = np.zeros(size[::-1], dtype=np.uint8)
        array[2:5, 3:7, 3:8] = 5  # L5
        array[5:7, 3:7, 3:8] = 15  # disc L5-S1
    else:
        array = rng.normal(100, 20, size[::-1]).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((10.0, -5.0, 3.0))
    return image


def test_image_files_are_sniffed_read_and_masks_checked(tmp_path: Path):
    image, mask = _volume(), _volume(labels=True)
    paths = {
        "gz": tmp_path / "a.nii.gz",
        "nii": tmp_path / "b.nii",
        "nrrd": tmp_path / "c.nrrd",
        "mask": tmp_path / "m.nii.gz",
    }
    sitk.WriteImage(image, str(paths["gz"]), useCompression=True)
    sitk.WriteImage(image, str(paths["nii"]))
    sitk.WriteImage(image, str(paths["nrrd"]))
    sitk.WriteImage(mask, str(paths["mask"]), useCompression=True)
    assert [sniff_image_format(paths[k]) for k in ("gz", "nii", "nrrd")] == ["nifti-gz", "nifti", "nrrd"]
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"\x1f\x8b not really gzip" * 40)
    corrupt = tmp_path / "corrupt.nii.gz"  # a gzip header, then a broken deflate stream
    corrupt.write_bytes(b"\x1f\x8b\x08\x00corrupt gzip stream" * 30)
    text = tmp_path / "notes.txt"
    text.write_text("patient notes\n" * 50)
    assert sniff_image_format(junk) is None and sniff_image_format(corrupt) is None and sniff_image_format(text) is None
    # A file with an image suffix but no image inside: the error names the field, not the file.
    err = raises("t2_image", HTTPStatus.UNPROCESSABLE_ENTITY, read_checked_image, junk, "t2_image")
    assert "junk" not in str(err)

    # A header declaring 2000^3 voxels (a decompression bomb) is refused from the header alone.
    bomb = bytearray(paths["nii"].read_bytes())
    bomb[42:48] = np.array([2000, 2000, 2000], dtype="<i2").tobytes()  # dim[1..3] of the NIfTI-1 header
    (tmp_path / "bomb.nii").write_bytes(bytes(bomb))
    err = raises("t2_image", HTTPStatus.UNPROCESSABLE_ENTITY, read_checked_image, tmp_path / "bomb.nii", "t2_image")
    assert "voxels" in str(err)

    img = read_checked_image(paths["gz"], "t2_image")
    lab = read_checked_image(paths["mask"], "t2_mask")
    assert check_mask(img, lab, "t2", "t2_mask") == [5, 15]
    check_roi_present([5, 15], [4, 5, 6], "vertebra", "t2_mask")
    raises("t2_mask", HTTPStatus.UNPROCESSABLE_ENTITY, check_roi_present, [5, 15], [11, 12], "disc", "t2_mask")
    shifted = _volume(labels=True)
    shifted.SetOrigin((12.0, -5.0, 3.0))
    err = raises("t2_mask", HTTPStatus.UNPROCESSABLE_ENTITY, check_mask, img, shifted, "t2", "t2_mask")
    assert "does not fit" in str(err) and "origin" in str(err)
    smaller = _volume(size=(12, 10, 7), labels=True)
    raises("t2_mask", HTTPStatus.UNPROCESSABLE_ENTITY, check_mask, img, smaller, "t2", "t2_mask")
    # Muscle labels in a sagittal T2 mask are not T2 structures.
    foreign = sitk.GetImageFromArray(np.full(image.GetSize()[::-1], 21, dtype=np.uint8))
    foreign.CopyInformation(image)
    raises("t2_mask", HTTPStatus.UNPROCESSABLE_ENTITY, check_mask, img, foreign, "t2", "t2_mask")


def _table(n: int = 80, p: int = 40, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=n)
    X = rng.normal(size=(n, p))
    X[:, :4] += 1.5 * latent[:, None]
    X[5, 7] = np.nan
    y = (latent + rng.normal(0, 0.5, n) > 0).astype(int)
    return pd.DataFrame(X, columns=[f"t2_disc_original_firstorder_F{j}" for j in range(p)]), y


def test_required_inputs_of_a_selection_pipeline_are_verified():
    from sklearn.impute import SimpleImputer

    X, y = _table()
    selecting = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("scale", MedianIQRScaler(clip=10.0)),
            ("ftest", FTestSelector(alpha=0.05)),
            ("lasso", LassoSelector(cv=3, n_alphas=20)),
            ("clf", LogisticRegression()),
        ]
    ).fit(X, y)
    required = required_inputs(selecting)
    assert 0 < len(required) < X.shape[1]
    assert set(required) == set(selecting[:-1].get_feature_names_out())
    assert verify_required_inputs(selecting, X, required)
    assert serving_inputs(selecting, X) == required
    # Blanked columns are imputed and then dropped: the probabilities do not move at all.
    blank = blank_unrequired(X, list(X.columns), required)
    assert blank.drop(columns=required).isna().all().all()
    np.testing.assert_array_equal(selecting.predict_proba(X)[:, 1], selecting.predict_proba(blank)[:, 1])

    mixing = Pipeline(
        [("impute", SimpleImputer(strategy="median")), ("reduce", ZScorePCA(n_components=5)), ("clf", LogisticRegression())]
    ).fit(X, y)
    assert required_inputs(mixing) == list(X.columns)
    # A wrong claim is caught by the verification, and serving then requires every column.
    assert not verify_required_inputs(mixing, X, list(X.columns[:3]))
