"""The ROI map on dask.distributed: a local cluster, an existing scheduler, or in-process.

``compute.scheduler``:

- ``null``: a ``LocalCluster`` of ``compute.n_workers`` processes (default: one per usable core) with
  ``compute.threads_per_worker`` threads (default 1). PyRadiomics holds the GIL for most of an ROI and
  SimpleITK's own threads fight over the same cores, so one single-threaded process per core, one ROI
  per task, is what scales (PyRadiomics' batch ``--jobs`` mode measured slower than serial on 2 cores).
  ``compute.start_method`` says how the worker processes start (see ``worker_start_method``).
- ``tcp://HOST:PORT``: an existing cluster (``dask scheduler`` + ``dask worker`` processes sharing the
  image paths and this package). Nothing is started or stopped.
- ``synchronous``: no dask at all, a plain loop in this process (debugging, profiling, tiny tests).

Results come back to this process, which alone writes the cache, so workers need read access to the
images only.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import dask
from distributed.diagnostics.plugin import WorkerPlugin

from cagerisk.radiomics.extract import RoiOutcome, RoiTask, extract_roi_outcome

log = logging.getLogger(__name__)

SYNCHRONOUS = "synchronous"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def compute_client(compute_cfg: Mapping[str, Any] | None, n_tasks: int | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` for ``compute_cfg`` (None for ``synchronous``); closes what it started."""
    compute_cfg = compute_cfg or {}
    scheduler = compute_cfg.get("scheduler")
    if scheduler == SYNCHRONOUS:
        yield None
        return
    import distributed  # noqa: F401 - loads distributed's config defaults before we override any

    # `compute.dask`: dask config for the cluster's lifetime (nannies hand it to the worker processes).
    # Set after distributed's defaults exist: dask.config.set restores what it saw, and a subtree that
    # did not exist yet would be deleted on exit.
    with dask.config.set(dask_settings(compute_cfg.get("dask"))):
        yield from _client(compute_cfg, scheduler, n_tasks)


def dask_settings(nested: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Nested config -> dotted keys: ``dask.config.set`` replaces a whole subtree given as a dict."""
    flat: dict[str, Any] = {}
    for key, value in (nested or {}).items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(dask_settings(value, name))
        else:
            flat[name] = value
    return flat


START_METHODS = ("fork", "forkserver", "spawn")


def worker_start_method(compute_cfg: Mapping[str, Any]) -> str:
    """``compute.start_method`` of the local cluster's worker processes, checked against the platform.

    ``fork`` (the default on Linux) copies this process, whose imports (dask, numpy, SimpleITK) the
    workers then already have: on 2 cores the cluster starts in 0.7 s instead of 2.6 s and closes in
    0.07 s instead of 0.75 s (dask's own default, ``spawn``, starts a fresh interpreter per worker and
    re-imports everything). A fork copies only the forking thread: a library's thread pool in the driver
    arrives in the worker as bookkeeping without threads. The benchmark forks its workers right after
    its own SimpleITK loop ran on 2 threads, and they run normally; each task sets SimpleITK's threads
    itself and ``NativeThreads`` resizes the BLAS/OpenMP pools. Threads the driver holds in other
    libraries are a risk fork carries in general: ``spawn`` avoids it at the cost above, and is used
    where fork is unsafe (macOS) or unavailable (Windows).
    """
    import multiprocessing

    method = str(compute_cfg.get("start_method") or "fork")
    if method not in START_METHODS:
        raise ValueError(f"compute.start_method={method!r}; expected one of {START_METHODS}")
    available = multiprocessing.get_all_start_methods()
    if method not in available or (method == "fork" and sys.platform == "darwin"):
        log.info("compute.start_method=%s is not safe or not available on %s: using spawn", method, sys.platform)
        return "spawn"
    return method


def _client(compute_cfg: Mapping[str, Any], scheduler: Any, n_tasks: int | None) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    # Importing distributed configures its loggers at INFO (dask's logging config), which floods the
    # stage's console with connect/close chatter of every worker; its warnings and errors still show.
    dask_logger = logging.getLogger("distributed")
    if dask_logger.getEffectiveLevel() < logging.WARNING:
        dask_logger.setLevel(logging.WARNING)
    if scheduler:
        timeout = compute_cfg.get("connect_timeout")
        if not timeout:  # None would make dask wait for the scheduler forever
            raise ValueError(f"compute.connect_timeout is not set: how long to wait for the dask scheduler {scheduler}")
        log.info("connecting to dask scheduler %s", scheduler)
        with Client(str(scheduler), timeout=timeout) as client:
            n = len(client.scheduler_info(n_workers=-1).get("workers", {}))
            log.info("dask cluster at %s with %d worker(s)", scheduler, n)
            yield client
        return
    n_workers = compute_cfg.get("n_workers") or usable_cores()
    if n_tasks is not None:
        n_workers = max(1, min(int(n_workers), int(n_tasks)))
    threads = int(compute_cfg.get("threads_per_worker") or 1)
    log.info("starting local dask cluster: %d worker process(es) x %d thread(s)", n_workers, threads)
    # SimpleITK reads ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS at import (the task also sets it, for
    # clusters started elsewhere). `compute.worker_env` replaces dask's pre-spawn environment as a
    # whole, which is how its MALLOC_TRIM_THRESHOLD_ is left out (see conf/compute/local.yaml).
    worker_env = {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(threads)}
    configured_env = compute_cfg.get("worker_env")
    if configured_env is not None:
        worker_env = {**{str(k): str(v) for k, v in configured_env.items()}, **worker_env}
    settings: dict[str, Any] = {"distributed.worker.multiprocessing-method": worker_start_method(compute_cfg)}
    if configured_env is not None:
        settings["distributed.nanny.pre-spawn-environ"] = worker_env
    # For the cluster's lifetime: a worker the nanny restarts is started the same way.
    with dask.config.set(settings):
        # A forked worker's garbage collector would otherwise walk (and so copy, page by page) every
        # object it inherited; frozen objects are left out of collection, in the workers for good.
        gc.freeze()
        try:
            cluster = LocalCluster(
                n_workers=int(n_workers),
                threads_per_worker=threads,
                processes=True,
                dashboard_address=compute_cfg.get("dashboard_address"),
                # Without a dashboard the scheduler still serves health/metrics over HTTP, by default on
                # 8787 of every interface (a warning and a port hunt on a shared machine): loopback, any port.
                scheduler_kwargs=None if compute_cfg.get("dashboard_address") else {"dashboard_address": "127.0.0.1:0"},
                silence_logs=logging.WARNING,
                env=worker_env,
            )
        finally:
            gc.unfreeze()
        try:
            with Client(cluster) as client:
                client.register_plugin(NativeThreads(threads), name="cagerisk-native-threads")
                yield client
        finally:
            cluster.close()


class NativeThreads(WorkerPlugin):
    """Worker plugin: BLAS/OpenMP pools of a worker at its thread count. A forked worker inherits numpy's
    pools sized for the whole machine (the environment's OMP_NUM_THREADS arrives after numpy's import).
    SimpleITK's threads are set by every task (``RoiTask.itk_threads``)."""

    idempotent = True

    def __init__(self, threads: int) -> None:
        self.threads = int(threads)

    def setup(self, worker: Any) -> None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=self.threads)


def _task_key(task: RoiTask, token: str, index: int) -> str:
    # Unique per run so that a future of an earlier run on a shared cluster is never mistaken for ours.
    return f"radiomics-roi-{token}-{index}"


def map_rois(client: Any, tasks: Iterable[RoiTask]) -> Iterator[RoiOutcome]:
    """Outcomes in completion order, one task per ROI; a lost worker becomes a failed outcome, not a crash."""
    tasks = list(tasks)
    if not tasks:
        return
    if client is None:
        for task in tasks:
            yield extract_roi_outcome(task)
        return
    from distributed import as_completed

    token = uuid.uuid4().hex[:12]
    keys = [_task_key(t, token, i) for i, t in enumerate(tasks)]
    by_key = dict(zip(keys, tasks, strict=False))
    futures = client.map(extract_roi_outcome, tasks, key=keys, retries=0)
    try:
        for future in as_completed(futures):
            task = by_key[future.key]
            try:
                outcome = future.result()
            except Exception as err:  # KilledWorker, lost connection: the ROI failed, the run goes on
                outcome = RoiOutcome(
                    task=task,
                    features=None,
                    error_type=type(err).__name__,
                    error=f"{task.name}: dask task failed ({type(err).__name__}: {err})",
                )
            future.release()
            yield outcome
    finally:
        # A driver interrupted part-way (Ctrl-C) must not leave work queued on a shared cluster.
        client.cancel([f for f in futures if not f.done()])
