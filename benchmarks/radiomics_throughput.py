"""Throughput of the radiomics stage against a plain serial PyRadiomics loop, in the same run.

    .venv/bin/python benchmarks/radiomics_throughput.py [--data DIR] [--patients N] [hydra overrides...]

On the cohort under ``DIR/cohort/manifest.csv`` (default ``data``, the demo cohort of `dvc repro`),
for the first N patients (default 20: 220 ROIs, about 5 min with the study preset on 2 cores) and every
sequence/ROI of the stage:

- baseline: one process, a ``RadiomicsFeatureExtractor`` per sequence built from the parameter file,
  ``execute(image, mask)`` over the ROIs one after another; the ROI mask is made with SimpleITK filters
  (an implementation independent of the stage's), SimpleITK and BLAS at their default threads;
- stage: ``extract_radiomics`` with the configured compute (default: local dask cluster, one
  single-threaded worker process per core, forked), an empty cache, cluster start-up and close included.

Prints ROIs per minute of both, their ratio (target >= 1.8 on 2 cores) and the largest relative
difference between the two tables (target <= 1e-9). Exit status 1 if the tables differ by more.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
RATIO_TARGET = 1.8
DIFF_TARGET = 1e-9

log = logging.getLogger("benchmarks.radiomics_throughput")


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def plain_roi_mask(label_map: sitk.Image, values: list[int]) -> sitk.Image:
    """Union of label values with SimpleITK filters only (independent of cagerisk.imaging.masks)."""
    union = functools.reduce(sitk.Or, [sitk.Equal(label_map, int(v)) for v in values])
    return sitk.Cast(union, sitk.sitkUInt8)


def plain_serial_loop(manifest: pd.DataFrame, params, sequences: list[str]) -> tuple[dict, float, float]:
    """What a PyRadiomics user writes: one extractor per parameter file, execute() per ROI."""
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    from cagerisk.cohort import schema

    start = time.perf_counter()
    cpu_start = time.process_time()
    extractors = {}
    for seq in sequences:
        p = params[seq]
        # The file itself when nothing overrides it, as a user would pass it.
        source = str(p.path) if p.params == _file_params(p.path) else p.extractor_params()
        extractors[seq] = RadiomicsFeatureExtractor(source)
    results: dict[tuple[str, str, str], dict[str, float]] = {}
    for _, row in manifest.iterrows():
        for seq, roi in schema.sequence_rois():
            if seq not in sequences:
                continue
            image = sitk.ReadImage(row[schema.image_column(seq)])
            label_map = sitk.ReadImage(row[schema.mask_column(seq)])
            mask = plain_roi_mask(label_map, schema.roi_label_values(row["fused_levels"], roi))
            out = extractors[seq].execute(image, mask, label=1)
            results[(str(row[schema.ID]), seq, roi)] = {
                k: float(np.asarray(v)) for k, v in out.items() if not k.startswith("diagnostics_")
            }
    return results, time.perf_counter() - start, time.process_time() - cpu_start


def _file_params(path: Path) -> dict:
    from cagerisk.radiomics.params import load_params_file

    return load_params_file(path)


def max_relative_difference(a: pd.DataFrame, b: pd.DataFrame) -> tuple[float, str]:
    assert list(a.columns) == list(b.columns), "the two tables have different columns"
    assert list(a["patient_id"]) == list(b["patient_id"])
    x = a.drop(columns="patient_id").to_numpy(float)
    y = b.drop(columns="patient_id").to_numpy(float)
    both_nan = np.isnan(x) & np.isnan(y)
    one_nan = np.isnan(x) ^ np.isnan(y)
    if one_nan.any():
        return float("inf"), str(a.columns[1 + int(np.argwhere(one_nan)[0][1])])
    scale = np.maximum(np.abs(y), np.finfo(float).tiny)
    rel = np.where(both_nan, 0.0, np.abs(x - y) / scale)
    rel = np.where((x == y) | both_nan, 0.0, rel)
    worst = np.unravel_index(int(np.argmax(rel)), rel.shape) if rel.size else (0, 0)
    return (float(rel.max()) if rel.size else 0.0), str(a.columns[1 + worst[1]]) if rel.size else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="paths.data of the cohort (default: the config's, i.e. data)")
    parser.add_argument("--manifest", default=None, help="a manifest.csv instead of DATA/cohort/manifest.csv")
    parser.add_argument("--patients", type=int, default=20, help="first N patients of the manifest (0 = all)")
    parser.add_argument("--sequences", default=None, help="comma-separated subset, e.g. ct,t2 (default: all)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. radiomics=fast compute.n_workers=2")
    args = parser.parse_args(argv)

    from omegaconf import OmegaConf

    from cagerisk.cohort import schema
    from cagerisk.cohort.manifest import load_manifest
    from cagerisk.logging_setup import configure_logging
    from cagerisk.radiomics import extract_radiomics, params_by_sequence, radiomics_table
    from cagerisk.radiomics.distributed import usable_cores
    from cagerisk.radiomics.extraction import selected_sequences

    configure_logging("WARNING")
    overrides = list(args.overrides) + ([f"paths.data={args.data}"] if args.data else [])
    cfg = compose(overrides)
    manifest_path = Path(args.manifest) if args.manifest else Path(str(cfg.paths.cohort)) / "manifest.csv"
    if not manifest_path.exists():
        print(f"no manifest at {manifest_path}: run `cagerisk cohort cohort=demo` (or dvc repro cohort) first")
        return 2
    manifest = load_manifest(manifest_path)
    if args.patients:
        manifest = manifest.head(args.patients).reset_index(drop=True)
    rcfg = OmegaConf.to_container(cfg.radiomics, resolve=True)
    sequences = selected_sequences(manifest, args.sequences.split(",") if args.sequences else rcfg.get("sequences"))
    params = params_by_sequence(rcfg, sequences)
    compute = OmegaConf.to_container(cfg.compute, resolve=True)
    print(f"cohort {manifest_path} ({len(manifest)} patients), sequences {sequences}, {usable_cores()} usable cores")
    files = sorted({str(p.path.relative_to(REPO)) if p.path.is_relative_to(REPO) else str(p.path) for p in params.values()})
    print(f"parameter files: {files}")

    load_before = os.getloadavg()[0]
    baseline, baseline_s, baseline_cpu = plain_serial_loop(manifest, params, sequences)
    n = len(baseline)
    print(
        f"plain serial loop : {n} ROIs in {baseline_s:8.1f} s = {60 * n / baseline_s:7.1f} ROIs/min "
        f"(CPU {baseline_cpu:.1f} s, load average before {load_before:.1f})"
    )

    with tempfile.TemporaryDirectory(prefix="radiomics-bench-") as cache:
        start = time.perf_counter()
        stage = extract_radiomics(
            manifest,
            params,
            cache,
            compute,
            sequences=sequences,
            reader=rcfg["reader"],
            show_progress=True,
            check_geometry=rcfg["check_geometry"],
        )
        stage_s = time.perf_counter() - start
    assert stage.n_failed == 0, stage.failures.to_string()
    assert stage.n_recomputed == n
    print(
        f"stage ({compute.get('scheduler') or 'local cluster'}, {compute.get('n_workers') or usable_cores()} workers): "
        f"{n} ROIs in {stage_s:8.1f} s = {60 * n / stage_s:7.1f} ROIs/min "
        f"({stage.rois_per_minute:.1f} ROIs/min without cluster start-up; worker CPU in ROIs {stage.roi_cpu_seconds:.1f} s, "
        f"load average after {os.getloadavg()[0]:.1f})"
    )
    ratio = baseline_s / stage_s
    pairs = [(s, r) for s, r in schema.sequence_rois() if s in sequences]
    plain_table = radiomics_table([str(p) for p in manifest["patient_id"]], baseline, pairs)
    diff, where = max_relative_difference(stage.table, plain_table)
    print(f"features: {stage.table.shape[1] - 1} columns; per group: {stage.feature_counts}")
    verdict = "OK" if ratio >= RATIO_TARGET else "BELOW TARGET"
    print(f"throughput ratio stage/plain: {ratio:.2f} (target >= {RATIO_TARGET}) {verdict}")
    verdict = "OK" if diff <= DIFF_TARGET else "FAIL"
    print(f"largest relative difference: {diff:.3g} at {where or '-'} (target <= {DIFF_TARGET:g}) {verdict}")
    return 0 if diff <= DIFF_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
