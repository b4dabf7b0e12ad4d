"""Model registry: log the serving model, register it as ``cage-subsidence``, choose champion or challenger.

``register_model(cfg)`` (stage ``cagerisk register``), inside one MLflow run nested in the pipeline's
parent run:

1. builds the serving bundle from the pipeline's outputs (``cagerisk.serving.bundle``) and logs it as
   one pyfunc model with its signature, an input example (a typical, not a real, patient), pinned
   requirements and the ``cagerisk`` code;
2. registers it as a new version of ``serve.model_name``;
3. loads that version back from the registry and scores the validation patients from their features;
   the scores must equal the combined stage's (no training/serving skew), and give the validation AUC;
4. checks that the current champion was validated on the same patients (``val_patients_sha256``),
   scores them with it and applies the gate (``cagerisk.tracking.gate``: DeLong's paired test, one-sided,
   superiority by default); the new version gets the alias ``champion`` when the gate promotes it,
   else ``challenger``;
5. writes the model card (``cagerisk.tracking.model_card``) as the version's description and as
   ``model_card.md`` of the run.

The decision, both AUCs, the DeLong test (two-sided z and p, and the gate's one-sided p and rule) and
the patients' count are logged as metrics, tags of the run and of the model version, and
``registration.json``.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from sklearn.metrics import roc_auc_score

from cagerisk.cohort.schema import OUTCOME
from cagerisk.tracking.gate import decide, gate_settings, same_validation_patients, validation_patients_sha256
from cagerisk.tracking.model_card import model_card
from cagerisk.tracking.runs import dvc_lock_hashes, git_commit, stage_run

log = logging.getLogger(__name__)

# Distributions the served model imports, pinned to the versions that trained it (see
# served_requirements): what `cagerisk.serving.model` and the feature path import ...
FEATURE_REQUIREMENTS = ("mlflow", "cloudpickle", "scikit-learn", "numpy", "pandas", "scipy", "joblib", "PyYAML", "SimpleITK")
# ... and what scoring images adds: the U-Net and ViT-3D (torch, MONAI, their Hydra-built networks),
# PyRadiomics and its wavelets.
IMAGE_REQUIREMENTS = ("torch", "monai", "einops", "hydra-core", "omegaconf", "pyradiomics-bhklab", "PyWavelets", "nibabel")
# Every distribution the model could need (kept for callers that pin the full set).
REQUIREMENTS = (*FEATURE_REQUIREMENTS, *IMAGE_REQUIREMENTS, "xgboost", "lightgbm")
SCORE_TOLERANCE = 1e-9


class RegistrationError(RuntimeError):
    """The model cannot be registered as it is (inconsistent outputs, training/serving skew)."""


@dataclass
class RegistrationResult:
    name: str
    version: str
    alias: str
    run_id: str
    model_uri: str
    val_auc: float | None
    n_val: int
    reason: str
    champion_version: str | None = None
    champion_val_auc: float | None = None
    delong_z: float | None = None
    delong_p: float | None = None
    training_data_sha256: str = ""
    val_patients_sha256: str = ""
    gate: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pinned_requirements(distributions: tuple[str, ...] | list[str] = REQUIREMENTS) -> list[str]:
    pins = []
    for dist in distributions:
        try:
            pins.append(f"{dist}=={metadata.version(dist).split('+')[0]}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def pickled_distributions(path: str | Path) -> list[str]:
    """Distributions whose classes or functions a pickle (joblib) file references, e.g. xgboost for a
    pipeline ending in an XGBClassifier; the project's own modules travel as code and are left out."""
    import pickletools
    import re

    # A pickle names a class by (module, name) strings; the module string appears literally at least
    # once (later uses may be memo references), so every dotted identifier whose top-level package
    # is installed counts as a module reference.
    dotted = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
    by_module = metadata.packages_distributions()
    modules: set[str] = set()
    with open(path, "rb") as fh:
        for opcode, arg, _ in pickletools.genops(fh):
            if opcode.name == "GLOBAL":
                modules.add(str(arg).split(" ", 1)[0].split(".", 1)[0])
            elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE") and dotted.match(str(arg)):
                modules.add(str(arg).split(".", 1)[0])
    found = {dist for module in modules - {"cagerisk"} if module in by_module for dist in by_module[module]}
    return sorted(found)


def served_requirements(spec, bundle: str | Path) -> list[str]:
    """The pinned requirements of a served model: what loading and scoring it import, no more.

    Checked by tests/serving/test_lean_model.py, which loads the logged model where every other
    package is unimportable.
    """
    from cagerisk.serving.model import COMBINED_FILE

    wanted = [*FEATURE_REQUIREMENTS, *pickled_distributions(Path(bundle) / COMBINED_FILE)]
    if spec.image_scoring:
        wanted += IMAGE_REQUIREMENTS
    return pinned_requirements(list(dict.fromkeys(wanted)))


def package_dir() -> Path:
    import cagerisk

    return Path(cagerisk.__file__).resolve().parent


def current_champion(client: MlflowClient, name: str, alias: str):
    """The model version holding ``alias``, or None (no such model or alias yet)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def dvc_data_hashes(cfg: DictConfig, lock: str | Path = "dvc.lock") -> dict[str, str]:
    """DVC's hashes from ``dvc.lock`` when the data registered from is the DVC-tracked one (under the
    lock file's folder); a run on other data (a test, a scratch folder) gets none rather than wrong ones."""
    lock_path = Path(lock).resolve()
    data = Path(str(cfg.paths.data)).resolve()
    if not lock_path.is_file() or not data.is_relative_to(lock_path.parent):
        return {}
    return dvc_lock_hashes(lock_path)


def _auc(y: np.ndarray, score: np.ndarray) -> float | None:
    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else None


def log_serving_model(cfg: DictConfig, tables, info: dict[str, Any]):
    """Build the bundle and log the pyfunc under the active run; returns (ModelInfo, spec)."""
    from cagerisk.serving.bundle import build_serving_bundle, typical_patient
    from cagerisk.serving.model import CageRiskModel, model_signature

    with tempfile.TemporaryDirectory(prefix="cagerisk-bundle-") as tmp:
        bundle = Path(tmp) / "bundle"
        spec = build_serving_bundle(cfg, bundle, tables, info=info)
        example = pd.DataFrame([typical_patient(spec, tables)])
        model_info = mlflow.pyfunc.log_model(
            name="model",
            python_model=CageRiskModel(),
            artifacts={"bundle": str(bundle)},
            signature=model_signature(spec),
            input_example=example,
            code_paths=[str(package_dir())],
            pip_requirements=served_requirements(spec, bundle),
            metadata={
                "threshold": spec.threshold,
                "training_data_sha256": spec.training_data_sha256,
                "image_scoring": spec.image_scoring,
            },
        )
    return model_info, spec


def register_model(cfg: DictConfig) -> RegistrationResult:
    """Stage ``register`` (see the module docstring)."""
    from cagerisk.serving.bundle import feature_rows, read_training_tables

    scfg = cfg.serve
    name = str(scfg.model_name)
    champion_alias, challenger_alias = str(scfg.champion_alias), str(scfg.challenger_alias)
    tables = read_training_tables(cfg)
    val = tables.split("val")
    if len(val) == 0:
        raise RegistrationError("no validation patient has features: the champion decision needs the validation split")
    y_val = tables.manifest.loc[val, OUTCOME].to_numpy(dtype=int)
    val_sha = validation_patients_sha256([str(p) for p in val], y_val)
    gate = gate_settings(scfg.get("gate"))
    commit = git_commit()
    with stage_run(cfg, "register") as run:
        if run is None:
            raise RegistrationError("registration needs MLflow tracking (tracking.enabled=true)")
        client = MlflowClient()
        dvc_tags = dvc_data_hashes(cfg)
        if dvc_tags:
            mlflow.set_tags(dvc_tags)
        model_info, spec = log_serving_model(
            cfg, tables, {"git_commit": commit or "", "registered_by_run": run.info.run_id, "dvc": dvc_tags}
        )
        # Score exactly what will be served (the logged model, loaded back) before it gets a version.
        frame = feature_rows(spec, tables, list(val))
        new_prob = mlflow.pyfunc.load_model(model_info.model_uri).predict(frame)["probability"].to_numpy()
        _check_against_stage(cfg, val, new_prob)
        version = mlflow.register_model(
            model_info.model_uri,
            name,
            tags={
                "training_data_sha256": spec.training_data_sha256,
                "val_patients_sha256": val_sha,
                "run_id": run.info.run_id,
                "git_commit": commit or "",
            },
        )
        log.info("registered %s version %s from run %s", name, version.version, run.info.run_id)
        result = RegistrationResult(
            name=name,
            version=str(version.version),
            alias=challenger_alias,
            run_id=run.info.run_id,
            model_uri=f"models:/{name}/{version.version}",
            val_auc=_auc(y_val, new_prob),
            n_val=int(len(val)),
            reason="",
            training_data_sha256=spec.training_data_sha256,
            val_patients_sha256=val_sha,
        )
        champion = current_champion(client, name, champion_alias)
        _decide(result, champion, tables, list(val), y_val, new_prob, name, str(scfg.on_incomparable), champion_alias, gate)
        client.set_registered_model_alias(name, result.alias, result.version)
        _log_decision(client, result)
        card = _model_card(cfg, result, tables, y_val, new_prob, spec, model_info, run, commit)
        client.update_model_version(name, result.version, description=card)
        mlflow.log_text(card, "model_card.md")
    return result


def _model_card(cfg: DictConfig, result: RegistrationResult, tables, y_val, new_prob, spec, model_info, run, commit) -> str:
    import json

    from cagerisk.evaluation.metrics import auc_ci_delong

    ci = None
    if result.val_auc is not None:
        interval = auc_ci_delong(y_val, new_prob)
        ci = (interval.low, interval.high)
    report_path = Path(str(cfg.paths.reports)) / "metrics.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    return model_card(
        name=result.name,
        version=result.version,
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        model_uri=model_info.model_uri,
        model_id=getattr(model_info, "model_id", None),
        manifest=tables.manifest.loc[tables.patients],
        cohort_source=str(cfg.cohort.get("source", "")),
        cohort_name=str(cfg.cohort.get("name", "")),
        val_auc=result.val_auc,
        val_auc_ci=ci,
        n_val=result.n_val,
        threshold=float(spec.threshold),
        threshold_rule=str(spec.info.get("threshold_rule", "Youden index on the validation split")),
        training_data_sha256=result.training_data_sha256,
        val_patients_sha256=result.val_patients_sha256,
        decision=f"alias `{result.alias}`: {result.reason}",
        report=report,
        ct_segmentation=bool(spec.ct_segmentation),
        image_scoring=bool(spec.image_scoring),
        git_commit=commit,
        combined_classifier=(spec.info.get("combined") or {}).get("best_classifier")
        if isinstance(spec.info.get("combined"), dict)
        else None,
    )


def _check_against_stage(cfg: DictConfig, patients: pd.Index, prob: np.ndarray) -> None:
    """The registered model must reproduce the combined stage's validation scores (no skew)."""
    scores_path = Path(str(cfg.paths.models)) / "combined" / "scores.parquet"
    if not scores_path.is_file():
        log.warning("%s not found: the training/serving consistency check is skipped", scores_path)
        return
    scores = pd.read_parquet(scores_path)
    scores["patient_id"] = scores["patient_id"].astype(str)
    stage = scores.set_index("patient_id").reindex([str(p) for p in patients])["combined"].to_numpy(dtype=float)
    if np.isnan(stage).any():
        raise RegistrationError(f"{scores_path}: validation patients without a combined score")
    worst = float(np.max(np.abs(stage - prob)))
    if worst > SCORE_TOLERANCE:
        raise RegistrationError(
            f"the logged model's validation probabilities differ from the combined stage's by up to {worst:.3g} "
            "(training/serving skew); nothing is registered"
        )
    log.info("registered model reproduces the combined stage's validation scores (max |diff| %.2g)", worst)


def _decide(
    result: RegistrationResult,
    champion,
    tables,
    patients: list[str],
    y: np.ndarray,
    new_prob: np.ndarray,
    name: str,
    on_incomparable: str,
    champion_alias: str,
    gate: dict[str, Any],
) -> None:
    if champion is None:
        result.alias, result.reason = champion_alias, "no champion yet"
        return
    result.champion_version = str(champion.version)
    if str(champion.version) == result.version:
        result.alias, result.reason = champion_alias, "already the champion"
        return
    comparable, why = same_validation_patients(
        {"val_patients_sha256": result.val_patients_sha256, "training_data_sha256": result.training_data_sha256},
        dict(champion.tags or {}),
    )
    result.gate = {**gate, "same_validation_patients": comparable, "comparability": why}
    if not comparable:
        result.reason = f"not compared with the champion (version {champion.version}): {why}; not promoted"
        return
    from cagerisk.serving.bundle import feature_rows

    try:
        # The champion is fed the features *it* requires, from the same tables and patients.
        old_model = mlflow.pyfunc.load_model(f"models:/{name}/{champion.version}")
        old_frame = feature_rows(old_model.unwrap_python_model().spec, tables, patients)
        old_prob = old_model.predict(old_frame)["probability"].to_numpy()
    except Exception as err:  # any failure of the old model on the new inputs means "not comparable"
        result.reason = f"the champion (version {champion.version}) cannot score the validation patients: {str(err)[:300]}"
        if on_incomparable == champion_alias:
            result.alias = champion_alias
        return
    result.champion_val_auc = _auc(y, old_prob)
    if result.val_auc is None or result.champion_val_auc is None:
        result.reason = "the validation split has one outcome only: AUCs are undefined, the champion stays"
        return
    decision = decide(y, new_prob, old_prob, gate, n=result.n_val)
    result.delong_z, result.delong_p = decision.delong_z, decision.p_two_sided
    result.gate.update(decision.as_dict())
    result.reason = decision.reason
    if decision.promote:
        result.alias = champion_alias


def _log_decision(client: MlflowClient, result: RegistrationResult) -> None:
    metrics = {
        "val_auc": result.val_auc,
        "champion_val_auc": result.champion_val_auc,
        "delong_z": result.delong_z,
        "delong_p": result.delong_p,
        "n_val": float(result.n_val),
        "gate_p_one_sided": result.gate.get("p_value"),
    }
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
    tags = {
        "registry.model": result.name,
        "registry.version": result.version,
        "registry.alias": result.alias,
        "registry.reason": result.reason[:5000],
        "registry.compared_with": result.champion_version or "",
        "registry.val_patients_sha256": result.val_patients_sha256,
        **{
            f"registry.gate.{k}": str(result.gate[k])
            for k in ("rule", "alpha", "margin", "same_validation_patients")
            if k in result.gate
        },
    }
    mlflow.set_tags(tags)
    mlflow.log_dict(result.as_dict(), "registration.json")
    gate_tags = {f"gate_{k}": result.gate[k] for k in ("rule", "alpha", "margin", "comparability") if k in result.gate}
    for key, value in {**metrics, **gate_tags, "alias": result.alias, "reason": result.reason[:5000]}.items():
        if value is not None:
            client.set_model_version_tag(result.name, result.version, key, str(value))
    log.info("%s version %s -> alias %s: %s", result.name, result.version, result.alias, result.reason)
