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
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from packaging.requirements import Requirement
from serving_helpers import (
    compose_serving_config,
    importable_modules,
    requirement_closure,
    run_blocked,
    write_feature_pipeline,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def logged_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], float]:
    from cagerisk.stages.register import run_register_stage

    tmp = tmp_path_factory.mktemp("lean")
    write_feature_pipeline(tmp / "data")
    cfg = compose_serving_config(tmp)
    result = run_register_stage(cfg)
    mlflow.set_tracking_uri(str(cfg.tracking.uri))
    model_dir = Path(mlflow.artifacts.download_artifacts(result.model_uri, dst_path=str(tmp / "model")))
    requirements = (model_dir / "requirements.txt").read_text().splitlines()
    example = json.loads((model_dir / "input_example.json").read_text())
    expected = mlflow.pyfunc.load_model(str(model_dir)).predict(pd.DataFrame(example["data"], columns=example["columns"]))
    return model_dir, requirements, float(expected["probability"].iloc[0])


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
