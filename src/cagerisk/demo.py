"""`make demo`: the whole pipeline on the embedded synthetic cohort, under one parent MLflow run.

Runs ``dvc repro`` (every stage of dvc.yaml) with the stages nested under a parent run, tags the
parent with the git commit and the DVC hashes of what was produced, and prints where everything is.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import mlflow
from hydra import compose, initialize_config_dir

from cagerisk.logging_setup import configure_logging
from cagerisk.tracking import configure_tracking, dvc_lock_hashes, git_commit
from cagerisk.tracking.runs import PARENT_RUN_ENV

log = logging.getLogger("cagerisk.demo")
ROOT = Path(__file__).resolve().parents[2]


def run_pipeline(extra_env: dict[str, str] | None = None) -> str:
    """`dvc repro` under a parent MLflow run; returns the parent run id."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config")
    experiment_id = configure_tracking(cfg.tracking)
    commit = git_commit(ROOT)
    tags = {"cagerisk.stage": "pipeline", **({"git_commit": commit} if commit else {})}
    with mlflow.start_run(experiment_id=experiment_id, run_name="pipeline", tags=tags) as parent:
        env = {**os.environ, **(extra_env or {}), PARENT_RUN_ENV: parent.info.run_id}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        log.info("dvc repro (stages nest under MLflow run %s)", parent.info.run_id)
        subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro"], cwd=ROOT, env=env, check=True)
        mlflow.set_tags(dvc_lock_hashes(ROOT / "dvc.lock"))
        return parent.info.run_id


def main() -> None:
    configure_logging()
    os.chdir(ROOT)
    run_id = run_pipeline()
    data = ROOT / "data"
    print()
    print(f"outputs:        {data}  (cohort: {data / 'cohort'})")
    print(f"MLflow run:     {run_id}  (store: sqlite:///{ROOT / 'mlruns' / 'mlflow.db'})")
    print(f"MLflow UI:      {Path(sys.executable).parent / 'mlflow'} ui --backend-store-uri sqlite:///mlruns/mlflow.db")


if __name__ == "__main__":
    main()
