"""The ROI cache: reruns recompute nothing, a changed setting or image recomputes only what it touches."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pandas as pd
import SimpleITK as sitk

from cagerisk.radiomics import RadiomicsCache, extract_radiomics
from cagerisk.radiomics.naming import feature_groups
from tests.radiomics.conftest import EXTRACTION

SERIAL = {"scheduler": "synchronous"}


def test_rerun_recomputes_nothing_and_gives_the_same_table(roi_cohort, tiny_params, tmp_path, caplog):
    manifest = roi_cohort(n_patients=2)
    params = tiny_params()
    cache = tmp_path / "cache"
    first = extract_radiomics(manifest, params, cache, SERIAL, **EXTRACTION)
    # 2 patients x (ct vertebra, t2 vertebra, t2 disc)
    assert (first.n_rois, first.n_recomputed, first.n_cached, first.n_failed) == (6, 6, 0, 0)
    assert list(first.table["patient_id"]) == ["P000", "P001"]
    assert set(feature_groups(first.table.columns)) == {("ct", "vertebra"), ("t2", "vertebra"), ("t2", "disc")}
    assert not first.table.isna().any().any()

    with caplog.at_level(logging.INFO, logger="cagerisk.radiomics"):
        second = extract_radiomics(manifest, params, cache, SERIAL, **EXTRACTION)
    assert (second.n_recomputed, second.n_cached) == (0, 6)
    assert "0 ROIs recomputed" in caplog.text
    # Cache round trip is exact: JSON floats are written with repr.
    pd.testing.assert_frame_equal(first.table, second.table, check_exact=True)


def test_changed_setting_recomputes_only_its_sequence(roi_cohort, tiny_params, tmp_path):
    manifest = roi_cohort(n_patients=2)
    cache = tmp_path / "cache"
    base = extract_radiomics(manifest, tiny_params(), cache, SERIAL, **EXTRACTION)
    changed = tiny_params(overrides={"ct": {"setting": {"binWidth": 10}}})
    rerun = extract_radiomics(manifest, changed, cache, SERIAL, **EXTRACTION)
    assert (rerun.n_recomputed, rerun.n_cached) == (2, 4)  # the two CT ROIs only
    ct = [c for c in base.table.columns if c.startswith("ct_") and "firstorder_Entropy" in c]
    t2 = [c for c in base.table.columns if c.startswith("t2_")]
    assert not np.allclose(base.table[ct].to_numpy(), rerun.table[ct].to_numpy())  # binning changed entropy
    pd.testing.assert_frame_equal(base.table[t2], rerun.table[t2], check_exact=True)
    # Going back to the old settings finds their entries still cached.
    back = extract_radiomics(manifest, tiny_params(), cache, SERIAL, **EXTRACTION)
    assert back.n_recomputed == 0


def test_changed_image_recomputes_only_that_patient_and_sequence(roi_cohort, tiny_params, tmp_path):
    manifest = roi_cohort(n_patients=2)
    cache = tmp_path / "cache"
    extract_radiomics(manifest, tiny_params(), cache, SERIAL, **EXTRACTION)
    path = manifest.loc[1, "t2_image"]
    image = sitk.ReadImage(path)
    sitk.WriteImage(image * 1.5, path, useCompression=True)
    rerun = extract_radiomics(manifest, tiny_params(), cache, SERIAL, **EXTRACTION)
    assert (rerun.n_recomputed, rerun.n_cached) == (2, 4)  # P001's t2 vertebra and disc


def test_damaged_cache_entry_is_recomputed(roi_cohort, tiny_params, tmp_path, caplog):
    manifest = roi_cohort(n_patients=1, sequences=("ct",))
    cache_dir = tmp_path / "cache"
    first = extract_radiomics(manifest, tiny_params(("ct",)), cache_dir, SERIAL, **EXTRACTION)
    entries = list(cache_dir.rglob("*.json"))
    assert len(entries) == 1
    entry = json.loads(entries[0].read_text())
    assert entry["patient_id"] == "P000" and entry["sequence"] == "ct" and entry["roi"] == "vertebra"
    assert entry["label_values"] == [3, 4, 5, 6]  # L3..S1 around the fused L4-L5
    entries[0].write_text(entries[0].read_text()[:100])  # truncated, as by a full disk
    with caplog.at_level(logging.WARNING):
        rerun = extract_radiomics(manifest, tiny_params(("ct",)), cache_dir, SERIAL, **EXTRACTION)
    assert rerun.n_recomputed == 1 and "unreadable" in caplog.text
    pd.testing.assert_frame_equal(first.table, rerun.table, check_exact=True)


def test_cache_key_covers_patient_labels_and_hashes(roi_cohort, tiny_params, tmp_path):
    from dataclasses import replace

    from cagerisk.radiomics import build_roi_tasks, roi_cache_key

    manifest = roi_cohort(n_patients=1, sequences=("ct",))
    tasks, failures = build_roi_tasks(manifest, tiny_params(("ct",)), ["ct"], reader="1", check_geometry=True)
    assert not failures and len(tasks) == 1
    task = tasks[0]
    keys = {
        roi_cache_key(task),
        roi_cache_key(replace(task, patient_id="other")),
        roi_cache_key(replace(task, label_values=(3, 4))),
        roi_cache_key(replace(task, image_sha256="0" * 64)),
        roi_cache_key(replace(task, mask_sha256="0" * 64)),
        roi_cache_key(replace(task, settings_sha256="0" * 64)),
    }
    assert len(keys) == 6
    cache = RadiomicsCache(tmp_path / "c")
    assert cache.load(task) is None
    cache.store(task, {"original_firstorder_Mean": 0.1 + 0.2})
    assert cache.load(task) == {"original_firstorder_Mean": 0.1 + 0.2}
    assert not list((tmp_path / "c").rglob("*.tmp"))
    # A temporary file of a writer killed mid-write (its pid is gone) is swept; a live writer's is kept.
    folder = cache.path(task).parent
    dead = folder / f".{cache.path(task).name}.{2**22 + 12345}.{'0' * 32}.tmp"
    live = folder / f".{cache.path(task).name}.{os.getpid()}.{'1' * 32}.tmp"
    dead.write_text("{")
    live.write_text("{")
    assert cache.remove_stale_temporaries() == 1
    assert not dead.exists() and live.exists()
