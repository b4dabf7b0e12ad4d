"""The PyRadiomics pool's workers run the service's own cagerisk, whatever a loaded model put on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

from cagerisk.serving.radiomics_pool import RadiomicsPool


def test_workers_import_the_service_code_not_a_models_older_copy(tmp_path: Path, monkeypatch):
    # What MLflow does when it loads a model registered by an older version: its code/ copy of
    # cagerisk (here one without cagerisk.serving.radiomics_pool) goes to the front of sys.path.
    old = tmp_path / "code" / "cagerisk"
    old.mkdir(parents=True)
    (old / "__init__.py").write_text("")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "code"), *sys.path])
    pool = RadiomicsPool(1)
    try:
        assert isinstance(pool.warming[0].result(timeout=120), int)  # the worker imported radiomics_pool
    finally:
        pool.close()
    assert sys.path[0] == str(tmp_path / "code")  # the service process's own sys.path is left as it was
