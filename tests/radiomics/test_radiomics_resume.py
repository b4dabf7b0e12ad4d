"""A run killed part-way (SIGKILL, no clean-up) keeps every finished ROI; the rerun computes the rest."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from cagerisk.radiomics import extract_radiomics
from tests.radiomics.conftest import EXTRACTION

pytestmark = pytest.mark.timeout(180)

CHILD = textwrap.dedent(
    """
    import sys
    import pandas as pd
    from cagerisk.radiomics import extract_radiomics
    from cagerisk.radiomics.params import params_by_sequence

    manifest_csv, params_file, cache_dir = sys.argv[1:4]
    params = params_by_sequence({"params": {"ct": params_file, "t2": params_file}}, ["ct", "t2"])
    extract_radiomics(
        pd.read_csv(manifest_csv), params, cache_dir, {"scheduler": "synchronous"},
        sequences=None, reader="1", show_progress=False, check_geometry=True,
    )
    """
)


def test_killed_run_resumes_without_losing_finished_rois(reference_run, tmp_path):
    manifest_csv = tmp_path / "manifest_abs.csv"
    reference_run.manifest.to_csv(manifest_csv, index=False)
    cache = tmp_path / "cache"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(manifest_csv), str(reference_run.params_file), str(cache)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while len(list(cache.rglob("*.json"))) < 3:
        assert child.poll() is None, child.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the child run made no progress"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    done = len(list(cache.rglob("*.json")))
    assert 3 <= done < 12, f"{done} ROIs finished before the kill; the test needs a run cut part-way"

    resumed = extract_radiomics(reference_run.manifest, reference_run.params, cache, {"scheduler": "synchronous"}, **EXTRACTION)
    assert (resumed.n_cached, resumed.n_recomputed, resumed.n_failed) == (done, 12 - done, 0)
    pd.testing.assert_frame_equal(resumed.table, reference_run.table, check_exact=True)
