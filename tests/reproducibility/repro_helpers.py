"""Helpers of the reproducibility tests: the real config with cheap radiomics settings, ICC test data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from tests.conftest import compose_config

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges. Their Table 4 gives
# ICC(1,1) = 0.17, ICC(2,1) = 0.29, ICC(3,1) = 0.71.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], dtype=float)

# Real-style PyRadiomics settings (normalisation, resampling, Original + LoG 4 mm) with three cheap classes:
# 12 ROIs in ~3 s of CPU. Not for results.
CHEAP_PARAMS = """\
setting:
  normalize: true
  normalizeScale: 100
  voxelArrayShift: 300
  binWidth: 25
  resampledPixelSpacing: [2.0, 2.0, 2.0]
  interpolator: sitkBSpline
  padDistance: 4
  label: 1
  minimumROIDimensions: 3
  additionalInfo: false
imageType:
  Original: {}
  LoG:
    sigma: [4.0]
featureClass:
  shape:
  firstorder:
  glszm:
"""


def compose_with_reproducibility(overrides: list[str]) -> DictConfig:
    """The config `cagerisk reproducibility` composes."""
    return compose_config(overrides)


def write_cheap_params(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cheap.yaml").write_text(CHEAP_PARAMS)
    return folder


def stage_overrides(root: Path, params_dir: Path, sequences: str = "[ct,t2]") -> list[str]:
    """Outputs, MLflow and the radiomics cache under ``root``; cheap settings on a few sequences, no dask."""
    return [
        f"paths.data={root}/data",
        f"tracking.uri=sqlite:///{root}/mlflow.db",
        f"tracking.artifact_root={root}/artifacts",
        f"radiomics.params_dir={params_dir}",
        *[f"radiomics.params.{s}=cheap.yaml" for s in ("ct", "t1", "t2", "t1ax", "t2ax")],
        f"radiomics.sequences={sequences}",
        f"radiomics.cache_dir={root}/cache",
        "compute=serial",
        "radiomics.progress=false",
        "reproducibility.progress=false",
    ]
