"""``cagerisk register``: log the serving model, register it, give it the champion or challenger alias.

The steps and what is recorded are described in :mod:`cagerisk.tracking.registry`; this module wires
the serving bundle (:mod:`cagerisk.serving.bundle`) to the registry in one MLflow run.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from cagerisk.cohort.schema import OUTCOME
from cagerisk.config import typed
from cagerisk.config.modelling import RegistryConfig
from cagerisk.serving.bundle import (
    BundleSources,
    TrainingTables,
    build_serving_bundle,
    combined_model_path,
    feature_rows,
    read_training_tables,
    typical_patient,
)
from cagerisk.serving.model import COMBINED_FILE, CageRiskModel, ModelSpec, model_signature
from cagerisk.tracking import git_commit, stage_run
from cagerisk.tracking.gate import gate_settings, validation_patients_sha256
from cagerisk.tracking.model_card import model_card
from cagerisk.tracking.registry import (
    RegistrationError,
    RegistrationResult,
    auc_or_none,
    check_against_stage,
    current_champion,
    decide_alias,
    dvc_data_hashes,
    log_decision,
    package_dir,
    read_report,
    served_requirements,
    val_auc_ci,
)

log = logging.getLogger(__name__)

REGISTRY_KEYS = ("model_name", "champion_alias", "challenger_alias", "on_incomparable", "gate")


def bundle_sources(cfg: DictConfig) -> BundleSources:
    """Where the pipeline wrote what the bundle copies (``paths``, ``radiomics``, ``segment``, ``deep`` groups)."""
    return BundleSources(
        combined_model=combined_model_path(cfg.paths.models),
        radiomics=OmegaConf.to_container(cfg.radiomics, resolve=True),
        segment_model=Path(cfg.segment.model_path) if "segment" in cfg else None,
        deep_model=Path(cfg.deep.model_path) if "deep" in cfg else None,
    )


def log_serving_model(cfg: DictConfig, tables: TrainingTables, info: dict[str, Any]):
    """Build the bundle and log the pyfunc under the active run; returns (ModelInfo, spec)."""
    with tempfile.TemporaryDirectory(prefix="cagerisk-bundle-") as tmp:
        bundle = Path(tmp) / "bundle"
        spec = build_serving_bundle(bundle, tables, bundle_sources(cfg), info=info)
        model_info = mlflow.pyfunc.log_model(
            name="model",
            python_model=CageRiskModel(),
            artifacts={"bundle": str(bundle)},
            signature=model_signature(spec),
            input_example=pd.DataFrame([typical_patient(spec, tables)]),
            code_paths=[str(package_dir())],
            pip_requirements=served_requirements(spec.image_scoring, bundle / COMBINED_FILE),
            metadata={
                "threshold": spec.threshold,
                "training_data_sha256": spec.training_data_sha256,
                "image_scoring": spec.image_scoring,
            },
        )
    return model_info, spec


def write_model_card(
    cfg: DictConfig,
    client: MlflowClient,
    result: RegistrationResult,
    logged: tuple[Any, ModelSpec],
    tables: TrainingTables,
    validation: tuple[np.ndarray, np.ndarray],
    commit: str | None,
) -> None:
    """The model card as the version's description and as ``model_card.md`` of the run.

    ``logged``: the logged model's ModelInfo and spec; ``validation``: the outcomes and new probabilities.
    """
    (model_info, spec), run = logged, mlflow.active_run()
    combined = spec.info.get("combined")
    card = model_card(
        name=result.name,
        version=result.version,
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        model_uri=model_info.model_uri,
        model_id=getattr(model_info, "model_id", None),
        manifest=tables.manifest.loc[tables.patients],
        cohort_source=cfg.cohort.source,
        cohort_name=cfg.cohort.name,
        val_auc=result.val_auc,
        val_auc_ci=val_auc_ci(result, *validation),
        n_val=result.n_val,
        threshold=spec.threshold,
        threshold_rule=str(spec.info.get("threshold_rule", "Youden index on the validation split")),
        training_data_sha256=result.training_data_sha256,
        val_patients_sha256=result.val_patients_sha256,
        decision=f"alias `{result.alias}`: {result.reason}",
        report=read_report(Path(cfg.paths.reports) / "metrics.json"),
        ct_segmentation=spec.ct_segmentation,
        image_scoring=spec.image_scoring,
        git_commit=commit,
        combined_classifier=combined.get("best_classifier") if isinstance(combined, dict) else None,
    )
    client.update_model_version(result.name, result.version, description=card)
    mlflow.log_text(card, "model_card.md")


def run_register_stage(cfg: DictConfig) -> RegistrationResult:
    """Stage ``register`` (see :mod:`cagerisk.tracking.registry`)."""
    registry = typed({k: cfg.serve[k] for k in REGISTRY_KEYS}, RegistryConfig, "serve")
    gate_settings(registry.gate)  # a bad gate fails before anything is logged
    tables = read_training_tables(cfg.paths.cohort, cfg.paths.features)
    val = [str(p) for p in tables.split("val")]
    if not val:
        raise RegistrationError("no validation patient has features: the champion decision needs the validation split")
    y_val = tables.manifest.loc[val, OUTCOME].to_numpy(dtype=int)
    commit = git_commit()
    with stage_run(cfg, "register") as run:
        if run is None:
            raise RegistrationError("registration needs MLflow tracking (tracking.enabled=true)")
        client = MlflowClient()
        dvc_tags = dvc_data_hashes(cfg.paths.data)
        if dvc_tags:
            mlflow.set_tags(dvc_tags)
        info = {"git_commit": commit or "", "registered_by_run": run.info.run_id, "dvc": dvc_tags}
        model_info, spec = log_serving_model(cfg, tables, info)
        # Score exactly what will be served (the logged model, loaded back) before it gets a version.
        new_prob = (
            mlflow.pyfunc.load_model(model_info.model_uri).predict(feature_rows(spec, tables, val))["probability"].to_numpy()
        )
        check_against_stage(Path(cfg.paths.models) / "combined" / "scores.parquet", val, new_prob)
        result = RegistrationResult(
            name=registry.model_name,
            version="",
            alias=registry.challenger_alias,
            run_id=run.info.run_id,
            model_uri="",
            val_auc=auc_or_none(y_val, new_prob),
            n_val=len(val),
            reason="",
            training_data_sha256=spec.training_data_sha256,
            val_patients_sha256=validation_patients_sha256(val, y_val),
        )
        version = mlflow.register_model(
            model_info.model_uri,
            registry.model_name,
            tags={
                "training_data_sha256": spec.training_data_sha256,
                "val_patients_sha256": result.val_patients_sha256,
                "run_id": run.info.run_id,
                "git_commit": commit or "",
            },
        )
        log.info("registered %s version %s from run %s", registry.model_name, version.version, run.info.run_id)
        result.version, result.model_uri = str(version.version), f"models:/{registry.model_name}/{version.version}"

        def score_champion(champion_version: str):
            # The champion is fed the features *it* requires, from the same tables and patients.
            old_model = mlflow.pyfunc.load_model(f"models:/{registry.model_name}/{champion_version}")
            return old_model.predict(feature_rows(old_model.unwrap_python_model().spec, tables, val))["probability"].to_numpy()

        champion = current_champion(client, registry.model_name, registry.champion_alias)
        decide_alias(result, champion, score_champion, y_val, new_prob, registry)
        client.set_registered_model_alias(registry.model_name, result.alias, result.version)
        log_decision(client, result)
        write_model_card(cfg, client, result, (model_info, spec), tables, (y_val, new_prob), commit)
    return result
