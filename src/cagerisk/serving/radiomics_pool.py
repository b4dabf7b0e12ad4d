"""PyRadiomics of one scored patient on worker processes, one ROI group per task.

PyRadiomics holds the GIL for most of an extraction, so threads do not help (measured: two threads
took twice as long as one loop); processes do. The pool is started once, when the service has loaded
the model, from a clean ``forkserver`` process (the serving process holds torch's and ITK's threads,
which a fork would copy half-alive), and warmed so that the first request does not pay PyRadiomics'
import. Each worker runs SimpleITK on one thread, as the radiomics stage's workers do, and the same
``extract_roi`` as the stage: the features are the same (tested).

This module is imported by the worker processes: it imports nothing heavy at the top.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _warm(params: Sequence[Mapping[str, Any]]) -> int:
    """Import PyRadiomics and build the extractors of the model's settings in this worker."""
    from cagerisk.radiomics.extract import new_extractor, quiet_pyradiomics

    quiet_pyradiomics()
    for p in params:
        new_extractor(p)
    return os.getpid()


def extract_in_worker(task: Any) -> tuple[dict[str, float] | None, str]:
    """``extract_roi(task)``, or ``(None, "Type: message")`` of what failed (its cause, when PyRadiomics'
    error was wrapped): an exception's cause does not survive the trip back from a process."""
    from cagerisk.radiomics.extract import RoiExtractionError, extract_roi

    try:
        return extract_roi(task), ""
    except Exception as err:  # noqa: BLE001 - reported to the caller, who names the input at fault
        cause = err.__cause__ if isinstance(err, RoiExtractionError) and err.__cause__ else err
        return None, f"{type(cause).__name__}: {cause}"


@contextlib.contextmanager
def _this_cagerisk_first() -> Iterator[None]:
    """While the pool's server process starts, the folder holding this very ``cagerisk`` leads sys.path.

    The worker processes import ``cagerisk`` afresh from the sys.path they are given. MLflow puts a
    logged model's own ``code/`` copy of ``cagerisk`` on sys.path when it loads the model; a model
    registered by an older version then shadowed the service's code in the workers (which found no
    ``cagerisk.serving.radiomics_pool`` and died). The workers run the code of the process that starts them.
    """
    root = str(Path(__file__).resolve().parents[2])
    saved = list(sys.path)
    sys.path[:] = [root, *(entry for entry in saved if entry != root)]
    try:
        yield
    finally:
        sys.path[:] = saved


class RadiomicsPool:
    """A process pool for ``extract_in_worker`` tasks (see the module docstring)."""

    def __init__(self, processes: int, warm_params: Sequence[Mapping[str, Any]] = ()) -> None:
        self.processes = max(1, int(processes))
        context = multiprocessing.get_context(
            "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        )
        self.executor = ProcessPoolExecutor(self.processes, mp_context=context)
        # Warm every worker (imports take 1-3 s), without waiting for it; the first submit starts the
        # server process that every worker is forked from.
        with _this_cagerisk_first():
            self.warming = [self.executor.submit(_warm, list(warm_params)) for _ in range(self.processes)]
        log.info("PyRadiomics pool: %d worker processes", self.processes)

    @property
    def warmed(self) -> bool:
        """Every worker's warm-up has finished, well or not (a worker that died breaks the pool, and
        scoring then extracts in the serving process): nothing is left to wait for."""
        return all(future.done() for future in self.warming)

    def submit(self, task: Any) -> Future:
        return self.executor.submit(extract_in_worker, task)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
