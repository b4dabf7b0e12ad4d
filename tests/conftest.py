"""Shared fixtures: the real Hydra config composed with test overrides, and a tiny synthetic cohort."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from cagerisk.config import compose

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Library code must never reach the network; MLflow and DVC stay on loopback/files in tests.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The config a user's `cagerisk <stage> overrides...` composes."""
    return compose(overrides or [], config_dir=CONF_DIR)


def tracking_overrides(tmp: Path) -> list[str]:
    return [f"tracking.uri=sqlite:///{tmp}/mlflow.db", f"tracking.artifact_root={tmp}/artifacts"]


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """compose_config with outputs and MLflow under this test's tmp_path."""

    def make(*overrides: str) -> DictConfig:
        return compose_config([f"paths.data={tmp_path}/data", *tracking_overrides(tmp_path), *overrides])

    return make


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-patient synthetic cohort (cohort=tiny), generated once per test worker.

    Returns the data folder (paths.data): its cohort/manifest.csv is ready for every stage.
    """
    from cagerisk.stages.cohort import run_cohort_stage

    tmp = tmp_path_factory.mktemp("tiny")
    cfg = compose_config(["cohort=tiny", f"paths.data={tmp}/data", *tracking_overrides(tmp)])
    run_cohort_stage(cfg)
    return tmp / "data"
