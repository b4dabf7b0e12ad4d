"""Fixtures of the tracking tests: the serving tests' feature-level pipeline (helpers imported by name)."""

from __future__ import annotations

import sys
from pathlib import Path

SERVING_TESTS = Path(__file__).resolve().parents[1] / "serving"
HERE = Path(__file__).resolve().parent
if str(SERVING_TESTS) not in sys.path:
    sys.path.insert(0, str(SERVING_TESTS))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
