"""The distributed map through a real `dask scheduler` and two `dask worker` processes on 127.0.0.1:
results equal the plain in-process run bit for bit, also when a worker is killed mid-run. (The default
local cluster is exercised by the stage test.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from cagerisk.radiomics import build_roi_tasks, extract_radiomics, map_rois
from tests.radiomics.conftest import EXTRACTION

pytestmark = pytest.mark.timeout(180)

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """`dask scheduler` + 2 single-threaded `dask worker` processes, as on a real cluster.

    Without nannies: a killed worker stays dead, so the run must finish on the survivor.
    """
    from distributed import Client

    tmp_path = tmp_path_factory.mktemp("dask")
    scheduler_file = tmp_path / "scheduler.json"
    logs = [open(tmp_path / f"{name}.log", "w") for name in ("scheduler", "worker-a", "worker-b")]
    procs = [
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            stdout=logs[0],
            stderr=subprocess.STDOUT,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() or not scheduler_file.read_text().strip():
            assert procs[0].poll() is None, (tmp_path / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for i, log in enumerate(logs[1:]):
            procs.append(
                subprocess.Popen(
                    [
                        str(BIN / "dask"),
                        "worker",
                        address,
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        "1",
                        "--no-nanny",
                        "--no-dashboard",
                        "--name",
                        f"w{i}",
                        "--memory-limit",
                        "2GiB",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=90)
        yield SimpleNamespace(address=address, workers={p.pid: p for p in procs[1:]})
        with Client(address, timeout="30s") as client:
            client.shutdown()  # closes workers, nannies and scheduler in order
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()


def test_extraction_through_a_dask_cluster_survives_a_killed_worker(reference_run, dask_cluster, tmp_path):
    """Extract through the cluster; when the first ROI is back, SIGKILL a busy worker (no goodbye).

    The scheduler reruns its ROIs on the surviving worker: nothing is lost, nothing fails, and every
    value equals the plain in-process run.
    """
    from distributed import Client

    cache = tmp_path / "cache"
    killed: dict[str, object] = {}

    def kill_a_busy_worker_after_the_first_roi() -> None:
        deadline = time.monotonic() + 120
        while not list(cache.rglob("*.json")):
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        with Client(dask_cluster.address, timeout="30s") as client:
            pids = client.run(os.getpid)
            killed["n_workers"] = len(pids)
            busy = [w for w, keys in client.processing().items() if keys]
            killed["n_busy"] = len(busy)
            address = (busy or list(pids))[0]
            os.kill(pids[address], signal.SIGKILL)
            killed["pid"] = pids[address]

    killer = threading.Thread(target=kill_a_busy_worker_after_the_first_roi)
    killer.start()
    try:
        result = extract_radiomics(
            reference_run.manifest,
            reference_run.params,
            cache,
            {"scheduler": dask_cluster.address, "connect_timeout": "30s"},
            **EXTRACTION,
        )
    finally:
        killer.join(timeout=150)
    assert "pid" in killed and killed["n_workers"] == 2 and killed["n_busy"] >= 1, killed
    assert dask_cluster.workers[int(killed["pid"])].wait(timeout=30) == -signal.SIGKILL
    assert (result.n_recomputed, result.n_failed) == (12, 0), result.failures.to_string()
    pd.testing.assert_frame_equal(result.table, reference_run.table, check_exact=True)
    # The cache is written by this process (the driver), not by the workers.
    assert len(list(cache.rglob("*.json"))) == 12


def test_map_rois_yields_every_roi_once(reference_run, dask_cluster):
    from distributed import Client

    tasks, failures = build_roi_tasks(reference_run.manifest, reference_run.params, ["ct", "t2"], reader="1", check_geometry=True)
    assert not failures
    with Client(dask_cluster.address, timeout="30s") as client:
        assert len(client.scheduler_info(n_workers=-1)["workers"]) >= 1
        outcomes = list(map_rois(client, tasks[:4]))
        assert not client.processing() or not any(client.processing().values())
    assert sorted((o.task.patient_id, o.task.sequence, o.task.roi) for o in outcomes) == sorted(
        (t.patient_id, t.sequence, t.roi) for t in tasks[:4]
    )
    assert all(o.ok and o.cpu_seconds > 0 for o in outcomes)


def test_local_cluster_workers_get_the_configured_environment(compose_cfg):
    """compute=local: no MALLOC_TRIM_THRESHOLD_ (30 % more CPU per ROI), one BLAS/ITK thread, calm ticks,
    no statistical profiler (it sampled the busy task thread every 10 ms: 10 % more CPU per ROI), and
    forked workers whose BLAS pools are cut to one thread although numpy was imported before the fork."""
    from omegaconf import OmegaConf

    from cagerisk.radiomics.distributed import compute_client

    compute = OmegaConf.to_container(compose_cfg(["compute.n_workers=1"]).compute, resolve=True)
    assert compute["start_method"] == "fork"
    names = ("MALLOC_TRIM_THRESHOLD_", "OPENBLAS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")

    def worker_state():
        import sys

        import dask
        from threadpoolctl import threadpool_info

        return {
            "env": {k: os.environ.get(k) for k in names},
            "tick": dask.config.get("distributed.admin.tick.interval"),
            "profile": dask.config.get("distributed.worker.profile.enabled"),
            # Set on sys in the driver just before the cluster starts: only a forked worker has it.
            "forked": getattr(sys, "_cagerisk_fork_probe", None) == driver,
            "blas_threads": sorted({pool["num_threads"] for pool in threadpool_info()}),
        }

    driver = os.getpid()
    sys._cagerisk_fork_probe = driver
    try:
        with compute_client(compute) as client:
            (state,) = client.run(worker_state).values()
    finally:
        del sys._cagerisk_fork_probe
    assert state["env"] == {
        "MALLOC_TRIM_THRESHOLD_": None,
        "OPENBLAS_NUM_THREADS": "1",
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1",
    }
    assert state["tick"] == "1s"
    assert state["profile"] is False
    assert state["forked"]
    assert state["blas_threads"] == [1]
    import dask

    assert dask.config.get("distributed.admin.tick.interval") != "1s"  # restored after the cluster
    assert dask.config.get("distributed.worker.profile.enabled") is True
    assert "MALLOC_TRIM_THRESHOLD_" in dask.config.get("distributed.nanny.pre-spawn-environ")


def test_worker_start_method_is_checked():
    from cagerisk.radiomics.distributed import worker_start_method

    assert worker_start_method({"start_method": "spawn"}) == "spawn"
    assert worker_start_method({}) in ("fork", "spawn")  # spawn where fork is unsafe (macOS)
    with pytest.raises(ValueError, match="compute.start_method='threads'"):
        worker_start_method({"start_method": "threads"})
