"""MLflow conventions: where the store is, how stage runs are named, nested and tagged."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

PARENT_RUN_ENV = "CAGERISK_PARENT_RUN_ID"


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


def configure_tracking(tracking_cfg: DictConfig | Mapping[str, Any]) -> str:
    """Point MLflow at the configured store and make sure the experiment exists; returns its id.

    A SQLite URI gets its folder created; the experiment's artifacts go under ``artifact_root`` so
    that everything of a local store lives under ``mlruns/``.
    """
    uri = str(tracking_cfg["uri"])
    if uri.startswith("sqlite:///"):
        db_path = Path(uri.removeprefix("sqlite:///"))
        db_path.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    name = str(tracking_cfg["experiment"])
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        artifact_root = tracking_cfg.get("artifact_root")
        location = None
        if artifact_root and "://" not in uri.replace("sqlite://", ""):
            root = Path(str(artifact_root)).resolve()
            root.mkdir(parents=True, exist_ok=True)
            location = root.as_uri()
        try:
            return mlflow.create_experiment(name, artifact_location=location)
        except mlflow.exceptions.MlflowException:
            # Another process created it first (concurrent sweeps): use theirs.
            experiment = mlflow.get_experiment_by_name(name)
            if experiment is None:
                raise
    return experiment.experiment_id


def git_commit(cwd: str | Path = ".") -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, encoding="utf-8", errors="replace", check=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True, encoding="utf-8", errors="replace",
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
    if not cfg.tracking.get("enabled", True):
        yield None
        return
    experiment_id = configure_tracking(cfg.tracking)
    parent = cfg.tracking.get("parent_run_id") or os.environ.get(PARENT_RUN_ENV) or None
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
        log.info("MLflow run %s (%s) in %s", run.info.run_id, stage, mlflow.get_tracking_uri())
        yield run
