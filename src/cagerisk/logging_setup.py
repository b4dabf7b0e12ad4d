"""Logging for command-line stages: rich console output, library code logs through ``logging``."""

from __future__ import annotations

import logging
import os

from rich.logging import RichHandler


def configure_logging(level: str | int | None = None) -> None:
    level = level or os.environ.get("CAGERISK_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    if any(isinstance(h, RichHandler) for h in root.handlers):
        root.setLevel(level)
        return
    handler = RichHandler(rich_tracebacks=True, show_path=False, log_time_format="%H:%M:%S")
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    # Third-party chatter that drowns the stage's own messages.
    for noisy in ("alembic", "radiomics", "distributed", "matplotlib", "urllib3", "git", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
