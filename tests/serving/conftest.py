"""Fixtures of the serving tests (helpers in serving_helpers.py, imported by name like tests/models does)."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_helpers import write_feature_pipeline


@pytest.fixture(scope="session")
def feature_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose ``data/`` holds the outputs of a finished feature-level pipeline."""
    tmp = tmp_path_factory.mktemp("feature-pipeline")
    write_feature_pipeline(tmp / "data")
    return tmp
