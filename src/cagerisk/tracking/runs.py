"""MLflow conventions: where the store is, how stage runs are named, nested and tagged."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import mlflow
from omegaconf import DictConfig, OmegaConf

from cagerisk.config import typed
from cagerisk.config.modelling import TrackingConfig
from cagerisk.hashing import file_sha256

log = logging.getLogger(__name__)

PARENT_RUN_ENV = "CAGERISK_PARENT_RUN_ID"
# MLflow 3's UI opens an experiment by its kind: without this tag it may infer "GenAI" and show traces.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# MLflow stores a dataset's schema in a column of at most 1 MiB (1,048,575 characters).
MAX_DATASET_SCHEMA_CHARS = 1_000_000


def flatten_config(cfg: DictConfig | Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"a.b.c": "value"}`` with resolved interpolations, lists kept as text."""
    if isinstance(cfg, DictConfig):
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    else:
        container = dict(cfg)
    flat: dict[str, str] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        else:
            flat[key] = str(node)

    walk(container, prefix)
    return flat


def configure_tracking(tracking_cfg: TrackingConfig | DictConfig | Mapping[str, Any]) -> str:
    """Point MLflow at the configured store and make sure the experiment exists; returns its id.

    A SQLite URI gets its folder created; the experiment's artifacts go under ``artifact_root`` so
    that everything of a local store lives under ``mlruns/``. An ``http(s)://`` URI is a tracking
    server (``tracking=server``), whose own artifact root applies. The experiment is tagged as a
    model-training experiment, so MLflow 3's UI opens it on its runs rather than on GenAI traces.
    """
    if is_dataclass(tracking_cfg):
        tracking_cfg = asdict(tracking_cfg)
    uri = str(tracking_cfg["uri"])
    if uri.startswith(("http://", "https://")):
        # A tracking server: its --artifacts-destination decides where artifacts go, not this client.
        mlflow.set_tracking_uri(uri)
        return _ensure_experiment(str(tracking_cfg["experiment"]), None)
    if uri.startswith("sqlite:///"):
        db_path = Path(uri.removeprefix("sqlite:///"))
        db_path.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    location = None
    artifact_root = tracking_cfg.get("artifact_root")
    if artifact_root and "://" in str(artifact_root):
        location = str(artifact_root)  # an object store (s3://, gs://, ...) beside a database backend
    elif artifact_root:
        root = Path(str(artifact_root)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        location = root.as_uri()
    return _ensure_experiment(str(tracking_cfg["experiment"]), location)


def _ensure_experiment(name: str, location: str | None) -> str:
    """The experiment's id, created if needed, and tagged as a model-training experiment (new or old store)."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        try:
            experiment_id = mlflow.create_experiment(
                name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
            return experiment_id
        except mlflow.exceptions.MlflowException:
            # Another process created it first (concurrent sweeps): use theirs.
            experiment = mlflow.get_experiment_by_name(name)
            if experiment is None:
                raise
    kind = (experiment.tags or {}).get(EXPERIMENT_KIND_TAG)
    # A store made before this tag existed (or whose kind the UI only inferred) gets it; a kind a
    # person chose explicitly in the UI is left alone.
    if kind is None or kind.endswith("_inferred") or kind == "no_inferred_type":
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def git_commit(cwd: str | Path = ".") -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            check=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def dvc_lock_hashes(lock_path: str | Path = "dvc.lock", stage: str | None = None) -> dict[str, str]:
    """Content hashes DVC recorded for a stage's dependencies and outputs, as MLflow tags."""
    path = Path(lock_path)
    if not path.exists():
        return {}
    lock = OmegaConf.to_container(OmegaConf.load(path))
    stages = lock.get("stages", {}) if isinstance(lock, dict) else {}
    tags: dict[str, str] = {}
    for name, entry in stages.items():
        if stage is not None and name != stage:
            continue
        for kind in ("deps", "outs"):
            for item in entry.get(kind, []) or []:
                digest = item.get("md5") or item.get("hash") or item.get("etag")
                if digest:
                    tags[f"dvc.{name}.{kind}.{item['path']}"] = str(digest)
    return tags


@contextlib.contextmanager
def stage_run(
    cfg: DictConfig, stage: str, run_name: str | None = None, extra_tags: Mapping[str, str] | None = None
) -> Iterator[mlflow.ActiveRun | None]:
    """One MLflow run for one stage run: flattened config as params, the git commit as a tag.

    Nested under ``tracking.parent_run_id`` (or the ``CAGERISK_PARENT_RUN_ID`` environment variable)
    when a pipeline run set one. ``tracking.enabled=false`` yields ``None`` and logs nothing.
    """
    tracking = typed(cfg.tracking, TrackingConfig, "tracking")
    if not tracking.enabled:
        yield None
        return
    experiment_id = configure_tracking(tracking)
    parent = tracking.parent_run_id or os.environ.get(PARENT_RUN_ENV) or None
    tags = {"cagerisk.stage": stage, **(extra_tags or {})}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
        tags["git_commit"] = commit
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name or stage,
        nested=parent is not None,
        parent_run_id=parent,
        tags=tags,
    ) as run:
        mlflow.log_params(flatten_config(cfg))
        log_stage_datasets(cfg, stage)
        log.info("MLflow run %s (%s) in %s", run.info.run_id, stage, mlflow.get_tracking_uri())
        yield run


# What each stage reads, as (paths key or config key, file under it, dataset name, context). The
# Dataset column of the MLflow UI then shows what every run trained or was evaluated on.
_MANIFEST = ("paths.cohort", "manifest.csv", "manifest", None)
_RADIOMICS = ("paths.features", "radiomics.parquet", "radiomics", None)
_DEEP = ("paths.features", "deep.parquet", "deep", None)
STAGE_DATASETS: dict[str, tuple[tuple[str, str, str, str | None], ...]] = {
    "segment": (_MANIFEST,),
    "radiomics": (_MANIFEST,),
    "deep": (_MANIFEST,),
    "reproducibility": (_MANIFEST, _RADIOMICS),
    "signatures": (_MANIFEST, _RADIOMICS, _DEEP),
    "combined": (_MANIFEST, _RADIOMICS, _DEEP),
    "evaluate": (_MANIFEST,),
    "register": (_MANIFEST, _RADIOMICS, _DEEP),
    "fit-table": (("table", "", "table", None),),
}
STAGE_CONTEXT = {
    "signatures": "training",
    "combined": "training",
    "fit-table": "training",
    "evaluate": "evaluation",
    "register": "validation",
}


def log_table_dataset(path: str | Path, name: str, context: str, targets: str | None = None) -> bool:
    """Log a CSV/Parquet table as an ``mlflow.data`` dataset input of the active run.

    The digest is the file's sha256 (first 16 hex digits; the full one is a tag), so the same bytes
    show as the same dataset in every run and any change shows as a new one. Returns False (and says
    why) when the table cannot be read: tracking must not stop a stage.
    """
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, low_memory=False)
        sha = file_sha256(path)
        tags = {"sha256": sha, "path": str(path), "rows": str(frame.shape[0]), "columns": str(frame.shape[1])}
        with warnings.catch_warnings():
            # A local path matches two equivalent "local" source types, and integer columns draw a
            # schema hint meant for model signatures: neither says anything about the data.
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                frame,
                source=str(path.resolve()),
                name=name,
                digest=sha[:16],
                targets=targets if targets in frame.columns else None,
            )
            if len(json.dumps(dataset.to_dict().get("schema") or "")) > MAX_DATASET_SCHEMA_CHARS:
                # A wide feature table (thousands of radiomics columns) has a column schema longer than
                # the store accepts (1 MiB): log the same source and digest, the shape as tags.
                from mlflow.data.meta_dataset import MetaDataset

                dataset = MetaDataset(source=dataset.source, name=name, digest=sha[:16])
                tags["schema"] = f"not logged: {frame.shape[1]} columns exceed MLflow's schema size limit"
        _log_input_retrying(dataset, context, tags)
        return True
    except Exception as error:  # noqa: BLE001 - a dataset that cannot be logged must not lose the stage's work
        log.warning("could not log %s (%s) as an MLflow dataset: %s", path, name, error)
        return False


def _log_input_retrying(dataset, context: str, tags: dict[str, str], attempts: int = 4) -> None:
    """``mlflow.log_input``, again when another process inserted the same dataset at the same moment.

    MLflow's SQL store looks a dataset up by (experiment, name, digest) and inserts it when absent; two
    sweep workers starting together both insert, and the second fails on the unique key (seen with
    PostgreSQL behind `mlflow server`). The retry finds the row the other process wrote.
    """
    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=context, tags=tags)
            return
        except mlflow.exceptions.MlflowException as error:
            text = str(error)
            duplicate = any(s in text for s in ("UniqueViolation", "UNIQUE constraint", "Duplicate entry", "already exists"))
            if not duplicate or attempt == attempts - 1:
                raise
            log.info("dataset %s was inserted by another process at the same moment; logging it again", dataset.name)
            time.sleep(0.2 * (attempt + 1))


def log_stage_datasets(cfg: DictConfig, stage: str) -> list[str]:
    """Log the tables ``stage`` reads (``STAGE_DATASETS``) that exist; returns their names."""
    from cagerisk.cohort.schema import OUTCOME, is_blank

    logged = []
    for key, filename, name, context in STAGE_DATASETS.get(stage, ()):
        base = OmegaConf.select(cfg, key) if isinstance(cfg, DictConfig) else None
        if is_blank(base) or base == "???":
            continue
        path = Path(str(base)) / filename if filename else Path(str(base))
        if not path.is_file():
            continue
        if log_table_dataset(
            path, name, context or STAGE_CONTEXT.get(stage, "input"), targets=OUTCOME if name == "manifest" else None
        ):
            logged.append(name)
    return logged
