"""A cohort as tables: the synthetic multi-center generator or a validated real manifest, split.

``synthetic_cohort`` renders the synthetic patients' images under the output folder (they are the
cohort's raw data, which every later stage reads through the manifest) and returns the tables;
``manifest_cohort`` validates a real manifest. Neither writes the tables nor touches MLflow: that is
``cagerisk.stages.cohort``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from sklearn.metrics import roc_auc_score

from cagerisk.cohort import latent
from cagerisk.cohort.manifest import adapt_manifest_masks, read_manifest_table, resolve_paths, validate_manifest
from cagerisk.cohort.schema import ID, OUTCOME, SEQUENCES, SPLITS, image_column, mask_column
from cagerisk.cohort.split import assign_splits
from cagerisk.cohort.synthetic import ImageJob, draw_cohort, patient_id, render_cohort
from cagerisk.cohort.totalsegmentator import label_tasks
from cagerisk.config.pipeline import CohortSplitConfig, ManifestCohortConfig, SyntheticCohortConfig

__all__ = ["Cohort", "manifest_cohort", "oracle_summary", "second_reader_subset", "synthetic_cohort"]

log = logging.getLogger(__name__)


@dataclass
class Cohort:
    """One cohort: the manifest rows (absolute paths) and what its source adds."""

    frame: pd.DataFrame
    truth: pd.DataFrame | None = None  # synthetic: each patient's true risk and latent variables
    oracle: dict[str, Any] | None = None  # synthetic: AUC of the true risk per split
    issues: pd.DataFrame | None = None  # manifest: one row per validation problem
    mask_sources: pd.DataFrame | None = None  # manifest: one row per mask adapted from TotalSegmentator

    def metrics(self) -> dict[str, float]:
        """Sizes and prevalences per split, oracle AUCs, rejected patients."""
        frame = self.frame
        metrics: dict[str, float] = {"n_patients": float(len(frame)), "prevalence": float(frame[OUTCOME].mean())}
        for s in SPLITS:
            part = frame[frame["split"] == s]
            metrics[f"n_{s}"] = float(len(part))
            if len(part):
                metrics[f"prevalence_{s}"] = float(part[OUTCOME].mean())
        if self.oracle is not None:
            for name, value in self.oracle["oracle_auc"].items():
                if value is not None:
                    metrics[f"oracle_auc_{name.replace('+', '_')}"] = float(value)
        if self.issues is not None:
            # A problem of the whole file has no patient id (an empty cell), as when read back from the CSV.
            metrics["n_rejected"] = float(self.issues[ID].replace("", np.nan).nunique()) if len(self.issues) else 0.0
        return metrics


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )


def synthetic_clinical_table(cohort: SyntheticCohortConfig) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """Manifest rows without image paths, the truth table, and the raw draws."""
    draws = draw_cohort(cohort.n_patients, cohort.seed)
    rows, truth = [], []
    for draw, center in draws:
        pid = patient_id(draw.index)
        rows.append(
            {
                ID: pid,
                "center": center,
                "sex": draw.sex,
                "age": draw.age,
                "bmi": draw.bmi,
                "diagnosis": draw.diagnosis,
                "fused_levels": ";".join(draw.fused_levels),
                "n_levels": draw.n_levels,
                "osteoporosis": draw.osteoporosis,
                "followup_months": draw.followup_months,
                OUTCOME: draw.cs,
                "reader_1": int(draw.reader_probs[0] >= 0.5),
                "reader_2": int(draw.reader_probs[1] >= 0.5),
                "reader_1_prob": round(draw.reader_probs[0], 4),
                "reader_2_prob": round(draw.reader_probs[1], 4),
            }
        )
        truth.append({ID: pid, "true_risk": draw.risk, "true_logit": draw.logit, **draw.latent_dict()})
    frame = pd.DataFrame(rows)
    frame.insert(frame.columns.get_loc(OUTCOME) + 1, "split", _assign_splits(frame, cohort))
    return frame, pd.DataFrame(truth), draws


def _assign_splits(frame: pd.DataFrame, cohort: CohortSplitConfig) -> pd.Series:
    counts = dict(cohort.split_counts) if cohort.split_counts else None
    return assign_splits(frame, OUTCOME, dict(cohort.split), cohort.seed, counts, cohort.stratify_by_center)


def second_reader_subset(n: int, fraction: float, seed: int) -> set[int]:
    """The patients (indices) a second reader re-segments: a random subset, like the study's 50."""
    k = int(round(n * float(fraction)))
    rng = np.random.default_rng([seed, 4242])
    return set(int(i) for i in rng.choice(n, size=min(k, n), replace=False))


def oracle_summary(frame: pd.DataFrame, truth: pd.DataFrame) -> dict:
    merged = frame[[ID, "split", OUTCOME]].merge(truth[[ID, "true_risk"]], on=ID)
    out: dict[str, dict] = {"oracle_auc": {}, "prevalence": {}, "n": {}}
    for name, part in [*((s, merged[merged["split"] == s]) for s in SPLITS), ("all", merged)]:
        out["n"][name] = int(len(part))
        out["prevalence"][name] = float(part[OUTCOME].mean()) if len(part) else float("nan")
        both = part[OUTCOME].nunique() == 2
        out["oracle_auc"][name] = float(roc_auc_score(part[OUTCOME], part["true_risk"])) if both else None
    held = merged[merged["split"].isin(["val", "test"])]
    out["oracle_auc"]["val+test"] = (
        float(roc_auc_score(held[OUTCOME], held["true_risk"])) if held[OUTCOME].nunique() == 2 else None
    )
    out["risk_model"] = {"intercept": latent.RISK_INTERCEPT, "weights": latent.RISK_WEIGHTS}
    return out


def synthetic_cohort(cohort: SyntheticCohortConfig, out: Path) -> Cohort:
    """Draw and render the synthetic patients (images under ``out/images``, replacing an earlier cohort's)."""
    frame, truth, draws = synthetic_clinical_table(cohort)
    readers2 = second_reader_subset(len(draws), cohort.second_reader_fraction, cohort.seed)
    images = out / "images"
    if images.exists():  # a previous cohort's patients must not linger beside this one's
        shutil.rmtree(images)
    jobs = [ImageJob(draw, center, str(out), cohort.voxel_scale, cohort.seed, draw.index in readers2) for draw, center in draws]
    paths: list[dict[str, str]] = []
    with progress_bar() as progress:
        task = progress.add_task("synthetic patients", total=len(jobs), rate="")
        for row in render_cohort(jobs, cohort.n_jobs):
            paths.append(row)
            progress.advance(task)
    path_frame = pd.DataFrame(paths)
    columns = [image_column(s) for s in SEQUENCES] + [mask_column(s) for s in SEQUENCES]
    columns += [mask_column(s, 2) for s in SEQUENCES]
    frame = pd.concat([frame, path_frame.reindex(columns=columns)], axis=1)
    truth = truth.merge(frame[[ID, "split"]], on=ID)[[ID, "split", *[c for c in truth.columns if c != ID]]]
    return Cohort(frame=frame, truth=truth, oracle=oracle_summary(frame, truth))


def manifest_cohort(cohort: ManifestCohortConfig, out: Path) -> Cohort:
    """A real cohort: the validated manifest (patients with problems left out and listed in ``issues``),
    its own split column when complete, else a stratified split. An empty ``frame`` means no patient
    passed; the caller reports it after writing the issues.

    Sequences whose masks come from TotalSegmentator (``cohort.labels``) get them mapped onto cagerisk's
    label map under ``out/masks`` first (the manifest then points there); ``mask_sources`` says, per
    patient and mask, what was found and what is missing.
    """
    source = Path(cohort.manifest)
    raw = read_manifest_table(source)
    tasks = label_tasks(cohort.labels)
    prior, mask_sources = [], None
    if any(tasks.values()):
        raw = resolve_paths(raw.reset_index(drop=True), source.parent)
        raw, prior, mask_sources = adapt_manifest_masks(raw, tasks, out / "masks")
        lacking = mask_sources[(mask_sources["missing"] != "") | (mask_sources["rois_not_in_task"] != "")]
        log.warning(
            "TotalSegmentator masks: %d adapted, %d failed; %d lack structures their sequence holds "
            "(nothing filled in; see mask_sources.csv)",
            len(mask_sources),
            len(prior),
            len(lacking),
        )
    result = validate_manifest(raw, source.parent, images=cohort.check_images, tasks=tasks, prior_issues=prior)
    issues = result.issues_frame()
    if result.issues:
        log.warning("%s", result.summary())
    else:
        log.info("%s", result.summary())
    frame = result.manifest
    if frame.empty:
        return Cohort(frame=frame, issues=issues, mask_sources=mask_sources)
    given = frame["split"] if "split" in frame.columns else pd.Series(dtype=object)
    if given.notna().all() and len(given) and set(given.astype(str).str.strip()) <= set(SPLITS):
        log.info("using the manifest's split column")
        frame["split"] = given.astype(str).str.strip()
    else:
        frame["split"] = _assign_splits(frame, cohort)
    return Cohort(frame=frame, issues=issues, mask_sources=mask_sources)
