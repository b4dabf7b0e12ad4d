"""Tiny synthetic spine cohorts for the radiomics tests: a few 20x20x24 NIfTI volumes per patient.

The label maps use the real label values of ``cagerisk.cohort.schema.LABELS`` (vertebral bodies as
slabs along z with discs between them), so ROI label selection runs exactly as on a real manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from cagerisk.cohort import schema

REPO = Path(__file__).resolve().parents[2]
SHAPE_ZYX = (24, 20, 20)
SPACING = (1.2, 1.2, 1.5)
# The radiomics group's extraction settings as the tests use them (the stage takes them from conf/radiomics).
EXTRACTION = {"sequences": None, "reader": "1", "show_progress": False, "check_geometry": True}

# A parameter file small enough for tests, built like the real ones (normalisation, resampling,
# Original + LoG + Wavelet), on two cheap classes.
TINY_PARAMS = """\
setting:
  normalize: true
  normalizeScale: 100
  binWidth: 25
  resampledPixelSpacing: [1.5, 1.5, 1.5]
  interpolator: sitkBSpline
  padDistance: 2
  label: 1
  minimumROIDimensions: 3
  additionalInfo: false
imageType:
  Original: {}
  LoG:
    sigma: [2.0]
  Wavelet: {}
featureClass:
  firstorder:
  glszm: [SmallAreaEmphasis, ZoneEntropy]
"""


def label_map(sequence: str) -> np.ndarray:
    """z-slabs L3 | L3-L4 | L4 | L4-L5 | L5 | L5-S1 | S1 inside a 10x10 column; muscles for axial."""
    labels = np.zeros(SHAPE_ZYX, np.uint8)
    if sequence in ("t1ax", "t2ax"):
        for k, (lo, hi) in enumerate(((2, 6), (8, 12), (14, 18))):
            name = schema.MUSCLES[k]
            labels[2:22, 3:8, lo:hi] = schema.LABELS[f"{name}_left"]
            labels[2:22, 12:17, lo:hi] = schema.LABELS[f"{name}_right"]
        return labels
    z = 1
    for vertebra, disc in (("L3", "L3-L4"), ("L4", "L4-L5"), ("L5", "L5-S1"), ("S1", None)):
        labels[z : z + 4, 5:15, 5:15] = schema.LABELS[f"vertebra_{vertebra}"]
        z += 4
        if disc is not None:
            if sequence != "ct":
                labels[z : z + 2, 5:15, 5:15] = schema.LABELS[f"disc_{disc}"]
            z += 2
    return labels


def write_volume(array: np.ndarray, path: Path, spacing=SPACING, origin=(0.0, 0.0, 0.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def patient_image(labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 20.0, labels.shape)
    for value in np.unique(labels):
        if value:
            image[labels == value] += 100.0 + 7.0 * value + rng.normal(0, 10)
    return image.astype(np.float32)


def make_tiny_cohort(root: Path, n_patients: int = 3, sequences: tuple[str, ...] = ("ct", "t2"), seed: int = 0) -> pd.DataFrame:
    """Write images, label maps and ``manifest.csv`` (relative paths); return it with absolute paths."""
    rows = []
    for i in range(n_patients):
        pid = f"P{i:03d}"
        row = {
            schema.ID: pid,
            "center": "A",
            "sex": "F",
            "age": 60,
            "bmi": 25.0,
            "diagnosis": "stenosis",
            "n_levels": 1,
            "osteoporosis": 0,
            "followup_months": 24,
            "fused_levels": "L4-L5",
            schema.OUTCOME: i % 2,
            "split": "train",
        }
        for s, seq in enumerate(sequences):
            labels = label_map(seq)
            image_path = write_volume(patient_image(labels, seed + 100 * i + s), root / pid / f"{seq}.nii.gz")
            mask_path = write_volume(labels, root / pid / f"{seq}_mask.nii.gz")
            row[schema.image_column(seq)] = str(image_path.relative_to(root))
            row[schema.mask_column(seq)] = str(mask_path.relative_to(root))
        rows.append(row)
    manifest = pd.DataFrame(rows)
    manifest.to_csv(root / "manifest.csv", index=False)
    absolute = manifest.copy()
    for seq in sequences:
        for col in (schema.image_column(seq), schema.mask_column(seq)):
            absolute[col] = [str(root / p) for p in manifest[col]]
    return absolute


@pytest.fixture
def roi_cohort(tmp_path: Path) -> Callable[..., pd.DataFrame]:
    def make(n_patients: int = 3, sequences: tuple[str, ...] = ("ct", "t2"), name: str = "cohort") -> pd.DataFrame:
        return make_tiny_cohort(tmp_path / name, n_patients=n_patients, sequences=sequences)

    return make


@pytest.fixture
def tiny_params_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_params.yaml"
    path.write_text(TINY_PARAMS)
    return path


@pytest.fixture
def tiny_params(tiny_params_file: Path):
    """Parameters per sequence (every sequence uses the tiny file)."""
    from cagerisk.radiomics.params import params_by_sequence

    files = {seq: str(tiny_params_file) for seq in schema.SEQUENCES}

    def make(sequences=("ct", "t2"), overrides=None):
        return params_by_sequence({"params": files, "overrides": overrides or {}}, list(sequences))

    return make


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """A 4-patient ct+t2 cohort (12 ROIs), its tiny parameters and the table of a plain in-process run.

    Shared by the tests that compare other execution paths (dask, resumed runs) against it; read-only.
    """
    from types import SimpleNamespace

    from cagerisk.radiomics import extract_radiomics
    from cagerisk.radiomics.params import params_by_sequence

    root = tmp_path_factory.mktemp("reference")
    manifest = make_tiny_cohort(root / "cohort", n_patients=4)
    params_file = root / "tiny_params.yaml"
    params_file.write_text(TINY_PARAMS)
    params = params_by_sequence({"params": {s: str(params_file) for s in schema.SEQUENCES}}, ["ct", "t2"])
    result = extract_radiomics(manifest, params, root / "cache", {"scheduler": "synchronous"}, **EXTRACTION)
    assert result.n_failed == 0 and result.n_recomputed == 12
    return SimpleNamespace(root=root, manifest=manifest, params=params, params_file=params_file, table=result.table)


@pytest.fixture
def compose_cfg() -> Callable[..., object]:
    """The real Hydra config with overrides, as `cagerisk radiomics overrides...` composes it."""
    from tests.conftest import compose_config

    return compose_config
