"""Inter-observer reproducibility as tables: second-reader radiomics, feature ICCs, mask agreement.

Flow: manifest -> patients with second-reader masks (``{seq}_mask_r2``) -> their radiomics on the
second reader's masks through the radiomics stage's own ``extract_radiomics(reader=2)`` (same
parameters, cache and dask map as reader 1) -> reader-1 values of the same patients from
``radiomics.parquet`` -> ICC(2,1), ICC(3,1) with 95 % CI for every feature of that table ->
``{paths.features}/icc.parquet``; Dice and Hausdorff between the readers' masks per patient and ROI;
per-ROI summaries. ``run_reproducibility`` returns them (no files but the radiomics cache, no MLflow);
``cagerisk.stages.reproducibility`` writes them under ``reproducibility.report_dir`` and logs them.

A second-reader ROI that fails (mask not on its image's grid, empty, unreadable) is reported with
patient, sequence and ROI; every other ROI is still extracted and cached. With
``reproducibility.on_failure=error`` (default) the stage then stops without writing the ICC table; with
``skip`` the ICC leaves that patient out of that ROI's features.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cagerisk.cohort import schema
from cagerisk.radiomics import (
    RadiomicsExtraction,
    RadiomicsParams,
    extract_radiomics,
    feature_groups,
)
from cagerisk.reproducibility.agreement import mask_agreement_table, summarise_agreement
from cagerisk.reproducibility.icc import feature_icc
from cagerisk.reproducibility.summary import feature_parts, summarise_icc

log = logging.getLogger(__name__)

FAILURE_COLUMNS = ("patient_id", "sequence", "roi", "step", "error_type", "error", "image", "mask")


class ReproducibilityStageError(RuntimeError):
    """Second-reader ROIs failed; the others are cached and the failures table names each one."""


@dataclass
class Reproducibility:
    """What one run of the stage produced."""

    icc: pd.DataFrame  # one row per feature of the reader-1 table
    summary: pd.DataFrame  # per (sequence, ROI) and overall
    agreement: pd.DataFrame  # Dice / Hausdorff per (patient, sequence, ROI)
    agreement_summary: pd.DataFrame
    reader2: pd.DataFrame  # second-reader radiomics, patient_id + feature columns
    failures: pd.DataFrame
    patients: list[str]
    n_rois: int = 0
    n_recomputed: int = 0
    n_cached: int = 0
    seconds: float = 0.0
    outputs: dict[str, Path] = field(default_factory=dict)
    run_id: str | None = None  # the MLflow run of the stage (None with tracking.enabled=false)

    def metrics(self, threshold: float) -> dict[str, float]:
        overall = self.summary.set_index(["sequence", "roi"]).loc[("all", "all")]
        metrics: dict[str, float] = {
            "n_patients": len(self.patients),
            "n_features": len(self.icc),
            "n_features_icc_defined": int(self.icc["icc2_1"].notna().sum()),
            "rois_total": self.n_rois,
            "rois_recomputed": self.n_recomputed,
            "rois_cached": self.n_cached,
            "rois_failed": len(self.failures),
            "seconds": self.seconds,
            "icc2_1_median": overall["icc2_1_median"],
            "icc3_1_median": overall["icc3_1_median"],
            "icc2_1_share_reproducible": overall["icc2_1_share_reproducible"],
            "icc3_1_share_reproducible": overall["icc3_1_share_reproducible"],
            "threshold": threshold,
        }
        for row in self.summary.itertuples():
            if row.sequence == "all":
                continue
            prefix = f"{row.sequence}_{row.roi}"
            metrics[f"{prefix}_icc2_1_median"] = row.icc2_1_median
            metrics[f"{prefix}_icc3_1_median"] = row.icc3_1_median
            metrics[f"{prefix}_icc2_1_share_reproducible"] = row.icc2_1_share_reproducible
        for row in self.agreement_summary.itertuples():
            prefix = f"{row.sequence}_{row.roi}"
            metrics[f"{prefix}_dice_median"] = row.dice_median
            metrics[f"{prefix}_hausdorff95_mm_median"] = row.hausdorff95_mm_median
        return {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(float(v))}


def second_reader_sequences(row: pd.Series, sequences: Sequence[str]) -> tuple[str, ...]:
    """Sequences of one manifest row that have a second-reader mask."""
    return tuple(s for s in sequences if not schema.is_blank(row.get(schema.mask_column(s, 2))))


def second_reader_patients(manifest: pd.DataFrame, sequences: Sequence[str], splits: Sequence[str] | None = None) -> pd.DataFrame:
    """Manifest rows with at least one second-reader mask among ``sequences`` (optionally of some splits)."""
    frame = manifest
    if splits:
        if "split" not in frame.columns:
            raise ValueError("reproducibility.splits is set but the manifest has no 'split' column")
        frame = frame[frame["split"].isin(list(splits))]
    has = frame.apply(lambda row: bool(second_reader_sequences(row, sequences)), axis=1) if len(frame) else pd.Series(dtype=bool)
    return frame[has.astype(bool)] if len(frame) else frame


def extract_by_reader(
    manifest: pd.DataFrame,
    params: Mapping[str, RadiomicsParams],
    sequences: Sequence[str],
    reader: int,
    cache_dir: str | Path,
    compute_cfg: Mapping[str, Any] | None,
    show_progress: bool,
    check_geometry: bool,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Radiomics of one reader's masks for the ROIs that have a second-reader mask, via ``extract_radiomics``.

    Patients are grouped by the set of sequences they have second-reader masks for (one group when, as in
    the synthetic cohort, a patient has them for every sequence), so that no patient is asked for a mask
    it does not have. Returns the wide table, the failures and the ROI counts.
    """
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, (_, row) in enumerate(manifest.iterrows()):
        seqs = second_reader_sequences(row, sequences)
        if seqs:
            groups.setdefault(seqs, []).append(i)
    tables, failures = [], []
    counts = {"n_rois": 0, "n_recomputed": 0, "n_cached": 0}
    for seqs, rows in groups.items():
        extraction: RadiomicsExtraction = extract_radiomics(
            manifest.iloc[rows],
            params,
            cache_dir=cache_dir,
            compute_cfg=compute_cfg,
            sequences=list(seqs),
            reader=reader,
            show_progress=show_progress,
            check_geometry=check_geometry,
        )
        tables.append(extraction.table)
        failures.append(extraction.failures)
        counts["n_rois"] += extraction.n_rois
        counts["n_recomputed"] += extraction.n_recomputed
        counts["n_cached"] += extraction.n_cached
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame({schema.ID: []})
    failure_frame = pd.concat(failures, ignore_index=True) if failures else pd.DataFrame()
    return table, failure_frame, counts


def reader1_from_table(path: str | Path, patients: Sequence[str]) -> pd.DataFrame:
    """Rows of the radiomics stage's table for ``patients``; a patient without a row is an error naming it."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"reader-1 radiomics table {p} not found: run `cagerisk radiomics` first "
            "(or set reproducibility.reader1_source=extract)"
        )
    table = pd.read_parquet(p)
    if schema.ID not in table.columns:
        raise ValueError(f"{p}: no {schema.ID!r} column")
    table[schema.ID] = table[schema.ID].astype(str)
    missing = [pid for pid in patients if pid not in set(table[schema.ID])]
    if missing:
        raise ValueError(
            f"{p} has no row for patient(s) {missing[:10]} that have second-reader masks; "
            "rerun `cagerisk radiomics` on the current manifest"
        )
    return table.set_index(schema.ID).loc[list(patients)]


def check_same_features(reader1: pd.DataFrame, reader2: pd.DataFrame, source: str) -> None:
    """Every (sequence, ROI) extracted on reader 2 must have exactly reader 1's features (same settings)."""
    groups1 = feature_groups(reader1.columns)
    for group, columns in feature_groups(reader2.columns).items():
        mine, theirs = set(columns), set(groups1.get(group, []))
        if mine != theirs:
            only2 = sorted(mine - theirs)[:3]
            only1 = sorted(theirs - mine)[:3]
            raise ValueError(
                f"{source} and the second reader's extraction differ for {group[0]} {group[1]}: "
                f"{len(mine - theirs)} feature(s) only on reader 2 (e.g. {only2}), {len(theirs - mine)} only in "
                f"{source} (e.g. {only1}). The table was extracted with other settings: rerun `cagerisk radiomics`."
            )


def icc_table(reader1: pd.DataFrame, reader2: pd.DataFrame, alpha: float, min_patients: int) -> pd.DataFrame:
    """ICC of every feature column of ``reader1`` (patients as index); reader-2 columns it lacks are NaN."""
    reader2 = reader2.reindex(index=reader1.index, columns=reader1.columns)
    icc = feature_icc([reader1, reader2], alpha=alpha, min_targets=min_patients)
    table = pd.concat([feature_parts(icc.index), icc], axis=1)
    table.index.name = "feature"
    return table.reset_index()


def _failures_frame(extraction_failures: pd.DataFrame, agreement_failures: pd.DataFrame) -> pd.DataFrame:
    parts = []
    if len(extraction_failures):
        parts.append(extraction_failures.assign(step="radiomics_reader2"))
    if len(agreement_failures):
        parts.append(agreement_failures)
    if not parts:
        return pd.DataFrame(columns=list(FAILURE_COLUMNS))
    frame = pd.concat(parts, ignore_index=True).reindex(columns=list(FAILURE_COLUMNS))
    return frame.fillna("")


def run_reproducibility(
    manifest: pd.DataFrame,
    params: Mapping[str, RadiomicsParams],
    sequences: Sequence[str],
    reader1: pd.DataFrame | str | Path | None,
    cache_dir: str | Path,
    compute_cfg: Mapping[str, Any] | None,
    *,
    alpha: float,
    min_patients: int,
    threshold: float,
    splits: Sequence[str] | None,
    show_progress: bool,
    check_geometry: bool,
) -> Reproducibility:
    """Second-reader radiomics, ICC per feature and mask agreement (no files, no MLflow).

    ``reader1``: the radiomics stage's table (DataFrame with ``patient_id`` or a path to it), or None to
    extract reader 1's values here through the cache.
    """
    start = time.perf_counter()
    subset = second_reader_patients(manifest, sequences, splits)
    patients = [str(p) for p in subset[schema.ID]]
    if not patients:
        raise ValueError(
            f"no patient has a second-reader mask ({', '.join(schema.mask_column(s, 2) for s in sequences)}) "
            f"among {len(manifest)} manifest rows" + (f" of splits {list(splits)}" if splits else "")
        )
    log.info("reproducibility: %d patients with second-reader masks", len(patients))
    source = "the reader-1 values"
    if isinstance(reader1, (str, Path)):
        source = str(reader1)
        r1 = reader1_from_table(reader1, patients)  # fails before any extraction when the table is stale
    elif isinstance(reader1, pd.DataFrame):
        r1 = reader1.assign(**{schema.ID: reader1[schema.ID].astype(str)}).set_index(schema.ID).loc[patients]
    else:
        table1, failures1, _ = extract_by_reader(
            subset, params, sequences, 1, cache_dir, compute_cfg, show_progress, check_geometry
        )
        if len(failures1):
            raise ReproducibilityStageError(
                f"reader-1 extraction failed for {len(failures1)} ROI(s): " + "; ".join(failures1["error"].astype(str).head(5))
            )
        r1 = table1.set_index(schema.ID).loc[patients]

    table2, failures2, counts = extract_by_reader(
        subset, params, sequences, 2, cache_dir, compute_cfg, show_progress, check_geometry
    )
    r2 = table2.set_index(schema.ID)
    check_same_features(r1, r2, source)
    agreement, agreement_failures = mask_agreement_table(subset, sequences, show_progress=show_progress)
    failures = _failures_frame(failures2, agreement_failures)
    icc = icc_table(r1, r2, alpha=alpha, min_patients=min_patients)
    reader2 = table2.set_index(schema.ID).reindex(patients).reset_index()
    result = Reproducibility(
        icc=icc,
        summary=summarise_icc(icc, threshold),
        agreement=agreement,
        agreement_summary=summarise_agreement(agreement),
        reader2=reader2,
        failures=failures,
        patients=patients,
        n_rois=counts["n_rois"],
        n_recomputed=counts["n_recomputed"],
        n_cached=counts["n_cached"],
        seconds=time.perf_counter() - start,
    )
    overall = result.summary.iloc[-1]
    log.info(
        "reproducibility: %d features, ICC(2,1) median %.3f, %d (%.0f%%) >= %g; %d ROI failure(s); %.1f s",
        len(icc),
        overall["icc2_1_median"],
        overall["icc2_1_n_reproducible"],
        100 * overall["icc2_1_share_reproducible"],
        threshold,
        len(failures),
        result.seconds,
    )
    return result
