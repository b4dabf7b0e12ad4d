"""The cohort stage: a synthetic multi-center cohort or a validated real manifest, split, Table 1."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from sklearn.metrics import roc_auc_score

from cagerisk.cohort import latent
from cagerisk.cohort.manifest import ManifestError, read_manifest_table, relative_paths, validate_manifest
from cagerisk.cohort.schema import ID, LABELS, OUTCOME, SEQUENCES, SPLITS, image_column, mask_column
from cagerisk.cohort.split import assign_splits
from cagerisk.cohort.synthetic import ImageJob, draw_cohort, patient_id, render_cohort
from cagerisk.cohort.table1 import build_table1, table1_markdown
from cagerisk.tracking import stage_run

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"


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


def synthetic_clinical_table(cfg: DictConfig) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """Manifest rows without image paths, the truth table, and the raw draws."""
    cohort = cfg.cohort
    draws = draw_cohort(int(cohort.n_patients), int(cohort.seed))
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
    counts = dict(cohort.split_counts) if cohort.get("split_counts") else None
    frame.insert(
        frame.columns.get_loc(OUTCOME) + 1,
        "split",
        assign_splits(frame, OUTCOME, dict(cohort.split), int(cohort.seed), counts, bool(cohort.stratify_by_center)),
    )
    return frame, pd.DataFrame(truth), draws


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


def generate_synthetic(cfg: DictConfig, out: Path) -> pd.DataFrame:
    frame, truth, draws = synthetic_clinical_table(cfg)
    readers2 = second_reader_subset(len(draws), float(cfg.cohort.get("second_reader_fraction", 0.0)), int(cfg.cohort.seed))
    images = out / "images"
    if images.exists():  # a previous cohort's patients must not linger beside this one's
        shutil.rmtree(images)
    jobs = [
        ImageJob(draw, center, str(out), float(cfg.cohort.voxel_scale), int(cfg.cohort.seed), draw.index in readers2)
        for draw, center in draws
    ]
    paths: list[dict[str, str]] = []
    with progress_bar() as progress:
        task = progress.add_task("synthetic patients", total=len(jobs), rate="")
        for row in render_cohort(jobs, cfg.cohort.get("n_jobs")):
            paths.append(row)
            progress.advance(task)
    path_frame = pd.DataFrame(paths)
    columns = [image_column(s) for s in SEQUENCES] + [mask_column(s) for s in SEQUENCES]
    columns += [mask_column(s, 2) for s in SEQUENCES]
    frame = pd.concat([frame, path_frame.reindex(columns=columns)], axis=1)
    truth = truth.merge(frame[[ID, "split"]], on=ID)[[ID, "split", *[c for c in truth.columns if c != ID]]]
    truth.to_csv(out / "truth.csv", index=False, float_format="%.6f")
    oracle = oracle_summary(frame, truth)
    (out / "oracle.json").write_text(json.dumps(oracle, indent=2, sort_keys=True) + "\n")
    return frame


def ingest_manifest(cfg: DictConfig, out: Path) -> pd.DataFrame:
    source = Path(str(cfg.cohort.manifest))
    raw = read_manifest_table(source)
    result = validate_manifest(raw, source.parent, images=bool(cfg.cohort.get("check_images", True)))
    issues = result.issues_frame()
    issues.to_csv(out / "validation_issues.csv", index=False)
    if result.issues:
        log.warning("%s", result.summary())
    else:
        log.info("%s", result.summary())
    frame = result.manifest
    if frame.empty:
        raise ManifestError(f"{source}: no valid patient left; see {out / 'validation_issues.csv'}")
    given = frame["split"] if "split" in frame.columns else pd.Series(dtype=object)
    if given.notna().all() and len(given) and set(given.astype(str).str.strip()) <= set(SPLITS):
        log.info("using the manifest's split column")
        frame["split"] = given.astype(str).str.strip()
    else:
        cohort = cfg.cohort
        counts = dict(cohort.split_counts) if cohort.get("split_counts") else None
        frame["split"] = assign_splits(
            frame, OUTCOME, dict(cohort.split), int(cohort.seed), counts, bool(cohort.stratify_by_center)
        )
    return frame


def run_cohort_stage(cfg: DictConfig) -> Path:
    """Write manifest, label map, Table 1 (and for synthetic cohorts truth and oracle) under paths.cohort."""
    out = Path(str(cfg.paths.cohort))
    out.mkdir(parents=True, exist_ok=True)
    with stage_run(cfg, "cohort", run_name=f"cohort-{cfg.cohort.name}") as run:
        if cfg.cohort.source == "synthetic":
            frame = generate_synthetic(cfg, out)
        elif cfg.cohort.source == "manifest":
            frame = ingest_manifest(cfg, out)
        else:
            raise ValueError(f"cohort.source={cfg.cohort.source!r}: expected 'synthetic' or 'manifest'")
        relative_paths(frame, out).to_csv(out / MANIFEST, index=False)
        (out / "labels.json").write_text(json.dumps(LABELS, indent=2) + "\n")
        table = build_table1(frame)
        table.to_csv(out / "table1.csv", index=False)
        (out / "table1.md").write_text(table1_markdown(table), encoding="utf-8")
        if run is not None:
            log_cohort_run(out, frame)
    log.info("cohort of %d patients written to %s", len(frame), out.resolve())
    if run is not None:
        log.info("MLflow run %s at %s", run.info.run_id, mlflow.get_tracking_uri())
    return out


def log_cohort_run(out: Path, frame: pd.DataFrame) -> None:
    metrics: dict[str, float] = {"n_patients": float(len(frame)), "prevalence": float(frame[OUTCOME].mean())}
    for s in SPLITS:
        part = frame[frame["split"] == s]
        metrics[f"n_{s}"] = float(len(part))
        if len(part):
            metrics[f"prevalence_{s}"] = float(part[OUTCOME].mean())
    oracle_path = out / "oracle.json"
    if oracle_path.exists():
        oracle = json.loads(oracle_path.read_text())
        for name, value in oracle["oracle_auc"].items():
            if value is not None:
                metrics[f"oracle_auc_{name.replace('+', '_')}"] = float(value)
    issues = out / "validation_issues.csv"
    if issues.exists():
        metrics["n_rejected"] = float(pd.read_csv(issues)[ID].nunique()) if issues.stat().st_size > 30 else 0.0
    mlflow.log_metrics(metrics)
    for name in ("manifest.csv", "labels.json", "table1.csv", "table1.md", "oracle.json", "validation_issues.csv"):
        if (out / name).exists():
            mlflow.log_artifact(str(out / name), artifact_path="cohort")
