"""`make demo`: from the synthetic cohort to a registered champion served over HTTP, on loopback.

1. ``dvc repro`` of every stage under one parent MLflow run (stages nest under it; the parent gets the
   git commit, the DVC hashes of what was produced, and the headline metrics, report, figures and
   datasets: ``cagerisk.tracking.pipeline_run``);
2. ``cagerisk register`` (nested under the same parent): the serving model becomes a new version of
   ``cage-subsidence``, champion or challenger;
3. the champion is imported into the BentoML store (``bentoml_home/``) and built into a bento;
4. ``bentoml serve`` of the bento on 127.0.0.1; one real ``/score`` request for a test patient of the
   demo cohort (the images, and only the masks of sequences whose U-Net the bundle lacks: the served
   U-Nets draw the others) is printed; the server is stopped;
5. the commands to browse MLflow and to containerize the bento are printed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from hydra import compose, initialize_config_dir
from rich.console import Console
from rich.panel import Panel

from cagerisk.config import typed
from cagerisk.config.modelling import TrackingConfig
from cagerisk.logging_setup import configure_logging
from cagerisk.tracking import configure_tracking, dvc_lock_hashes, flatten_config, git_commit
from cagerisk.tracking.pipeline_run import log_pipeline_summary
from cagerisk.tracking.runs import PARENT_RUN_ENV

log = logging.getLogger("cagerisk.demo")
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
console = Console()
T = TypeVar("T")


def step(title: str, action: Callable[[], T]) -> T:
    """Run one long step under a rich spinner and report its duration."""
    started = time.perf_counter()
    with console.status(f"[bold]{title}[/bold] ..."):
        result = action()
    console.print(f"[green]done[/green] {title} ({time.perf_counter() - started:.0f} s)")
    return result


def _environment(parent_run_id: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if parent_run_id:
        env[PARENT_RUN_ENV] = parent_run_id
    return env


def run_pipeline(extra_env: dict[str, str] | None = None) -> str:
    """`dvc repro` under a parent MLflow run; returns the parent run id."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config")
    experiment_id = configure_tracking(typed(cfg.tracking, TrackingConfig, "tracking"))
    commit = git_commit(ROOT)
    tags = {"cagerisk.stage": "pipeline", **({"git_commit": commit} if commit else {})}
    with mlflow.start_run(experiment_id=experiment_id, run_name="pipeline", tags=tags) as parent:
        mlflow.log_params(flatten_config(cfg))
        env = {**_environment(parent.info.run_id), **(extra_env or {})}
        log.info("dvc repro (stages nest under MLflow run %s)", parent.info.run_id)
        subprocess.run([str(BIN / "dvc"), "repro"], cwd=ROOT, env=env, check=True)
        mlflow.set_tags(dvc_lock_hashes(ROOT / "dvc.lock"))
        log_pipeline_summary(pipeline_config())
        return parent.info.run_id


def pipeline_config():
    """The config the stages composed (params.yaml's choices), with paths resolved from the repository."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=pipeline_overrides())


def tag_registration(run_id: str, decision: dict[str, Any]) -> None:
    """The registry's decision on the parent run too: the reviewer's page links to the version."""
    client = mlflow.MlflowClient()
    client.set_tag(run_id, "registry.model_version", f"{decision['name']}/{decision['version']}")
    for key in ("alias", "reason"):
        client.set_tag(run_id, f"registry.{key}", str(decision[key])[:5000])


def pipeline_overrides() -> list[str]:
    """The Hydra overrides of the choices in params.yaml, as the dvc.yaml stages pass them."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text()) or {}
    keys = {"cohort": "cohort", "data": "paths.data", "radiomics": "radiomics", "deep": "deep", "sweep": "sweep"}
    return [f"{key}={params[name]}" for name, key in keys.items() if name in params]


def register(parent_run_id: str) -> dict[str, Any]:
    """`cagerisk register` nested under the pipeline's run, with the pipeline's choices; returns its JSON decision."""
    done = subprocess.run(
        [str(BIN / "cagerisk"), "register", *pipeline_overrides()],
        cwd=ROOT,
        env=_environment(parent_run_id),
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    if done.returncode != 0:
        console.print(done.stdout[-3000:], done.stderr[-5000:])
        raise SystemExit(f"cagerisk register failed ({done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def demo_patient(cohort_dir: Path) -> Any:
    """The first test-split patient of the demo cohort (never seen in training)."""
    from cagerisk.cohort.manifest import load_manifest

    manifest = load_manifest(cohort_dir / "manifest.csv")
    test = manifest[manifest["split"] == "test"]
    return (test if len(test) else manifest).iloc[0]


def score_request(url: str, row: Any, metadata: dict[str, Any]) -> dict[str, Any]:
    """One real /score call through ``cagerisk.client``: the images the model needs and clinical values. No
    mask is sent: the served U-Nets draw them; a mask goes only where the model has no U-Net for it."""
    from cagerisk.client import CageRiskClient, ScoringError
    from cagerisk.cohort.schema import CLINICAL_NAMES

    fields = metadata["expected_inputs"]["images"]["fields"]
    images: dict[str, str] = {}
    for seq, spec in fields.items():
        images[spec["image"]] = str(row[f"{seq}_image"])
        if spec["mask_required"]:
            log.warning("the served model has no %s U-Net: sending the manual %s mask", seq, seq)
            images[spec["mask"]] = str(row[f"{seq}_mask"])
    clinical = {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in (*CLINICAL_NAMES, "fused_levels")}
    with CageRiskClient.from_env(url) as client:
        try:
            response = client.score_images(clinical, images, patient_id=str(row["patient_id"]))
        except ScoringError as err:
            raise SystemExit(f"/score answered {err}") from None
    return {"request": {"files": sorted(images), "clinical": clinical}, "response": response}


def serve_and_score(tracking_uri: str, cohort_dir: Path) -> dict[str, Any]:
    from cagerisk.client import CageRiskClient
    from cagerisk.serving.bento import bentoml_environment, import_champion, serve

    env = bentoml_environment(extra={"MLFLOW_TRACKING_URI": tracking_uri})
    imported = step(
        "importing the champion into the BentoML store and building the bento",
        lambda: import_champion(tracking_uri, env, build=True),
    )
    tag = imported["bento"]
    log_path = ROOT / "bentoml_home" / "demo-serve.log"
    # The server runs only inside this block: leaving it (normally or on an error) stops its process group.
    with (
        console.status("[bold]bentoml serve[/bold] on 127.0.0.1 (loading the model) ...") as status,
        serve(tag, env, log_path) as running,
    ):
        status.stop()
        console.print(f"[green]serving[/green] {tag} at {running.url} (OpenAPI docs: {running.url}/ ; log {log_path})")
        with CageRiskClient.from_env(running.url) as client:
            metadata = client.metadata()
        row = demo_patient(cohort_dir)
        scored = step("POST /score for one demo patient", lambda: score_request(running.url, row, metadata))
        console.print("stopping the server ...")
    return {"bento": tag, "imported": imported, "url": running.url, "metadata": metadata, **scored}


def main() -> None:
    configure_logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
    os.chdir(ROOT)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=pipeline_overrides())
    tracking_uri = typed(cfg.tracking, TrackingConfig, "tracking").uri
    if tracking_uri.startswith("sqlite:///") and not tracking_uri.startswith("sqlite:////"):
        tracking_uri = f"sqlite:///{(ROOT / tracking_uri.removeprefix('sqlite:///')).resolve()}"
    run_id = step("dvc repro (every stage, nested under one MLflow run)", run_pipeline)
    decision = step("cagerisk register", lambda: register(run_id))
    tag_registration(run_id, decision)
    console.print(
        Panel.fit(
            f"cage-subsidence version {decision['version']} -> [bold]{decision['alias']}[/bold]\n{decision['reason']}\n"
            f"validation AUC {decision['val_auc']}  (champion's {decision['champion_val_auc']}, DeLong p {decision['delong_p']})",
            title="registry",
        )
    )
    served = serve_and_score(tracking_uri, Path(str(cfg.paths.cohort)).resolve())
    console.print(
        Panel(json.dumps(served["response"], indent=2), title=f"POST /score  ({', '.join(served['request']['files'])})")
    )
    console.print(f"outputs:          {Path(str(cfg.paths.data)).resolve()}")
    console.print(f"MLflow run:       {run_id}  (store: {tracking_uri})")
    console.print(f"MLflow UI:        {BIN / 'mlflow'} ui --backend-store-uri {tracking_uri} --port 5000")
    experiment_id = mlflow.get_run(run_id).info.experiment_id
    console.print(
        f"  then open       http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    )
    console.print(f"bento:            {served['bento']}  (BENTOML_HOME={ROOT / 'bentoml_home'})")
    console.print(
        f"serve it again:   BENTOML_HOME={ROOT / 'bentoml_home'} {BIN / 'bentoml'} serve {served['bento']} --host 127.0.0.1"
    )
    console.print(f"container image:  BENTOML_HOME={ROOT / 'bentoml_home'} {BIN / 'bentoml'} containerize {served['bento']}")


if __name__ == "__main__":
    main()
