"""Reading the stage inputs: the manifest (outcome, split, clinical values) and the feature tables."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cagerisk.cohort.schema import ID, OUTCOME, SPLITS

log = logging.getLogger(__name__)


class InputError(ValueError):
    """A stage input cannot be used as it is; the message names the file, patient or column."""


def read_manifest(path: str | Path) -> pd.DataFrame:
    """The cohort manifest with ``patient_id`` as text, ``cs`` as 0/1 and ``split`` checked."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: manifest not found (run `cagerisk cohort` first)")
    try:
        from cagerisk.cohort.manifest import load_manifest
    except ImportError:  # the cohort package is optional for tables made elsewhere
        frame = pd.read_csv(path, dtype={ID: str})
    else:
        frame = load_manifest(path)
    for column in (ID, OUTCOME, "split"):
        if column not in frame.columns:
            raise InputError(f"{path}: column {column!r} missing")
    frame = frame.copy()
    frame[ID] = frame[ID].astype(str)
    duplicated = frame.loc[frame[ID].duplicated(), ID].tolist()
    if duplicated:
        raise InputError(f"{path}: patient(s) listed twice: {duplicated[:10]}")
    outcome = pd.to_numeric(frame[OUTCOME], errors="coerce")
    bad = frame.loc[~outcome.isin([0, 1]), ID].tolist()
    if bad:
        raise InputError(
            f"{path}: {OUTCOME} must be 0 or 1; patient(s) {bad[:10]} have "
            f"{frame.loc[~outcome.isin([0, 1]), OUTCOME].tolist()[:10]}"
        )
    frame[OUTCOME] = outcome.astype(int)
    bad_split = frame.loc[~frame["split"].isin(SPLITS), ID].tolist()
    if bad_split:
        raise InputError(f"{path}: split must be one of {SPLITS}; patient(s) {bad_split[:10]} are not")
    return frame.set_index(ID, drop=False)


def read_feature_table(path: str | Path, name: str = "feature table") -> pd.DataFrame:
    """A Parquet/CSV feature table keyed by ``patient_id`` -> numeric DataFrame indexed by patient."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {name} not found")
    if path.suffix.lower() in {".parquet", ".pq"}:
        frame = pd.read_parquet(path)
    elif path.suffix.lower() in {".csv", ".txt"}:
        frame = pd.read_csv(path)
    else:
        raise InputError(f"{path}: {name} must be .parquet or .csv")
    if ID in frame.columns:
        frame = frame.set_index(ID)
    elif frame.index.name != ID:
        raise InputError(f"{path}: {name} has no {ID!r} column")
    frame.index = frame.index.astype(str)
    frame.index.name = ID
    duplicated = frame.index[frame.index.duplicated()].tolist()
    if duplicated:
        raise InputError(f"{path}: patient(s) with more than one row: {duplicated[:10]}")
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise InputError(f"{path}: non-numeric feature column(s) {non_numeric[:10]}")
    if frame.shape[1] == 0:
        raise InputError(f"{path}: {name} has no feature column")
    return frame.astype(np.float64)


def common_patients(manifest: pd.DataFrame, tables: Mapping[str, pd.DataFrame]) -> pd.Index:
    """Manifest patients present in every table, in manifest order; the others are named in a warning.

    An upstream stage may skip a patient whose images failed (and say so); such a patient cannot get
    every signature and is left out here rather than stopping the stage.
    """
    keep = pd.Index(manifest.index)
    for name, table in tables.items():
        missing = keep.difference(table.index)
        if len(missing):
            log.warning("%d patient(s) missing from the %s table are left out: %s", len(missing), name, list(missing[:20]))
        keep = keep[keep.isin(table.index)]
        extra = table.index.difference(manifest.index)
        if len(extra):
            log.warning(
                "%d patient(s) of the %s table are not in the manifest and are ignored: %s", len(extra), name, list(extra[:20])
            )
    if keep.empty:
        raise InputError("no patient is in both the manifest and every feature table")
    for split in ("train", "val"):
        part = manifest.loc[keep]
        labels = part.loc[part["split"] == split, OUTCOME]
        if labels.nunique() < 2:
            raise InputError(f"the {split} split has {len(labels)} patient(s) with features and not both outcomes")
    return keep
