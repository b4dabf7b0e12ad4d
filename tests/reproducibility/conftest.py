"""Fixtures of the reproducibility tests (helpers live in repro_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from repro_helpers import write_cheap_params


@pytest.fixture(scope="module")
def cheap_params_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``cheap.yaml``, the tests' PyRadiomics parameter file."""
    return write_cheap_params(tmp_path_factory.mktemp("params"))
