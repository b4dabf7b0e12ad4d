"""The PyRadiomics pool: its workers run the service's own cagerisk, whatever a loaded model put on sys.path;
the service is ready (`/readyz`) only once every worker has warmed."""

from __future__ import annotations

import sys
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

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


def test_the_pool_is_warm_once_every_worker_has_warmed_or_failed_to():
    pool = RadiomicsPool(2)
    try:
        for future in pool.warming:
            future.result(timeout=120)
        assert pool.warmed
        pending: Future = Future()  # a worker still importing PyRadiomics
        pool.warming.append(pending)
        assert not pool.warmed
        # A warm-up that failed is finished too (a worker that died breaks the pool, and scoring then
        # extracts in the serving process), so readiness does not wait on it for ever.
        pending.set_exception(RuntimeError("worker died"))
        assert pool.warmed
    finally:
        pool.close()


def test_the_service_is_ready_once_its_model_is_loaded_and_its_workers_warm():
    from cagerisk.serving.model import CageRiskModel
    from cagerisk.serving.service import CageRiskService

    is_ready = CageRiskService.inner.__is_ready__
    service = SimpleNamespace()
    assert not is_ready(service)  # still loading
    service.model = CageRiskModel.__new__(CageRiskModel)  # what matters here: its radiomics pool
    service.model.radiomics_pool = None  # no image scoring, or too few cores for a pool
    assert is_ready(service)
    pool = RadiomicsPool(1)
    try:
        service.model.radiomics_pool = pool
        pool.warming.append(Future())  # a worker still warming
        assert not is_ready(service)
        pool.warming[-1].set_result(0)
        pool.warming[0].result(timeout=120)
        assert is_ready(service)
    finally:
        pool.close()
