"""Fixtures of the model-stage tests: a synthetic cohort with feature tables, written once per worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic_cohort import make_synthetic_cohort


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_cohort(tmp_path_factory.mktemp("synthetic-cohort"))
