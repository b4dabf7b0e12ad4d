"""The logged model loads and scores with only its own requirements importable.

A fresh interpreter gets a meta-path blocker before anything else runs: a top-level package may be
imported only if it belongs to a distribution of the model's ``requirements.txt`` or to one of
their dependencies (what ``pip install -r requirements.txt`` would give), or to the standard
library; ``cagerisk`` only from the model's own ``code/`` folder. Then MLflow loads the model from its
directory and scores its input example. A control run with scikit-learn removed from the allowed set
must fail, so the blocker is known to bite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from packaging.requirements import Requirement
from serving_helpers import compose_serving_config, write_feature_pipeline

pytestmark = pytest.mark.slow

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


@pytest.fixture(scope="module")
def logged_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], float]:
    from cagerisk.tracking.registry import register_model

    tmp = tmp_path_factory.mktemp("lean")
    write_feature_pipeline(tmp / "data")
    cfg = compose_serving_config(tmp)
    result = register_model(cfg)
    mlflow.set_tracking_uri(str(cfg.tracking.uri))
    model_dir = Path(mlflow.artifacts.download_artifacts(result.model_uri, dst_path=str(tmp / "model")))
    requirements = (model_dir / "requirements.txt").read_text().splitlines()
    example = json.loads((model_dir / "input_example.json").read_text())
    expected = mlflow.pyfunc.load_model(str(model_dir)).predict(pd.DataFrame(example["data"], columns=example["columns"]))
    return model_dir, requirements, float(expected["probability"].iloc[0])


def run_blocked(model_dir: Path, allowed: set[str]) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(model_dir), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    return subprocess.run(
        [sys.executable, "-c", PRELUDE, json.dumps(sorted(allowed)), str(model_dir / "code"), str(model_dir)],
        env=env, capture_output=True, text=True, timeout=600, cwd=str(model_dir),
    )


def test_requirements_name_what_the_model_imports(logged_model):
    model_dir, requirements, _ = logged_model
    names = {Requirement(line).name for line in requirements if line.strip()}
    # A features-only model of scikit-learn pipelines: no training, tracking or imaging stack.
    assert {"mlflow", "scikit-learn", "numpy", "pandas"} <= names
    assert not names & {"optuna", "torch", "monai", "lightning", "hydra-core", "xgboost", "lightgbm", "dask"}


def test_logged_model_scores_with_only_its_requirements(logged_model):
    model_dir, requirements, expected = logged_model
    allowed = importable_modules(requirement_closure(requirements))
    assert "optuna" not in allowed and "lightning" not in allowed and "dask" not in allowed
    done = run_blocked(model_dir, allowed)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["probability"] == pytest.approx(expected, abs=1e-12)
    assert Path(result["cagerisk"]).resolve().is_relative_to((model_dir / "code").resolve())
    # Everything imported went through the blocker; the training stack stayed out.
    assert not set(result["loaded"]) & {"optuna", "lightning", "dask", "distributed", "torch", "radiomics"}


def test_the_blocker_bites(logged_model):
    """Control: without scikit-learn allowed, the same load fails (the test above can fail)."""
    model_dir, requirements, _ = logged_model
    allowed = importable_modules(requirement_closure([r for r in requirements if not r.startswith("scikit-learn")]))
    allowed -= importable_modules({"scikit-learn"})
    done = run_blocked(model_dir, allowed)
    assert done.returncode != 0 and "sklearn" in done.stderr, done.stderr[-2000:]
