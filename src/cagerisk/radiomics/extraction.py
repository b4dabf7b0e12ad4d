"""Radiomics of every (patient, sequence, ROI) of a manifest as one wide table (no files but the cache, no MLflow).

Flow: manifest rows -> ``RoiTask`` per ROI (file hashes and settings hash attached) -> cached ones read
back, the rest mapped over dask one ROI per task -> each result written to the cache as it arrives ->
one table keyed by ``patient_id``. A failed ROI becomes a row of ``failures`` (patient, sequence, ROI,
files, error) while every good ROI is still extracted and cached; ``cagerisk.stages.radiomics`` decides
what a failure does to the written table (``radiomics.on_failure``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cagerisk.cohort import schema
from cagerisk.radiomics.cache import RadiomicsCache, file_sha256
from cagerisk.radiomics.distributed import compute_client, map_rois
from cagerisk.radiomics.extract import RoiOutcome, RoiTask
from cagerisk.radiomics.naming import feature_column, feature_groups
from cagerisk.radiomics.params import RadiomicsParams
from cagerisk.radiomics.progress import RoiProgress

log = logging.getLogger(__name__)

FAILURE_COLUMNS = ("patient_id", "sequence", "roi", "image", "mask", "error_type", "error")


@dataclass
class RadiomicsExtraction:
    """What one extraction produced, with the counts the stage logs."""

    table: pd.DataFrame
    failures: pd.DataFrame
    n_rois: int
    n_cached: int
    n_recomputed: int
    n_failed: int
    seconds: float
    extract_seconds: float
    feature_counts: dict[str, int] = field(default_factory=dict)
    # CPU seconds the workers spent inside the ROIs computed in this run (all workers together).
    roi_cpu_seconds: float = 0.0

    @property
    def rois_per_minute(self) -> float:
        """Throughput of the ROIs computed in this run (cache hits excluded)."""
        return 60.0 * self.n_recomputed / self.extract_seconds if self.extract_seconds > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        return {
            "rois_total": self.n_rois,
            "rois_recomputed": self.n_recomputed,
            "rois_cached": self.n_cached,
            "rois_failed": self.n_failed,
            "rois_per_minute": self.rois_per_minute,
            "seconds": self.seconds,
            "extract_seconds": self.extract_seconds,
            "roi_cpu_seconds": self.roi_cpu_seconds,
            "n_patients": len(self.table),
            "n_features": max(self.table.shape[1] - 1, 0),
        }


def _failure(task_or_fields: RoiTask | Mapping[str, Any], error_type: str, error: str) -> dict[str, str]:
    if isinstance(task_or_fields, RoiTask):
        t = task_or_fields
        fields = {"patient_id": t.patient_id, "sequence": t.sequence, "roi": t.roi, "image": t.image, "mask": t.mask}
    else:
        fields = dict(task_or_fields)
    return {**{c: str(fields.get(c, "")) for c in FAILURE_COLUMNS[:5]}, "error_type": error_type, "error": error}


def selected_sequences(manifest: pd.DataFrame, sequences: Sequence[str] | None) -> list[str]:
    """Sequences to extract: the configured list, or every schema sequence the manifest has images for."""
    if sequences:
        unknown = [s for s in sequences if s not in schema.SEQUENCES]
        if unknown:
            raise ValueError(f"radiomics.sequences: unknown sequence(s) {unknown}; expected among {schema.SEQUENCES}")
        missing = [s for s in sequences if schema.image_column(s) not in manifest.columns]
        if missing:
            raise ValueError(f"manifest has no image column for sequence(s) {missing}")
        return list(sequences)
    present = [s for s in schema.SEQUENCES if schema.image_column(s) in manifest.columns]
    absent = [s for s in schema.SEQUENCES if s not in present]
    if absent:
        log.warning("manifest has no images for sequence(s) %s: no radiomics for them", absent)
    return present


def roi_mask_column(sequence: str, reader: int | str = 1) -> str:
    """Manifest column of the masks to use: reader 1, reader 2 (``_r2``) or ``pred`` (segmentation stage)."""
    if str(reader) == "pred":
        return f"{sequence}_mask_pred"
    return schema.mask_column(sequence, int(reader))


def _path_value(value: Any) -> str:
    return "" if schema.is_blank(value) else str(value).strip()


def _hash_one(path: str) -> tuple[str, str | Exception]:
    try:
        return path, file_sha256(path)
    except OSError as err:
        return path, err


def _hash_inputs(manifest: pd.DataFrame, sequences: Sequence[str], reader: int | str) -> dict[str, str | Exception]:
    """sha256 of every image and mask file the tasks read (each file once, a few threads: hashing releases
    the GIL); an unreadable file maps to its error."""
    files = {
        _path_value(row[col])
        for _, row in manifest.iterrows()
        for seq in sequences
        for col in (schema.image_column(seq), roi_mask_column(seq, reader))
        if _path_value(row[col])
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(_hash_one, sorted(files)))


def build_roi_tasks(
    manifest: pd.DataFrame,
    params: Mapping[str, RadiomicsParams],
    sequences: Sequence[str],
    *,
    reader: int | str,
    check_geometry: bool,
    itk_threads: int | None = 1,
) -> tuple[list[RoiTask], list[dict[str, str]]]:
    """One task per (patient, sequence, ROI), in manifest then ``schema.sequence_rois`` order.

    Image and mask files are hashed here (each file once, a few threads: hashing releases the GIL); a
    row that cannot make a task (no path, missing file, bad ``fused_levels``) becomes a failure instead.
    """
    pairs = [(seq, roi) for seq, roi in schema.sequence_rois() if seq in sequences]
    if schema.ID not in manifest.columns:
        raise ValueError(f"manifest has no {schema.ID!r} column")
    duplicated = manifest[schema.ID][manifest[schema.ID].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"manifest: duplicated {schema.ID} {duplicated[:5]}")
    for seq in sequences:
        if roi_mask_column(seq, reader) not in manifest.columns:
            raise ValueError(f"manifest has no mask column {roi_mask_column(seq, reader)!r} for reader {reader}")

    hashes = _hash_inputs(manifest, sequences, reader)
    tasks: list[RoiTask] = []
    failures: list[dict[str, str]] = []
    for _, row in manifest.iterrows():
        pid = str(row[schema.ID])
        for seq, roi in pairs:
            image = _path_value(row[schema.image_column(seq)])
            mask = _path_value(row[roi_mask_column(seq, reader)])
            where = {"patient_id": pid, "sequence": seq, "roi": roi, "image": image, "mask": mask}
            name = f"patient {pid}, sequence {seq}, ROI {roi}"
            if not image or not mask:
                column = schema.image_column(seq) if not image else roi_mask_column(seq, reader)
                failures.append(_failure(where, "MissingPath", f"{name}: manifest column {column} is empty"))
                continue
            bad = [(kind, p, hashes[p]) for kind, p in (("image", image), ("mask", mask)) if isinstance(hashes[p], Exception)]
            if bad:
                kind, p, err = bad[0]
                failures.append(_failure(where, type(err).__name__, f"{name}: {kind} {p} unreadable: {err}"))
                continue
            try:
                labels = tuple(schema.roi_label_values(row["fused_levels"], roi))
            except (ValueError, KeyError) as err:
                failures.append(_failure(where, type(err).__name__, f"{name}: {err}"))
                continue
            tasks.append(
                RoiTask(
                    patient_id=pid,
                    sequence=seq,
                    roi=roi,
                    image=image,
                    mask=mask,
                    label_values=labels,
                    params=params[seq].extractor_params(),
                    settings_sha256=params[seq].sha256,
                    image_sha256=str(hashes[image]),
                    mask_sha256=str(hashes[mask]),
                    itk_threads=itk_threads,
                    check_geometry=check_geometry,
                )
            )
    return tasks, failures


def radiomics_table(
    patient_ids: Sequence[str],
    results: Mapping[tuple[str, str, str], Mapping[str, float]],
    pairs: Iterable[tuple[str, str]],
) -> pd.DataFrame:
    """Wide table: ``patient_id`` then ``{sequence}_{roi}_{key}`` per group, NaN where an ROI is missing.

    Column order is fixed by ``pairs`` and PyRadiomics' own key order, so reruns give identical files.
    """
    index = {pid: i for i, pid in enumerate(patient_ids)}
    columns: dict[str, np.ndarray] = {schema.ID: np.asarray(list(patient_ids), dtype=object)}
    for seq, roi in pairs:
        keys: dict[str, None] = {}
        for (_pid, s, r), features in results.items():
            if (s, r) == (seq, roi):
                keys.update(dict.fromkeys(features))
        if not keys:
            continue
        block = np.full((len(index), len(keys)), np.nan)
        position = {k: j for j, k in enumerate(keys)}
        for (pid, s, r), features in results.items():
            if (s, r) == (seq, roi) and pid in index:
                row = index[pid]
                for k, v in features.items():
                    block[row, position[k]] = v
        for k, j in position.items():
            columns[feature_column(seq, roi, k)] = block[:, j]
    table = pd.DataFrame(columns)
    table[schema.ID] = table[schema.ID].astype(str)
    return table


def extract_radiomics(
    manifest: pd.DataFrame,
    params: Mapping[str, RadiomicsParams],
    cache_dir: str | Path,
    compute_cfg: Mapping[str, Any] | None,
    *,
    sequences: Sequence[str] | None,
    reader: int | str,
    show_progress: bool,
    check_geometry: bool,
) -> RadiomicsExtraction:
    """Features of every ROI of the manifest, reusing the cache and computing the rest on dask.

    ``sequences``: None = every sequence the manifest has images for; ``reader``: 1, 2 or ``pred``
    (``roi_mask_column``); ``check_geometry``: a mask off its image's grid fails (``radiomics.*``)."""
    start = time.perf_counter()
    sequences = selected_sequences(manifest, sequences)
    tasks, failures = build_roi_tasks(manifest, params, sequences, reader=reader, check_geometry=check_geometry)
    n_rois = len(tasks) + len(failures)
    cache = RadiomicsCache(cache_dir)
    cache.remove_stale_temporaries()
    results, todo = _split_cached(tasks, cache)
    n_cached = len(results)
    log.info(
        "radiomics: %d ROIs (%d patients x %s): %d cached, %d to compute, %d unusable inputs",
        n_rois,
        len(manifest),
        "+".join(sequences),
        n_cached,
        len(todo),
        len(failures),
    )
    recomputed = 0
    cpu = 0.0
    extract_start = time.perf_counter()
    if todo:
        with compute_client(compute_cfg, n_tasks=len(todo)) as client:
            extract_start = time.perf_counter()  # cluster start-up is not ROI throughput
            progress = RoiProgress(len(todo), "radiomics") if show_progress else None
            with progress or contextlib.nullcontext():
                for outcome in map_rois(client, todo):
                    _record(outcome, cache, results, failures)
                    recomputed += outcome.ok
                    cpu += outcome.cpu_seconds
                    if progress is not None:
                        progress.advance(outcome.ok)
    extract_seconds = time.perf_counter() - extract_start if todo else 0.0
    pairs = [(s, r) for s, r in schema.sequence_rois() if s in sequences]
    table = radiomics_table([str(p) for p in manifest[schema.ID]], results, pairs)
    failures_df = pd.DataFrame(failures, columns=list(FAILURE_COLUMNS))
    counts = {f"{s}_{r}": len(cols) for (s, r), cols in feature_groups(table.columns).items()}
    extraction = RadiomicsExtraction(
        table=table,
        failures=failures_df,
        n_rois=n_rois,
        n_cached=n_cached,
        n_recomputed=recomputed,
        n_failed=len(failures_df),
        seconds=time.perf_counter() - start,
        extract_seconds=extract_seconds,
        feature_counts=counts,
        roi_cpu_seconds=cpu,
    )
    log.info(
        "radiomics: %d ROIs recomputed, %d cached, %d failed; %d features in %d groups; %.1f s (%.1f ROIs/min computed)",
        extraction.n_recomputed,
        extraction.n_cached,
        extraction.n_failed,
        extraction.table.shape[1] - 1,
        len(counts),
        extraction.seconds,
        extraction.rois_per_minute,
    )
    return extraction


def _split_cached(
    tasks: Sequence[RoiTask], cache: RadiomicsCache
) -> tuple[dict[tuple[str, str, str], dict[str, float]], list[RoiTask]]:
    """Features of the tasks the cache already holds, by (patient, sequence, ROI), and the tasks to compute."""
    results: dict[tuple[str, str, str], dict[str, float]] = {}
    todo: list[RoiTask] = []
    for task in tasks:
        cached = cache.load(task)
        if cached is None:
            todo.append(task)
        else:
            results[(task.patient_id, task.sequence, task.roi)] = cached
    return results, todo


def _record(
    outcome: RoiOutcome,
    cache: RadiomicsCache,
    results: dict[tuple[str, str, str], dict[str, float]],
    failures: list[dict[str, str]],
) -> None:
    task = outcome.task
    if outcome.ok:
        cache.store(task, outcome.features or {}, extra={"seconds": outcome.seconds, "cpu_seconds": outcome.cpu_seconds})
        results[(task.patient_id, task.sequence, task.roi)] = outcome.features or {}
    else:
        log.error("radiomics ROI failed: %s", outcome.error)
        if outcome.detail:
            log.debug("%s", outcome.detail)
        failures.append(_failure(task, outcome.error_type, outcome.error))


def failure_summary(failures: pd.DataFrame, limit: int = 10) -> str:
    lines = [f"  - {r.patient_id} / {r.sequence} / {r.roi}: {r.error}" for r in failures.head(limit).itertuples()]
    if len(failures) > limit:
        lines.append(f"  ... and {len(failures) - limit} more")
    return "\n".join(lines)


def radiomics_manifest_path(configured: Any, paths: Any) -> Path:
    """``radiomics.manifest``, or by default the segment stage's manifest when it exists (features from
    the masks ``segment.masks`` chose per sequence - the U-Nets', as at scoring time), else the cohort's."""
    if configured:
        return Path(str(configured))
    segmented = Path(str(paths.segment)) / "manifest.csv"
    if segmented.exists():
        return segmented
    cohort = Path(str(paths.cohort)) / "manifest.csv"
    log.warning("%s not found (segment stage not run): radiomics from the manual masks of %s", segmented, cohort)
    return cohort


def with_feature_masks(manifest: pd.DataFrame, reader: int | str) -> pd.DataFrame:
    """Reader 1 on a segment-stage manifest: every ``{seq}_mask`` becomes the mask that stage chose per
    patient (``{seq}_mask_source``); other readers and the cohort manifest are left alone."""
    if str(reader) != "1":
        return manifest
    from cagerisk.segment.manifest import with_feature_masks as chosen_masks

    out, counts = chosen_masks(manifest)
    for seq, sources in counts.items():
        log.info("%s radiomics from the masks the segment stage chose: %s", seq, sources)
    return out


with_feature_ct_masks = with_feature_masks  # the name from when only the CT was segmented
