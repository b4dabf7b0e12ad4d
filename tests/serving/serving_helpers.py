"""Helpers of the serving tests: pipeline outputs of a small feature-level cohort, with a real fitted model.

``write_feature_pipeline`` writes what the stages leave for registration - the manifest, both feature
tables, ``models/combined/model.joblib`` (a real ``CombinedModel`` of fitted scikit-learn pipelines,
built from the project's own selection transformers and clinical encoder) and the combined stage's
``scores.parquet`` - without images, so the model scores precomputed features only. The end-to-end
test on images trains the real stages instead (test_serving_end_to_end.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from omegaconf import DictConfig
from packaging.requirements import Requirement
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from cagerisk.features import FTestSelector, LassoSelector, MedianIQRScaler, ZScorePCA

ROOT = Path(__file__).resolve().parents[2]


def write_feature_pipeline(data: Path, n: int = 90, seed: int = 0, signal: float = 1.5, shuffle_labels: bool = False) -> Path:
    """Manifest, feature tables, a fitted combined model and its scores under ``data`` (paths.data)."""
    from cagerisk.models.clinical import clinical_preprocessor
    from cagerisk.models.served import RISK_HIGH, RISK_LOW, SIGNATURE_COLUMNS, CombinedModel

    rng = np.random.default_rng(seed)
    latent = rng.normal(size=n)
    ids = [f"FX{i:03d}" for i in range(n)]
    cs = (latent + rng.normal(0, 0.7, n) > 0.3).astype(int)
    split = np.array(["train"] * n, dtype=object)
    for label in (0, 1):
        idx = np.random.default_rng(seed + 1).permutation(np.flatnonzero(cs == label))
        k1, k2 = int(round(0.6 * len(idx))), int(round(0.8 * len(idx)))
        split[idx[k1:k2]], split[idx[k2:]] = "val", "test"
    manifest = pd.DataFrame(
        {
            "patient_id": ids,
            "center": rng.choice(["A", "B"], n),
            "sex": rng.choice(["F", "M"], n),
            "age": np.clip(rng.normal(62, 9, n) + 4 * latent, 30, 90).round(1),
            "bmi": np.clip(rng.normal(26, 3, n), 17, 40).round(1),
            "diagnosis": rng.choice(["stenosis", "spondylolisthesis", "herniation"], n),
            "n_levels": 1,
            "osteoporosis": (latent + rng.normal(0, 0.8, n) > 0.5).astype(int),
            "followup_months": rng.uniform(12, 36, n).round(1),
            "fused_levels": "L4-L5",
            "cs": cs,
            "split": split,
        }
    )

    def table(prefix: str, columns: list[str], n_signal: int) -> pd.DataFrame:
        values = rng.normal(size=(n, len(columns)))
        values[:, :n_signal] += signal * latent[:, None]
        frame = pd.DataFrame(values, columns=columns, index=pd.Index(ids, name="patient_id"))
        return frame

    rad_columns = [
        f"{seq}_{roi}_original_firstorder_F{j}" for seq, roi in (("t2", "disc"), ("ct", "vertebra")) for j in range(60)
    ]
    radiomics = table("rad", rad_columns, 3)
    radiomics.iloc[4, 70] = np.nan  # a feature PyRadiomics could not compute: imputed
    deep = table("deep", [f"{seq}_{roi}_dl_{k}" for seq, roi in (("t2", "disc"), ("ct", "vertebra")) for k in range(8)], 4)

    y = cs.copy()
    if shuffle_labels:  # a model that learnt nothing: worse than the first on the same patients
        y = np.random.default_rng(seed + 7).permutation(y)
    train = split == "train"
    rad_pipeline = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("scale", MedianIQRScaler(clip=10.0)),
            ("ftest", FTestSelector(alpha=0.05, min_features=1)),
            ("lasso", LassoSelector(cv=3, n_alphas=20, min_features=1)),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(radiomics[train], y[train])
    dl_pipeline = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("reduce", ZScorePCA(n_components=4)),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(deep[train], y[train])
    signatures = pd.DataFrame(
        {"rad_sign": rad_pipeline.predict_proba(radiomics)[:, 1], "dl_sign": dl_pipeline.predict_proba(deep)[:, 1]},
        index=radiomics.index,
    )
    clinical_vars = ["osteoporosis", "age"]
    cohort = manifest.set_index("patient_id", drop=False)
    X_comb = pd.concat([signatures, cohort[clinical_vars]], axis=1)
    combined_pipeline = Pipeline(
        [("prepare", clinical_preprocessor(cohort, clinical_vars, signatures=SIGNATURE_COLUMNS)), ("clf", LogisticRegression())]
    ).fit(X_comb[train], y[train])
    prob = combined_pipeline.predict_proba(X_comb)[:, 1]
    val = split == "val"
    from cagerisk.evaluation import youden_threshold

    model = CombinedModel(
        rad_pipeline,
        dl_pipeline,
        combined_pipeline,
        clinical_vars,
        youden_threshold(cs[val], prob[val]),
        info={"cohort": "feature-fixture", "threshold_rule": "Youden index on the validation split"},
    )

    (data / "cohort").mkdir(parents=True, exist_ok=True)
    (data / "features").mkdir(parents=True, exist_ok=True)
    (data / "models" / "combined").mkdir(parents=True, exist_ok=True)
    manifest.to_csv(data / "cohort" / "manifest.csv", index=False)
    radiomics.reset_index().to_parquet(data / "features" / "radiomics.parquet", index=False)
    deep.reset_index().to_parquet(data / "features" / "deep.parquet", index=False)
    joblib.dump(model, data / "models" / "combined" / "model.joblib")
    scores = manifest[["patient_id", "split", "cs"]].copy()
    scores["combined"] = prob
    scores["risk_class"] = np.where(prob >= model.threshold, RISK_HIGH, RISK_LOW)
    scores.to_parquet(data / "models" / "combined" / "scores.parquet", index=False)
    return data


def serving_overrides(tmp: Path) -> list[str]:
    """Config of a registration under ``tmp``: data, MLflow store, and a fast radiomics parameter file."""
    return [
        f"paths.data={tmp}/data",
        f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        f"tracking.artifact_root={tmp}/artifacts",
        "radiomics=fast",
    ]


def compose_serving_config(tmp: Path, *overrides: str) -> DictConfig:
    """The config `cagerisk register` composes, with outputs and MLflow under ``tmp``."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[*serving_overrides(tmp), *overrides])


def run_schemathesis(url: str, workdir: Path, key: str | None, *options: str, max_examples: int = 25, seed: int = 20261201):
    """``schemathesis run`` (the CLI a user runs) over ``url``'s /docs.json with every check, bounded
    examples and a fixed seed; returns the finished process (exit code 0 = no failure)."""
    cmd = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{url}/docs.json",
        "--checks",
        "all",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "60",
        "--no-color",
        *options,
    ]
    if key:
        cmd += ["--header", f"X-API-Key: {key}"]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=900)


# ---- a model loaded with only its own requirements importable (test_lean_model.py) ----

PRELUDE = r"""
import importlib.abc, importlib.machinery, json, os, sys, sysconfig
allowed = set(json.loads(sys.argv[1]))
stdlib = tuple(os.path.realpath(sysconfig.get_paths()[k]) + os.sep for k in ("stdlib", "platstdlib"))
site = tuple(os.path.realpath(p) for p in sys.path if "site-packages" in p)


def in_stdlib(name):
    spec = importlib.machinery.PathFinder.find_spec(name)
    origin = os.path.realpath(spec.origin) if spec is not None and spec.origin else ""
    return origin.startswith(stdlib) and not origin.startswith(site)

code_dir = sys.argv[2]
refused = []

class RequirementsOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        top = fullname.split(".", 1)[0]
        if top == "cagerisk":
            if "." in fullname:
                return None  # submodules: found through the package's own __path__ (under code_dir)
            return importlib.machinery.PathFinder.find_spec(fullname, [code_dir])
        if top in allowed or top in sys.stdlib_module_names or top in sys.builtin_module_names or in_stdlib(top):
            return None  # let the normal finders import it
        refused.append(top)
        raise ModuleNotFoundError(f"No module named {top!r} (not in the model's requirements)", name=top)

sys.meta_path.insert(0, RequirementsOnly())
import mlflow.pyfunc, pandas as pd
model_dir = sys.argv[3]
if len(sys.argv) > 4:  # rows to score instead of the model's input example
    frame = pd.DataFrame(json.load(open(sys.argv[4])))
else:
    example = json.load(open(model_dir + "/input_example.json"))
    frame = pd.DataFrame(example["data"], columns=example["columns"])
out = mlflow.pyfunc.load_model(model_dir).predict(frame)
import cagerisk
loaded = sorted({m.split(".", 1)[0] for m in sys.modules if not m.startswith("_")} - set(sys.stdlib_module_names))
print(json.dumps({"probability": float(out["probability"].iloc[0]), "cagerisk": cagerisk.__file__,
                  "refused": sorted(set(refused)), "loaded": loaded}))
"""


def requirement_closure(lines: list[str]) -> set[str]:
    """Distributions ``pip install -r`` of ``lines`` installs: them and their dependencies (no extras)."""
    seen: set[str] = set()
    todo = [Requirement(line).name for line in lines if line.strip() and not line.startswith("#")]
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def importable_modules(distributions: set[str]) -> set[str]:
    by_module = metadata.packages_distributions()
    norm = {d.lower().replace("_", "-") for d in distributions}
    return {module for module, dists in by_module.items() if any(d.lower().replace("_", "-") in norm for d in dists)}


def run_blocked(model_dir: Path, allowed: set[str], rows: Path | None = None) -> subprocess.CompletedProcess:
    """Load and score the model in a fresh interpreter where only ``allowed`` top-level packages (and the
    standard library, and cagerisk from the model's code/) can be imported; prints a JSON line."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(model_dir), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            PRELUDE,
            json.dumps(sorted(allowed)),
            str(model_dir / "code"),
            str(model_dir),
            *([str(rows)] if rows else []),
        ],
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
        cwd=str(model_dir),
    )
