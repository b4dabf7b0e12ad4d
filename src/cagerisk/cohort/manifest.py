"""Reading and validating cohort manifests (docs/manifest.md documents the format).

Validation looks at every row and reports every problem at once, each naming the patient and the
field, so a data manager can fix a real cohort in one pass; rows without problems are kept.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from cagerisk.atomic import replaced_atomically
from cagerisk.cohort.schema import (
    CLINICAL,
    ID,
    OUTCOME,
    READER_PREFIX,
    REQUIRED_COLUMNS,
    ROIS,
    SEQUENCES,
    SPLITS,
    allowed_label_values,
    image_column,
    is_blank,
    mask_column,
    parse_levels,
    roi_label_values,
)
from cagerisk.cohort.totalsegmentator import AdapterError, adapt_mask, unmapped_rois
from cagerisk.imaging.io import ImageReadError, read_image, same_geometry

log = logging.getLogger(__name__)


class ManifestError(ValueError):
    """The manifest as a whole cannot be used (unreadable, required columns missing, no good row)."""


@dataclass(frozen=True)
class ManifestIssue:
    patient_id: str
    field: str
    problem: str

    def __str__(self) -> str:
        return f"patient {self.patient_id}: {self.field}: {self.problem}"


def path_columns(frame: pd.DataFrame) -> list[str]:
    """Image and mask columns present in a manifest, in sequence order."""
    cols = []
    for seq in SEQUENCES:
        for col in (image_column(seq), mask_column(seq), mask_column(seq, 2), f"{seq}_mask_pred"):
            if col in frame.columns:
                cols.append(col)
    return cols


def read_manifest_table(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise ManifestError(f"{p}: manifest not found")
    try:
        frame = pd.read_csv(p, dtype={ID: str, "center": str, "split": str}, keep_default_na=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ManifestError(f"{p}: not a readable CSV manifest ({err})") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def resolve_paths(frame: pd.DataFrame, base_dir: str | Path) -> pd.DataFrame:
    """Make image and mask paths absolute, relative ones taken from the manifest's folder."""
    base = Path(base_dir).resolve()
    out = frame.copy()
    for col in path_columns(out):
        out[col] = [None if is_blank(v) else str(Path(v) if Path(str(v)).is_absolute() else base / str(v)) for v in out[col]]
    return out


def load_manifest(path: str | Path) -> pd.DataFrame:
    """A manifest written by the cohort stage (or any valid one), with absolute image paths."""
    p = Path(path)
    frame = read_manifest_table(p)
    missing = [c for c in (ID, OUTCOME) if c not in frame.columns]
    if missing:
        raise ManifestError(f"{p}: missing column(s) {missing}")
    return resolve_paths(frame, p.parent)


# ---- clinical checks -----------------------------------------------------------------------------
SEX_SYNONYMS = {"f": "F", "female": "F", "w": "F", "m": "M", "male": "M"}


def check_clinical(row: pd.Series, pid: str) -> tuple[dict[str, object], list[ManifestIssue]]:
    """Normalised clinical values of one row, and every problem found."""
    issues: list[ManifestIssue] = []
    clean: dict[str, object] = {}
    for var in CLINICAL:
        if var.name == "n_levels":
            continue  # derived from fused_levels below
        value = row.get(var.name)
        if is_blank(value):
            issues.append(ManifestIssue(pid, var.name, "missing value"))
            continue
        if var.name == "sex":
            sex = SEX_SYNONYMS.get(str(value).strip().lower())
            if sex is None:
                issues.append(ManifestIssue(pid, "sex", f"{value!r} is not F/M"))
            clean["sex"] = sex
        elif var.kind == "categorical":
            text = str(value).strip().lower()
            if text not in var.categories:
                issues.append(ManifestIssue(pid, var.name, f"{value!r} is not one of {list(var.categories)}"))
            clean[var.name] = text
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                issues.append(ManifestIssue(pid, var.name, f"{value!r} is not a number"))
                continue
            if not np.isfinite(number) or not (var.low <= number <= var.high):
                issues.append(ManifestIssue(pid, var.name, f"{value!r} outside the possible range [{var.low}, {var.high}]"))
            if var.kind == "binary" and number not in (0.0, 1.0):
                issues.append(ManifestIssue(pid, var.name, f"{value!r} is not 0/1"))
            clean[var.name] = int(number) if var.kind == "binary" and number in (0.0, 1.0) else number
    try:
        levels = parse_levels(str(row.get("fused_levels", "")))
        clean["fused_levels"] = ";".join(levels)
        clean["n_levels"] = len(levels)
        given = row.get("n_levels")
        if not is_blank(given) and float(given) != len(levels):
            issues.append(ManifestIssue(pid, "n_levels", f"{given!r} but fused_levels lists {len(levels)} level(s)"))
    except ValueError as err:
        issues.append(ManifestIssue(pid, "fused_levels", str(err)))
    outcome = row.get(OUTCOME)
    if is_blank(outcome) or str(outcome).strip() not in {"0", "1", "0.0", "1.0"}:
        issues.append(ManifestIssue(pid, OUTCOME, f"{outcome!r} is not 0/1"))
    else:
        clean[OUTCOME] = int(float(outcome))
    if "split" in row.index and not is_blank(row.get("split")) and str(row["split"]).strip() not in SPLITS:
        issues.append(ManifestIssue(pid, "split", f"{row['split']!r} is not one of {list(SPLITS)}"))
    for col in row.index:
        if not str(col).startswith(READER_PREFIX) or is_blank(row[col]):
            continue
        try:
            value = float(row[col])
        except (TypeError, ValueError):
            issues.append(ManifestIssue(pid, str(col), f"{row[col]!r} is not a number"))
            continue
        is_prob = str(col).endswith("_prob")
        if (is_prob and not 0.0 <= value <= 1.0) or (not is_prob and value not in (0.0, 1.0)):
            expected = "a probability in [0, 1]" if is_prob else "0/1"
            issues.append(ManifestIssue(pid, str(col), f"{row[col]!r} is not {expected}"))
    return clean, issues


# ---- image checks --------------------------------------------------------------------------------
def check_mask(
    image: sitk.Image,
    mask_path: str,
    field: str,
    sequence: str,
    fused_levels: str | None,
    pid: str,
    skip_rois: Iterable[str] = (),
) -> list[ManifestIssue]:
    """Geometry, label values and non-empty ROIs of one mask against its image (``skip_rois``: ROIs the
    mask's source cannot hold, reported by the adapter instead)."""
    try:
        mask = read_image(mask_path)
    except ImageReadError as err:
        return [ManifestIssue(pid, field, str(err))]
    ok, why = same_geometry(image, mask)
    if not ok:
        return [ManifestIssue(pid, field, f"geometry does not match the image: {why}")]
    values = np.unique(sitk.GetArrayViewFromImage(mask))
    issues = []
    if not np.allclose(values, np.round(values)):
        return [ManifestIssue(pid, field, "mask holds non-integer values; expected a label map")]
    unknown = sorted(set(int(v) for v in values) - allowed_label_values(sequence))
    if unknown:
        issues.append(ManifestIssue(pid, field, f"unknown label value(s) {unknown} for {sequence}; see labels.json"))
    if fused_levels is not None:
        present = set(int(v) for v in values)
        for roi in ROIS[sequence]:
            if roi in skip_rois:
                continue
            if not present.intersection(roi_label_values(fused_levels, roi)):
                wanted = roi_label_values(fused_levels, roi)
                issues.append(ManifestIssue(pid, field, f"empty ROI {roi!r}: none of labels {wanted} present"))
    return issues


def check_images(
    row: pd.Series,
    pid: str,
    fused_levels: str | None,
    tasks: Mapping[str, str | None] | None = None,
    skip_fields: Iterable[str] = (),
) -> list[ManifestIssue]:
    """Every image and mask of one row (``tasks``: the TotalSegmentator task a sequence's masks were
    adapted from; ``skip_fields``: mask columns whose problem is already reported)."""
    issues: list[ManifestIssue] = []
    tasks = tasks or {}
    for seq in SEQUENCES:
        img_col = image_column(seq)
        if is_blank(row.get(img_col)):
            issues.append(ManifestIssue(pid, img_col, "missing path"))
            continue
        try:
            image = read_image(row[img_col])
        except ImageReadError as err:
            issues.append(ManifestIssue(pid, img_col, str(err)))
            continue
        if image.GetDimension() != 3:
            issues.append(ManifestIssue(pid, img_col, f"{image.GetDimension()}-D image; expected 3-D"))
            continue
        for reader in (1, 2):
            col = mask_column(seq, reader)
            if col in skip_fields:
                continue
            if col not in row.index or is_blank(row.get(col)):
                if reader == 1:
                    issues.append(ManifestIssue(pid, col, "missing path"))
                continue
            skip = unmapped_rois(tasks[seq], seq) if tasks.get(seq) else ()
            issues.extend(check_mask(image, row[col], col, seq, fused_levels, pid, skip))
    return issues


@dataclass
class ValidationResult:
    manifest: pd.DataFrame  # the good rows, normalised, with absolute paths
    issues: list[ManifestIssue]
    n_rows: int

    @property
    def bad_patients(self) -> list[str]:
        return sorted({i.patient_id for i in self.issues})

    def issues_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(i) for i in self.issues], columns=["patient_id", "field", "problem"])

    def summary(self) -> str:
        if not self.issues:
            return f"all {self.n_rows} manifest rows valid"
        lines = [
            f"{len(self.bad_patients)} of {self.n_rows} patients rejected ({len(self.issues)} problems); "
            f"{len(self.manifest)} kept:"
        ]
        lines += [f"  - {issue}" for issue in self.issues]
        return "\n".join(lines)


def validate_manifest(
    frame: pd.DataFrame,
    base_dir: str | Path,
    images: bool = True,
    n_threads: int = 4,
    tasks: Mapping[str, str | None] | None = None,
    prior_issues: Iterable[ManifestIssue] = (),
) -> ValidationResult:
    """Check every row; keep the good ones. Raises ManifestError only for manifest-wide problems.

    ``tasks`` and ``prior_issues`` come from :func:`adapt_manifest_masks` (masks adapted from
    TotalSegmentator, and the adaptations that failed: their patients are rejected with those issues).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns and c != "n_levels"]
    missing += [image_column(s) for s in SEQUENCES if image_column(s) not in frame.columns]
    missing += [mask_column(s) for s in SEQUENCES if mask_column(s) not in frame.columns]
    if missing:
        raise ManifestError(f"manifest lacks required column(s): {', '.join(missing)} (see docs/manifest.md)")
    frame = resolve_paths(frame.reset_index(drop=True), base_dir)
    ids = frame[ID].astype(str).str.strip()
    issues: list[ManifestIssue] = list(prior_issues)
    reported = {(i.patient_id, i.field) for i in issues}
    seen: set[str] = set()
    cleaned: list[dict[str, object]] = []
    for i, row in frame.iterrows():
        pid = ids[i] if not is_blank(row[ID]) else f"<row {i + 2}>"
        row_issues: list[ManifestIssue] = []
        if is_blank(row[ID]):
            row_issues.append(ManifestIssue(pid, ID, "missing patient id"))
        elif pid in seen:
            row_issues.append(ManifestIssue(pid, ID, "duplicate patient id"))
        seen.add(pid)
        if is_blank(row.get("center")):
            row_issues.append(ManifestIssue(pid, "center", "missing value"))
        clean, clinical_issues = check_clinical(row, pid)
        row_issues.extend(clinical_issues)
        issues.extend(row_issues)
        cleaned.append({**row.to_dict(), **clean, ID: pid})

    if images:

        def image_issues(i: int) -> list[ManifestIssue]:
            rec = cleaned[i]
            levels = rec.get("fused_levels") if isinstance(rec.get("fused_levels"), str) else None
            try:
                levels = ";".join(parse_levels(levels)) if levels else None
            except ValueError:
                levels = None
            pid = str(rec[ID])
            skip = {field for who, field in reported if who == pid}
            return check_images(pd.Series(rec), pid, levels, tasks, skip)

        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            for found in pool.map(image_issues, range(len(cleaned))):
                issues.extend(found)

    bad = {issue.patient_id for issue in issues}
    good = pd.DataFrame([rec for rec in cleaned if rec[ID] not in bad], columns=list(cleaned[0]) if cleaned else None)
    if not good.empty:
        good["n_levels"] = good["n_levels"].astype(int)
        good[OUTCOME] = good[OUTCOME].astype(int)
    return ValidationResult(manifest=good, issues=issues, n_rows=len(frame))


def adapt_manifest_masks(
    frame: pd.DataFrame, tasks: Mapping[str, str | None], out_dir: str | Path, n_threads: int = 4
) -> tuple[pd.DataFrame, list[ManifestIssue], pd.DataFrame]:
    """TotalSegmentator masks (``{seq}_mask`` and ``{seq}_mask_r2`` of every sequence with a task) mapped
    onto cagerisk's label map and written under ``out_dir``; the manifest then points at them.

    ``frame`` has absolute paths (:func:`resolve_paths`). Returns the new frame, one issue per mask that
    could not be adapted (naming patient, column and file), and one row per adapted mask: its source,
    the structures found, those missing, the ROIs the task cannot give, and notes (e.g. the sacrum
    standing in for S1). Nothing missing is filled in.
    """
    out = frame.copy()
    jobs = [
        (i, seq, col, task)
        for seq, task in tasks.items()
        if task
        for col in (mask_column(seq), mask_column(seq, 2))
        if col in out.columns
        for i in range(len(out))
        if not is_blank(out.at[i, col])
    ]

    def adapt(job: tuple[int, str, str, str]) -> tuple[int, str, str | None, ManifestIssue | None, dict | None]:
        i, seq, col, task = job
        pid = str(out.at[i, ID]).strip()
        source = str(out.at[i, col])
        try:
            reference = read_image(out.at[i, image_column(seq)]) if not is_blank(out.at[i, image_column(seq)]) else None
        except ImageReadError:
            reference = None  # validation reports the image itself
        try:
            adapted = adapt_mask(source, task, seq, pid, reference)
        except AdapterError as err:
            return i, col, None, ManifestIssue(pid, col, f"TotalSegmentator {task!r}: {err}"), None
        target = Path(out_dir) / f"{i:05d}_{re.sub(r'[^A-Za-z0-9._-]', '_', pid)}" / f"{col}.nrrd"
        with replaced_atomically(target) as tmp:
            sitk.WriteImage(adapted.image, str(tmp), True)
        record = {
            ID: pid,
            "sequence": seq,
            "column": col,
            "task": task,
            "source": source,
            "mask": str(target),
            "found": ";".join(adapted.found),
            "missing": ";".join(adapted.missing),
            "rois_not_in_task": ";".join(unmapped_rois(task, seq)),
            "notes": "; ".join(adapted.notes),
        }
        return i, col, str(target), None, record

    issues: list[ManifestIssue] = []
    records: list[dict] = []
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for i, col, target, issue, record in pool.map(adapt, jobs):
            if issue is not None:
                issues.append(issue)
            else:
                out.at[i, col] = target
                records.append(record)
    columns = [ID, "sequence", "column", "task", "source", "mask", "found", "missing", "rois_not_in_task", "notes"]
    return out, issues, pd.DataFrame(records, columns=columns)


def relative_paths(frame: pd.DataFrame, base_dir: str | Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Paths under ``base_dir`` written relative to it (so the cohort folder can move); ``columns``
    default to the image and mask columns."""
    base = Path(base_dir).resolve()
    out = frame.copy()
    for col in path_columns(out) if columns is None else columns:
        values = []
        for v in out[col]:
            if is_blank(v):
                values.append(None)
                continue
            p = Path(str(v))
            p = (p if p.is_absolute() else base / p).resolve()
            values.append(str(p.relative_to(base)) if p.is_relative_to(base) else str(p))
        out[col] = values
    return out


def iter_patient_images(frame: pd.DataFrame, sequences: Iterable[str] = SEQUENCES) -> Iterable[tuple[str, str, str, str]]:
    """(patient_id, sequence, image path, mask path) for every patient and sequence."""
    for _, row in frame.iterrows():
        for seq in sequences:
            yield str(row[ID]), seq, str(row[image_column(seq)]), str(row[mask_column(seq)])
