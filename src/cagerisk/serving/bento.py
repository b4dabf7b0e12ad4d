"""BentoML plumbing: import the registry's champion, build the bento, run ``bentoml serve`` on loopback.

BentoML keeps models and bentos under ``$BENTOML_HOME`` and reads it when it is first imported, so
the store operations run in a subprocess with the environment of :func:`bentoml_environment`
(``serve.bentoml_home``, inside the checkout by default, and BentoML's usage tracking off: nothing
leaves the machine). CLI::

    python -m cagerisk.serving.bento import-model --tracking-uri sqlite:///mlruns/mlflow.db
    python -m cagerisk.serving.bento build
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from cagerisk.serving.settings import ServeSettings, bentoml_home, load_serve_settings, repository_root

log = logging.getLogger(__name__)


def bentoml_environment(
    settings: ServeSettings | None = None, extra: Mapping[str, str] | None = None, home: str | Path | None = None
) -> dict[str, str]:
    """The environment every BentoML command of the project runs with."""
    settings = settings or load_serve_settings()
    env = {**os.environ, **(extra or {})}
    env["BENTOML_HOME"] = str(Path(home) if home else bentoml_home(settings))
    env["BENTOML_DO_NOT_TRACK"] = "True"
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    bin_dir = str(Path(sys.executable).parent)
    if not env.get("PATH", "").startswith(bin_dir):
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def import_model(tracking_uri: str, settings: ServeSettings | None = None, alias: str | None = None) -> dict[str, str]:
    """Import ``models:/<name>@<alias>`` into the BentoML store (run with BENTOML_HOME already set)."""
    import bentoml
    import mlflow
    from mlflow.tracking import MlflowClient

    settings = settings or load_serve_settings()
    alias = alias or settings.champion_alias
    mlflow.set_tracking_uri(tracking_uri)
    version = MlflowClient().get_model_version_by_alias(settings.model_name, alias)
    bento_name = settings.bento_model.split(":")[0]
    labels = {
        "mlflow_model": settings.model_name,
        "mlflow_version": str(version.version),
        "mlflow_alias": alias,
        "mlflow_run_id": str(version.run_id or ""),
        "training_data_sha256": str((version.tags or {}).get("training_data_sha256", "")),
    }
    stored = bentoml.mlflow.import_model(
        bento_name, f"models:/{settings.model_name}/{version.version}", labels=labels, metadata={"tracking_uri": tracking_uri}
    )
    log.info("imported %s version %s (%s) into the BentoML store as %s", settings.model_name, version.version, alias, stored.tag)
    return {"tag": str(stored.tag), **labels}


def run_bentoml_step(args: list[str], env: Mapping[str, str], cwd: str | Path | None = None, timeout: float = 900) -> str:
    """Run a BentoML step (``python -m cagerisk.serving.bento ...`` or the ``bentoml`` CLI); returns stdout."""
    done = subprocess.run(
        args,
        cwd=str(cwd or repository_root()),
        env=dict(env),
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def build_in_process(bentofile: str | Path | None = None) -> str:
    """``bentoml build`` of bentofile.yaml with BentoML's Python API (BENTOML_HOME already set); returns the tag."""
    import bentoml

    root = repository_root()
    bento = bentoml.bentos.build_bentofile(str(bentofile or root / "bentofile.yaml"), build_ctx=str(root))
    log.info("built bento %s", bento.tag)
    return str(bento.tag)


def import_champion(tracking_uri: str, env: Mapping[str, str], build: bool = False) -> dict[str, str]:
    """:func:`import_model` (and with ``build`` the bento) in one subprocess with ``env`` (BENTOML_HOME).

    Returns the BentoML model tag and labels, plus ``bento`` (the bento tag) when built.
    """
    args = [sys.executable, "-m", "cagerisk.serving.bento", "import-model", "--tracking-uri", tracking_uri]
    out = run_bentoml_step([*args, "--build"] if build else args, env)
    return json.loads(out.strip().splitlines()[-1])


def build_bento(env: Mapping[str, str]) -> str:
    """``bentoml build`` (the CLI) of bentofile.yaml; returns the bento tag."""
    out = run_bentoml_step(
        [
            str(Path(sys.executable).parent / "bentoml"),
            "build",
            "-f",
            str(repository_root() / "bentofile.yaml"),
            "--output",
            "tag",
            str(repository_root()),
        ],
        env,
    )
    tags = [line.strip() for line in out.splitlines() if line.strip().startswith("__tag__:")]
    if not tags:
        raise RuntimeError(f"bentoml build printed no tag:\n{out[-2000:]}")
    return tags[-1].removeprefix("__tag__:")


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def serve(
    target: str,
    env: Mapping[str, str],
    log_path: str | Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    ready_timeout: float = 240.0,
    cwd: str | Path | None = None,
) -> Iterator[RunningServer]:
    """``bentoml serve TARGET`` on loopback until ``/readyz`` answers 200; stopped (whole process group) on exit.

    ``target`` is a bento tag or ``cagerisk.serving.service:CageRiskService``.
    """
    port = port or free_port(host)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).parent / "bentoml"), "serve", target, "--host", host, "--port", str(port)]
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            cmd,
            cwd=str(cwd or repository_root()),
            env=dict(env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = RunningServer(f"http://{host}:{port}", process, log_path)
    try:
        wait_ready(server, ready_timeout)
        yield server
    finally:
        stop(process)


def wait_ready(server: RunningServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {server.process.returncode}:\n{server.log_text()[-4000:]}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"bentoml serve not ready after {timeout:.0f} s:\n{server.log_text()[-4000:]}")


def stop(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM to the server's process group (it forks workers), SIGKILL after ``grace`` seconds."""
    import signal

    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cagerisk.serving.bento")
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import-model", help="import the registry's champion into the BentoML store")
    imp.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlruns/mlflow.db"))
    imp.add_argument("--alias", default=None)
    imp.add_argument("--build", action="store_true", help="then build the bento (bentofile.yaml)")
    sub.add_parser("build", help="bentoml build of bentofile.yaml (after import-model)")
    args = parser.parse_args(argv)
    from cagerisk.logging_setup import configure_logging

    configure_logging()
    if "BENTOML_HOME" not in os.environ:
        os.environ.update({k: v for k, v in bentoml_environment().items() if k.startswith("BENTOML_")})
    if args.command == "import-model":
        result = import_model(args.tracking_uri, alias=args.alias)
        if args.build:
            result["bento"] = build_in_process()
        print(json.dumps(result))
    elif args.command == "build":
        print(build_in_process())


if __name__ == "__main__":
    main()
