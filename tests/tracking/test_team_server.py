"""Team mode end to end on loopback: a real PostgreSQL server, `mlflow server` backed by it, two
`cagerisk signatures` workers on one Optuna study stored in the same PostgreSQL, then `cagerisk register`;
checked through the tracking server's REST API and Optuna's storage."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import optuna
import pytest
from serving_helpers import serving_overrides, write_feature_pipeline
from team_stack import BIN, free_port, mlflow_process, postgres

N_TRIALS = 6
# The stage's own code and config at tiny sizes (as tests/models' tiny_overrides).
TINY = [
    f"sweep.n_trials={N_TRIALS}",
    "sweep.cv_folds=3",
    "sweep.pruner=null",
    "sweep.sampler_startup_trials=2",
    "sweep.fit_best=false",
    "selection.radiomics.lasso.cv=3",
    "selection.radiomics.lasso.n_alphas=20",
    "selection.deep.reduce.n_components=5",
    "classifier.include=[lr,nb,dt]",
]


def _cagerisk(stage: str, overrides: list[str], log_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "cagerisk"), stage, *overrides],
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"},
        start_new_session=True,
    )


def _wait(process: subprocess.Popen, log_path: Path, timeout: float = 600) -> None:
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        raise
    assert code == 0, f"exit {code}; {log_path}:\n{log_path.read_text()[-4000:]}"


def _search_runs(url: str, experiment_id: str, filter_string: str) -> list[dict]:
    runs, token = [], None
    for _ in range(20):  # bounded paging
        body = {"experiment_ids": [experiment_id], "filter": filter_string, "max_results": 500}
        if token:
            body["page_token"] = token
        reply = httpx.post(f"{url}/api/2.0/mlflow/runs/search", json=body, timeout=30).raise_for_status().json()
        runs += reply.get("runs", [])
        token = reply.get("next_page_token")
        if not token:
            break
    return runs


def _params(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


@pytest.mark.timeout(900)
def test_two_workers_one_study_then_register_on_postgres_and_mlflow_server(tmp_path: Path):
    write_feature_pipeline(tmp_path / "data")
    artifacts = tmp_path / "server-artifacts"
    with postgres(tmp_path / "pgdata", ("mlflow", "optuna")) as db:
        port = free_port()
        server_args = ["server", "--backend-store-uri", db["mlflow"], "--artifacts-destination", str(artifacts), "--workers", "1"]
        with mlflow_process(server_args, tmp_path / "mlflow-server.log", port) as url:
            team = [
                *[o for o in serving_overrides(tmp_path) if not o.startswith("tracking.")],
                "tracking=server",
                f"tracking.uri={url}",
                # quoted: the socket URL's "?host=" is not Hydra override grammar otherwise
                f"tracking.optuna_storage='{db['optuna']}'",
            ]
            logs = [tmp_path / f"worker{w}.log" for w in (0, 1)]
            workers = [_cagerisk("signatures", [*team, *TINY, f"sweep.worker={w}"], logs[w]) for w in (0, 1)]
            for process, log_path in zip(workers, logs, strict=False):
                _wait(process, log_path)
            register_log = tmp_path / "register.log"
            _wait(_cagerisk("register", team, register_log), register_log)

            # --- Optuna: one study per target in PostgreSQL, holding both workers' trials.
            summaries = optuna.get_all_study_summaries(storage=db["optuna"])
            studies = {s.study_name: s for s in summaries}
            assert {name.split("-")[2] for name in studies} == {"rad", "dl"}, sorted(studies)
            trials_by_study = {}
            for name in studies:
                trials = optuna.load_study(study_name=name, storage=db["optuna"]).get_trials(deepcopy=False)
                finished = [t for t in trials if t.state.is_finished()]
                assert len(finished) >= N_TRIALS
                trials_by_study[name] = {t.number: t.user_attrs.get("worker") for t in trials}
            all_workers = {w for numbers in trials_by_study.values() for w in numbers.values()}
            assert all_workers == {0, 1}, trials_by_study

            # --- MLflow server REST API: the experiment, both workers' runs and their trial runs.
            experiment = httpx.get(
                f"{url}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "cagerisk"}, timeout=30
            )
            experiment = experiment.raise_for_status().json()["experiment"]
            assert {t["key"]: t["value"] for t in experiment.get("tags", [])}[
                "mlflow.experimentKind"
            ] == "custom_model_development"
            exp_id = experiment["experiment_id"]
            stage_runs = _search_runs(url, exp_id, "tags.`cagerisk.stage` = 'signatures'")
            assert sorted(_params(r)["sweep.worker"] for r in stage_runs) == ["0", "1"]
            assert {_params(r)["sweep.storage"] for r in stage_runs} == {db["optuna"]}
            # The union of the two workers' trial runs is every trial of each study, each logged once.
            trial_runs = _search_runs(url, exp_id, "tags.`optuna.study` LIKE 'cagerisk-%'")
            parents = {r["info"]["run_id"] for r in stage_runs}
            logged: dict[str, list[int]] = {}
            for run in trial_runs:
                tags = _tags(run)
                assert tags["mlflow.parentRunId"] in parents
                logged.setdefault(tags["optuna.study"], []).append(int(_params(run)["trial"]))
            assert {name: sorted(numbers) for name, numbers in logged.items()} == {
                name: sorted(numbers) for name, numbers in trials_by_study.items()
            }
            per_parent = {p: sum(_tags(r)["mlflow.parentRunId"] == p for r in trial_runs) for p in parents}
            assert all(count > 0 for count in per_parent.values()), per_parent
            # Datasets: each worker's run shows what it read.
            for run in stage_runs:
                names = {d["dataset"]["name"] for d in run["inputs"].get("dataset_inputs", [])}
                assert names == {"manifest", "radiomics", "deep"}

            # --- Registry: the champion alias and its card, through the REST API.
            alias = (
                httpx.get(
                    f"{url}/api/2.0/mlflow/registered-models/alias",
                    params={"name": "cage-subsidence", "alias": "champion"},
                    timeout=30,
                )
                .raise_for_status()
                .json()["model_version"]
            )
            assert alias["version"] == "1" and "champion" in alias.get("aliases", [])
            assert "Intended use" in alias["description"] and "Known limits" in alias["description"]
            register_run = (
                httpx.get(f"{url}/api/2.0/mlflow/runs/get", params={"run_id": alias["run_id"]}, timeout=30)
                .raise_for_status()
                .json()["run"]
            )
            assert _tags(register_run)["cagerisk.stage"] == "register"
            # Artifacts went through the server to its destination, not into the work tree.
            assert any(p.name == "MLmodel" for p in artifacts.rglob("MLmodel"))
            assert not (tmp_path / "artifacts").exists()


def compose_config(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_server_config_points_sweeps_at_the_same_postgresql():
    cfg = compose_config(
        ["tracking=server", "tracking.uri=http://10.0.0.5:5000", "tracking.optuna_storage=postgresql+psycopg2://u@db/optuna"]
    )
    assert cfg.tracking.uri == "http://10.0.0.5:5000" and cfg.tracking.artifact_root is None
    assert cfg.sweep.storage == "postgresql+psycopg2://u@db/optuna"
    assert compose_config([]).sweep.storage.startswith("sqlite:///")
