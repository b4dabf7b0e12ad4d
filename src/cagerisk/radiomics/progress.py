"""Rich progress for the ROI map: ROIs done of total, ROIs per minute, ETA."""

from __future__ import annotations

import logging
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

log = logging.getLogger(__name__)


class RoisPerMinuteColumn(ProgressColumn):
    """Throughput over the run so far (rich's own speed is a short window, too jumpy for slow ROIs)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        if task.completed == 0 or elapsed <= 0:
            return Text("- ROIs/min", style="progress.data.speed")
        return Text(f"{60.0 * task.completed / elapsed:.1f} ROIs/min", style="progress.data.speed")


class RoiProgress:
    """Context manager wrapping a rich ``Progress``; also logs a line every ``log_every`` fraction.

    The log lines matter where there is no terminal (DVC, CI logs), in which case rich draws nothing.
    """

    def __init__(self, total: int, description: str = "radiomics", log_every: float = 0.1) -> None:
        self.total = total
        self.description = description
        self.log_every = log_every
        self.done = 0
        self.failed = 0
        self._start = 0.0
        self._next_log = log_every
        console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("ROIs"),
            RoisPerMinuteColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[failed]} failed"),
            console=console,
            disable=not console.is_terminal,
        )
        self._task_id = None

    def __enter__(self) -> RoiProgress:
        self._start = time.perf_counter()
        self._progress.start()
        self._task_id = self._progress.add_task(self.description, total=self.total, failed=0)
        return self

    def advance(self, ok: bool = True) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        self._progress.update(self._task_id, advance=1, failed=self.failed)
        if self.total and self.done / self.total >= self._next_log:
            self._next_log += self.log_every
            log.info(
                "%s: %d/%d ROIs, %.1f ROIs/min, ETA %s, %d failed",
                self.description,
                self.done,
                self.total,
                self.rois_per_minute,
                self.eta_text,
                self.failed,
            )

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    @property
    def rois_per_minute(self) -> float:
        return 60.0 * self.done / self.elapsed if self.done and self.elapsed > 0 else 0.0

    @property
    def eta_text(self) -> str:
        if not self.done:
            return "-"
        seconds = (self.total - self.done) * self.elapsed / self.done
        return time.strftime("%H:%M:%S", time.gmtime(seconds))

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()
