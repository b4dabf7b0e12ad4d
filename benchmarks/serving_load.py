"""Serving load: BentoML /score_features against `mlflow models serve` of the same registered model.

Both servers run here, on 127.0.0.1, one worker each (``--workers``), serving the same registry version
(``--model``, default ``models:/cage-subsidence@champion``). The same patients' precomputed features
go to each as single-patient requests from ``--concurrency`` concurrent clients, bodies encoded once
beforehand (the clients' JSON encoding would otherwise compete with the servers for the cores):

- ``mlflow models serve``: ``dataframe_split`` (its most compact input), ``--mlflow-requests`` of them
  (with 11,000 features each takes seconds, so fewer than to BentoML; requests per second and
  latencies are what a smaller sample gives);
- BentoML ``/score_features`` twice, ``--requests`` each: the features as arrays in the model's
  order (``radiomics_values``, ``deep_values``, what ``cagerisk.client`` sends) and named.

First the probabilities of 4 patients from each server are checked against the combined pipeline in
this process (to 1e-9). Printed: model version, features per request and bytes, req/s, p50 and p99
per server, BentoML's CPU time per request (its whole process tree: less changed than latency
by other work on the machine), the ratios to MLflow; with ``--seconds N`` a soak of
``/score_features`` (arrays) at the same concurrency with errors and the resident memory of the
whole `bentoml serve` process tree at its start and end (and every twelfth of the soak between);
``/score`` (images -> U-Net, PyRadiomics, ViT-3D, combined model) of one demo patient,
``--score-repeats`` sequential calls; the load average at start and end (the machine may be shared).

    .venv/bin/python benchmarks/serving_load.py                         # after `make demo`
    .venv/bin/python benchmarks/serving_load.py --seconds 60            # plus a 60 s soak
    .venv/bin/python benchmarks/serving_load.py --tracking-uri sqlite:////tmp/run/mlflow.db --data /tmp/run/data
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cagerisk.cohort.manifest import load_manifest  # noqa: E402
from cagerisk.cohort.schema import CLINICAL_NAMES  # noqa: E402
from cagerisk.models.crossfit import read_deep_table  # noqa: E402
from cagerisk.serving.bento import bentoml_environment, free_port, serve, stop  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else math.nan


def run_load(send, payloads: list, concurrency: int, total: int = 0, seconds: float = 0.0) -> dict[str, float]:
    """``total`` requests (or as many as fit in ``seconds``) cycling over ``payloads`` from
    ``concurrency`` threads; latencies in ms. A request that raises counts as failed."""
    latencies: list[float] = []
    failures = 0
    counter = iter(range(10**12))
    deadline = time.perf_counter() + seconds if seconds else None

    def client_loop(_: int) -> tuple[list[float], int]:
        mine, failed = [], 0
        while True:
            i = next(counter)
            if (deadline is None and i >= total) or (deadline is not None and time.perf_counter() >= deadline):
                return mine, failed
            start = time.perf_counter()
            try:
                ok = send(payloads[i % len(payloads)])
            except Exception:  # noqa: BLE001 - a refused connection or timeout is a failed request
                ok = False
            mine.append((time.perf_counter() - start) * 1000.0)
            failed += not ok

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for mine, failed in pool.map(client_loop, range(concurrency)):
            latencies.extend(mine)
            failures += failed
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "failures": failures,
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (bentoml serve forks its workers), MiB."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and all its descendants."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def mlflow_server(model_uri: str, env: dict[str, str], log_path: Path, workers: int = 1):
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "--workers",
        str(workers),
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(process)
    raise TimeoutError(f"mlflow models serve not ready:\n{log_path.read_text()[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}")
    parser.add_argument("--data", default=str(ROOT / "data"))
    parser.add_argument("--model", default="models:/cage-subsidence@champion")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400, help="requests to BentoML, per payload form")
    parser.add_argument(
        "--mlflow-requests", type=int, default=16, help="requests to `mlflow models serve` (seconds each with 11,000 features)"
    )
    parser.add_argument("--score-repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.0, help="then a soak of /score_features for this long")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of each server (the same for both)")
    args = parser.parse_args()

    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    model = mlflow.pyfunc.load_model(args.model)
    spec = model.unwrap_python_model().spec
    name, _, ref = args.model.removeprefix("models:/").replace("@", "/").partition("/")
    client = mlflow.MlflowClient()
    version = client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
    data = Path(args.data)
    manifest = load_manifest(data / "cohort" / "manifest.csv").set_index("patient_id", drop=False)
    rad = pd.read_parquet(data / "features" / "radiomics.parquet").set_index("patient_id")
    # the deep stage's table as the models read it: wide, one column set per cross-fitted fold model
    deep = read_deep_table(data / "features" / "deep.parquet").features
    patients = [p for p in manifest.index if p in rad.index and p in deep.index]

    def plain(v):
        return v.item() if hasattr(v, "item") else v

    # Unknown (NaN) clinical values are left out, as a caller would (JSON has no NaN).
    clinical = {p: {k: plain(v) for k, v in manifest.loc[p, [*CLINICAL_NAMES]].items() if not pd.isna(v)} for p in patients}

    def features(p: str) -> dict[str, float | None]:
        values = {**rad.loc[p, spec.radiomics_features].to_dict(), **deep.loc[p, spec.deep_features].to_dict()}
        return {k: (None if math.isnan(v) else float(v)) for k, v in values.items()}

    def values(p: str, table: pd.DataFrame, names: list[str]) -> list[float | None]:
        return [None if math.isnan(v) else float(v) for v in table.loc[p, names].to_numpy(dtype=float)]

    # Bodies are encoded once, so that the clients' JSON encoding (20 ms for 11,000 values) does not
    # compete with the servers for the same cores; each server gets the same patients' values.
    def body(payload) -> bytes:
        return json.dumps(payload, allow_nan=False).encode()

    named_bodies = [body({"items": [{"clinical": clinical[p], "features": features(p)}]}) for p in patients]
    array_bodies = [
        body(
            {
                "items": [
                    {
                        "clinical": clinical[p],
                        **({"radiomics_values": values(p, rad, spec.radiomics_features)} if spec.radiomics_features else {}),
                        **({"deep_values": values(p, deep, spec.deep_features)} if spec.deep_features else {}),
                    }
                ]
            }
        )
        for p in patients
    ]
    # MLflow's most compact input: dataframe_split (names once, then the values).
    mlflow_bodies = []
    for p in patients:
        row = {**clinical[p], **features(p)}
        mlflow_bodies.append(body({"dataframe_split": {"columns": list(row), "data": [list(row.values())]}}))
    # The pipeline's own probabilities (the combined stage's model, in this process) for the check below.
    combined = model.unwrap_python_model().combined
    checked = patients[:4]
    pipeline_prob = combined.predict_from_features(
        rad.loc[checked].reset_index(), deep.loc[checked].reset_index(), manifest.loc[checked, ["patient_id", *CLINICAL_NAMES]]
    )["prob"].to_numpy()

    # The clients run in this process, which holds the model (for the check above), the feature tables
    # and the bodies: ~10^6 objects that each full garbage collection traversed, pausing every client
    # thread for 0.1-0.4 s, and the latencies counted those pauses (a 400-request p99 of 408 ms where
    # the server's access log said at most 48 ms). Frozen, as the service freezes its model.
    gc.collect()
    gc.freeze()
    # What full collections this process still makes while measuring, and how long each took (printed).
    full_collections: list[float] = []
    collection_start: list[float] = [0.0]

    def time_full_collections(phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                collection_start[0] = time.perf_counter()
            else:
                full_collections.append(time.perf_counter() - collection_start[0])

    gc.callbacks.append(time_full_collections)

    tmp = Path(tempfile.mkdtemp(prefix="cagerisk-bench-"))
    env = bentoml_environment(
        extra={"MLFLOW_TRACKING_URI": args.tracking_uri, "CAGERISK_MODEL_URI": args.model, "CAGERISK_WORKERS": str(args.workers)},
        home=tmp / "bentoml_home",
    )
    env.pop("CAGERISK_API_KEY", None)
    load_start = os.getloadavg()

    def kb(bodies: list[bytes]) -> float:
        return statistics.median(map(len, bodies)) / 1e3

    print(
        f"model {args.model} = version {version.version}; {len(patients)} patients; "
        f"{len(spec.radiomics_features)} radiomics + {len(spec.deep_features)} deep features per request "
        f"(named {kb(named_bodies):.0f} kB, arrays {kb(array_bodies):.0f} kB, "
        f"MLflow dataframe_split {kb(mlflow_bodies):.0f} kB per request)"
    )
    print(
        f"load average at start: {load_start[0]:.1f} {load_start[1]:.1f} {load_start[2]:.1f} ({os.cpu_count()} cores)", flush=True
    )
    headers = {"content-type": "application/json"}
    results: dict[str, dict[str, float]] = {}
    served: dict[str, np.ndarray] = {}
    # MLflow answers 504 after 60 s by default; its requests queue behind each other for longer here,
    # so the limit is raised rather than counting its own timeouts against it.
    mlflow_env = {**env, "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": "1800"}
    mlflow_process, mlflow_url = mlflow_server(args.model, mlflow_env, tmp / "mlflow-serve.log", args.workers)
    try:
        with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=args.concurrency * 2)) as http:

            def send_mlflow(payload: bytes) -> bool:
                return http.post(f"{mlflow_url}/invocations", content=payload, headers=headers).status_code == 200

            # The checked patients, one after the other, are also the warm-up.
            served["mlflow models serve"] = np.array(
                [
                    http.post(f"{mlflow_url}/invocations", content=b, headers=headers).json()["predictions"][0]["probability"]
                    for b in mlflow_bodies[: len(checked)]
                ]
            )
            results["mlflow models serve"] = run_load(send_mlflow, mlflow_bodies, args.concurrency, args.mlflow_requests)
            print(f"mlflow models serve: {results['mlflow models serve']['rps']:.1f} req/s", flush=True)
    finally:
        stop(mlflow_process)

    with serve("cagerisk.serving.service:CageRiskService", env, tmp / "bentoml-serve.log") as running:
        with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=args.concurrency * 2)) as http:

            def send_bento(payload: bytes) -> bool:
                return http.post(f"{running.url}/score_features", content=payload, headers=headers).status_code == 200

            forms = {"bentoml /score_features, arrays": array_bodies, "bentoml /score_features, named": named_bodies}
            for name, bodies in forms.items():
                served[name] = np.array(
                    [
                        http.post(f"{running.url}/score_features", content=b, headers=headers).json()[0]["probability"]
                        for b in bodies[: len(checked)]
                    ]
                )
                run_load(send_bento, bodies, args.concurrency, 4 * args.concurrency)  # warm-up
                # The server's CPU time per request: what one request costs whatever else runs on the
                # machine (latencies on a shared machine mostly measure the others).
                cpu_start = tree_cpu_s(running.process.pid)
                results[name] = run_load(send_bento, bodies, args.concurrency, args.requests)
                results[name]["cpu_ms"] = (tree_cpu_s(running.process.pid) - cpu_start) / results[name]["requests"] * 1e3
                print(f"{name}: {results[name]['rps']:.1f} req/s", flush=True)
            soak: dict[str, Any] = {}
            if args.seconds:
                rss_start = tree_rss_mib(running.process.pid)
                # Resident memory through the soak too: growth that levels off (warm-up) and growth
                # that goes on (a leak) can end at the same figure.
                rss_trace: list[tuple[float, float]] = []
                soak_done = threading.Event()

                def sample_rss(every: float = max(1.0, args.seconds / 12)) -> None:
                    started = time.perf_counter()
                    while not soak_done.wait(every):
                        rss_trace.append((time.perf_counter() - started, tree_rss_mib(running.process.pid)))

                sampler = threading.Thread(target=sample_rss, daemon=True)
                sampler.start()
                soak = run_load(send_bento, array_bodies, args.concurrency, seconds=args.seconds)
                soak_done.set()
                sampler.join()
                soak.update(rss_start=rss_start, rss_end=tree_rss_mib(running.process.pid), rss_trace=rss_trace)

            score_ms: list[float] = []
            if spec.image_scoring:
                meta = http.get(f"{running.url}/metadata").json()
                test = manifest[manifest["split"] == "test"]
                row = (test if len(test) else manifest).iloc[0]
                files = {}
                for seq, f in meta["expected_inputs"]["images"]["fields"].items():
                    files[f["image"]] = (f"{seq}.nii.gz", Path(row[f"{seq}_image"]).read_bytes(), "application/gzip")
                    if f["mask_required"]:
                        files[f["mask"]] = (f"{seq}_mask.nii.gz", Path(row[f"{seq}_mask"]).read_bytes(), "application/gzip")
                form = {"clinical": json.dumps({**clinical[row["patient_id"]], "fused_levels": row["fused_levels"]})}
                for _ in range(args.score_repeats):
                    start = time.perf_counter()
                    response = http.post(f"{running.url}/score", data=form, files=files)
                    score_ms.append((time.perf_counter() - start) * 1000.0)
                    assert response.status_code == 200, response.text
    load_end = os.getloadavg()

    print()
    for name, probs in served.items():
        diff = float(np.max(np.abs(probs - pipeline_prob)))
        print(f"{name}: probability of {len(checked)} patients vs the combined pipeline in process: max |diff| {diff:.2g}")
        assert diff <= 1e-9, (name, probs, pipeline_prob)
    print(
        f"{'server':<34} {'requests':>8} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'failed':>7} {'CPU ms/req':>11}"
        f"   (concurrency {args.concurrency})"
    )
    for name, r in results.items():
        cpu = f"{r['cpu_ms']:>11.2f}" if "cpu_ms" in r else f"{'':>11}"
        print(
            f"{name:<34} {r['requests']:>8d} {r['rps']:>8.1f} {r['p50_ms']:>9.1f} {r['p99_ms']:>9.1f} {r['failures']:>7d} {cpu}"
        )
    m = results["mlflow models serve"]
    for name in forms:
        b = results[name]
        print(
            f"ratio {name} / MLflow: throughput {b['rps'] / m['rps']:.2f}x, p50 latency {b['p50_ms'] / m['p50_ms']:.3f}x, "
            f"p99 latency {b['p99_ms'] / m['p99_ms']:.3f}x"
        )
    if soak:
        growth = (soak["rss_end"] - soak["rss_start"]) / soak["rss_start"] * 100.0
        print(
            f"soak /score_features (arrays) {args.seconds:g} s, concurrency {args.concurrency}: {soak['requests']} requests, "
            f"{soak['failures']} errors, {soak['rps']:.1f} req/s, p50 {soak['p50_ms']:.1f} ms, p99 {soak['p99_ms']:.1f} ms; "
            f"server RSS {soak['rss_start']:.0f} MiB at start, {soak['rss_end']:.0f} MiB at end ({growth:+.1f} %)"
        )
        print("  RSS during the soak (s: MiB): " + ", ".join(f"{t:.0f}: {mib:.0f}" for t, mib in soak["rss_trace"]))
    if score_ms:
        print(
            f"/score (images of one demo patient, {len(score_ms)} sequential calls): "
            f"p50 {statistics.median(score_ms) / 1000:.2f} s, "
            f"min {min(score_ms) / 1000:.2f} s, max {max(score_ms) / 1000:.2f} s"
        )
    elif not spec.image_scoring:
        print("/score: the model scores precomputed features only (no image bundle); not timed")
    longest = f" (longest {max(full_collections) * 1e3:.0f} ms)" if full_collections else ""
    print(f"full garbage collections in this (the clients') process while measuring: {len(full_collections)}{longest}")
    print(f"load average at end: {load_end[0]:.1f} {load_end[1]:.1f} {load_end[2]:.1f}")


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    main()
