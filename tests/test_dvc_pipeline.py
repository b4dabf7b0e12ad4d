"""dvc.yaml with the real DVC: the pipeline graph is valid, and the cohort stage runs once, then is skipped.

The project's tracked files are copied into a fresh git repository (as a clean clone would have them),
``params.yaml`` is pointed at the 16-patient tiny cohort, and ``dvc repro cohort`` runs twice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ["cohort", "segment", "radiomics", "deep", "reproducibility", "signatures", "combined", "evaluate"]


def _tracked_files() -> list[str]:
    proc = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [p for p in proc.stdout.decode().split("\0") if p]


@pytest.fixture
def clean_copy(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    repo = tmp_path / "repo"
    for rel in _tracked_files():
        src = ROOT / rel
        if src.is_file():
            dst = repo / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    (repo / "dvc.lock").unlink(missing_ok=True)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "CAGERISK_PARENT_RUN_ID": "",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True)
    return repo, env


def _dvc(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dvc"), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
    )


def test_pipeline_graph_has_every_stage_in_order(clean_copy):
    repo, env = clean_copy
    proc = _dvc(repo, env, "dag", "--md")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for stage in STAGES:
        assert stage in proc.stdout
    lock_free = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert list(lock_free) == STAGES
    # Every stage is the CLI's stage of the same name, with the pipeline's data folder.
    for name, stage in lock_free.items():
        assert stage["cmd"].startswith(f"cagerisk {name} ") and "paths.data=${data}" in stage["cmd"]


def test_dvc_repro_runs_the_cohort_stage_then_skips_it(clean_copy):
    repo, env = clean_copy
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params.update(cohort="tiny", data="data")
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    first = _dvc(repo, env, "repro", "cohort")
    assert first.returncode == 0, first.stdout + first.stderr
    manifest = repo / "data" / "cohort" / "manifest.csv"
    assert manifest.exists()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert lock["stages"]["cohort"]["outs"][0]["path"] == "data/cohort"
    stamp = manifest.stat().st_mtime_ns

    second = _dvc(repo, env, "repro", "cohort")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "didn't change, skipping" in second.stdout
    assert "Running stage 'cohort'" not in second.stdout
    assert manifest.stat().st_mtime_ns == stamp
    status = _dvc(repo, env, "status", "cohort")
    assert status.returncode == 0 and "up to date" in status.stdout.lower(), status.stdout
