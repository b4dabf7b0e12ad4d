"""The ROI map on dask.distributed: a local cluster, an existing scheduler, or in-process.

``compute.scheduler``:

- ``null``: a ``LocalCluster`` of ``compute.n_workers`` processes (default: one per usable core) with
  ``compute.threads_per_worker`` threads (default 1). PyRadiomics holds the GIL for most of an ROI and
  SimpleITK's own threads fight over the same cores, so one single-threaded process per core, one ROI
  per task, is what scales (PyRadiomics' batch ``--jobs`` mode measured slower than serial on 2 cores).
- ``tcp://HOST:PORT``: an existing cluster (``dask scheduler`` + ``dask worker`` processes sharing the
  image paths and this package). Nothing is started or stopped.
- ``synchronous``: no dask at all, a plain loop in this process (debugging, profiling, tiny tests).

Results come back to this process, which alone writes the cache, so workers need read access to the
images only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import dask

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


def _client(compute_cfg: Mapping[str, Any], scheduler: Any, n_tasks: int | None) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    # Importing distributed configures its loggers at INFO (dask's logging config), which floods the
    # stage's console with connect/close chatter of every worker; its warnings and errors still show.
    dask_logger = logging.getLogger("distributed")
    if dask_logger.getEffectiveLevel() < logging.WARNING:
        dask_logger.setLevel(logging.WARNING)
    if scheduler:
        timeout = compute_cfg.get("connect_timeout", "30s")
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
    with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_env} if configured_env is not None else {}):
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
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


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
    by_key = dict(zip(keys, tasks))
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
