"""Model registry: the pieces of ``cagerisk register`` that talk to the MLflow registry.

The command (:mod:`cagerisk.stages.register`), inside one MLflow run nested in the pipeline's parent run:

1. builds the serving bundle from the pipeline's outputs (``cagerisk.serving.bundle``) and logs it as
   one pyfunc model with its signature, an input example (a typical, not a real, patient), pinned
   requirements (:func:`served_requirements`) and the ``cagerisk`` code;
2. loads the logged model back and scores the validation patients from their features; the scores
   must equal the combined stage's (:func:`check_against_stage`: no training/serving skew);
3. registers it as a new version of ``serve.model_name``;
4. checks that the current champion was validated on the same patients (``val_patients_sha256``),
   scores them with it and applies the gate (``cagerisk.tracking.gate``: DeLong's paired test, one-sided,
   superiority by default); the new version gets the alias ``champion`` when the gate promotes it,
   else ``challenger`` (:func:`decide_alias`);
5. writes the model card (``cagerisk.tracking.model_card``) as the version's description and as
   ``model_card.md`` of the run.

The decision, both AUCs, the DeLong test (two-sided z and p, and the gate's one-sided p and rule) and
the patients' count are logged as metrics, tags of the run and of the model version, and
``registration.json`` (:func:`log_decision`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from cagerisk.cohort.schema import ID
from cagerisk.config.modelling import RegistryConfig
from cagerisk.evaluation.metrics import auc_ci_delong
from cagerisk.tracking.gate import decide, gate_settings, same_validation_patients
from cagerisk.tracking.runs import dvc_lock_hashes

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


def served_requirements(image_scoring: bool, combined_pickle: str | Path) -> list[str]:
    """The pinned requirements of a served model: what loading and scoring it import, no more.

    ``combined_pickle``: the bundle's pickled combined model (its classifiers' distributions are
    added); ``image_scoring``: whether the model scores images (U-Net, ViT-3D, PyRadiomics). Checked by
    tests/serving/test_lean_model.py, which loads the logged model where every other package is unimportable.
    """
    wanted = [*FEATURE_REQUIREMENTS, *pickled_distributions(combined_pickle)]
    if image_scoring:
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


def dvc_data_hashes(data_dir: str | Path, lock: str | Path = "dvc.lock") -> dict[str, str]:
    """DVC's hashes from ``dvc.lock`` when the data registered from (``data_dir``, i.e. ``paths.data``) is
    the DVC-tracked one (under the lock file's folder); a run on other data (a test, a scratch folder)
    gets none rather than wrong ones."""
    lock_path = Path(lock).resolve()
    data = Path(data_dir).resolve()
    if not lock_path.is_file() or not data.is_relative_to(lock_path.parent):
        return {}
    return dvc_lock_hashes(lock_path)


def auc_or_none(y: np.ndarray, score: np.ndarray) -> float | None:
    """The AUC, or None when ``y`` has one outcome only."""
    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else None


def check_against_stage(scores_path: Path, patients: Sequence[str], prob: np.ndarray) -> None:
    """The registered model must reproduce the combined stage's scores of ``patients`` (no skew)."""
    if not scores_path.is_file():
        log.warning("%s not found: the training/serving consistency check is skipped", scores_path)
        return
    scores = pd.read_parquet(scores_path)
    scores[ID] = scores[ID].astype(str)
    stage = scores.set_index(ID).reindex([str(p) for p in patients])["combined"].to_numpy(dtype=float)
    if np.isnan(stage).any():
        raise RegistrationError(f"{scores_path}: validation patients without a combined score")
    worst = float(np.max(np.abs(stage - prob)))
    if worst > SCORE_TOLERANCE:
        raise RegistrationError(
            f"the logged model's validation probabilities differ from the combined stage's by up to {worst:.3g} "
            "(training/serving skew); nothing is registered"
        )
    log.info("registered model reproduces the combined stage's validation scores (max |diff| %.2g)", worst)


def decide_alias(
    result: RegistrationResult,
    champion: Any,
    score_champion: Callable[[str], np.ndarray],
    y: np.ndarray,
    new_prob: np.ndarray,
    registry: RegistryConfig,
) -> None:
    """Set ``result.alias`` and ``result.reason`` (and the gate's record) against the current ``champion``.

    ``score_champion(version)`` returns the champion's probabilities of the same validation patients,
    fed the features it requires; any failure there means "not comparable" (``serve.on_incomparable``).
    """
    champion_alias = registry.champion_alias
    if champion is None:
        result.alias, result.reason = champion_alias, "no champion yet"
        return
    result.champion_version = str(champion.version)
    if str(champion.version) == result.version:
        result.alias, result.reason = champion_alias, "already the champion"
        return
    gate = gate_settings(registry.gate)
    comparable, why = same_validation_patients(
        {"val_patients_sha256": result.val_patients_sha256, "training_data_sha256": result.training_data_sha256},
        dict(champion.tags or {}),
    )
    result.gate = {**gate, "same_validation_patients": comparable, "comparability": why}
    if not comparable:
        result.reason = f"not compared with the champion (version {champion.version}): {why}; not promoted"
        return
    try:
        old_prob = score_champion(str(champion.version))
    except Exception as err:  # any failure of the old model on the new inputs means "not comparable"
        result.reason = f"the champion (version {champion.version}) cannot score the validation patients: {str(err)[:300]}"
        if registry.on_incomparable == champion_alias:
            result.alias = champion_alias
        return
    result.champion_val_auc = auc_or_none(y, old_prob)
    if result.val_auc is None or result.champion_val_auc is None:
        result.reason = "the validation split has one outcome only: AUCs are undefined, the champion stays"
        return
    decision = decide(y, new_prob, old_prob, registry.gate, n=result.n_val)
    result.delong_z, result.delong_p = decision.delong_z, decision.p_two_sided
    result.gate.update(decision.as_dict())
    result.reason = decision.reason
    if decision.promote:
        result.alias = champion_alias


def log_decision(client: MlflowClient, result: RegistrationResult) -> None:
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


def val_auc_ci(result: RegistrationResult, y: np.ndarray, prob: np.ndarray) -> tuple[float, float] | None:
    """DeLong's interval of the new version's validation AUC (None when the AUC is undefined)."""
    if result.val_auc is None:
        return None
    interval = auc_ci_delong(y, prob)
    return interval.low, interval.high


def read_report(path: Path) -> dict[str, Any] | None:
    """The evaluate stage's ``metrics.json`` for the model card, when it exists."""
    return json.loads(path.read_text()) if path.is_file() else None
