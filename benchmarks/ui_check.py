"""`make ui-check`: what a reviewer sees in a real browser, on the demo's MLflow store.

Starts `mlflow ui` on the store (default ``mlruns/mlflow.db`` of `make demo`) on 127.0.0.1, opens with
headless Chromium (Debian's ``chromium``; `make ui-check` installs it) the experiment's runs, the latest
pipeline run and the champion's model version page, saves a screenshot of each under ``docs/screenshots/``
and checks in the rendered page (the DOM after MLflow's JavaScript ran) that

- the experiment page shows training runs (the ``pipeline`` run) with their datasets;
- the pipeline run page shows its headline metrics (``combined_val_auc``, ...) and summary;
- the model page shows the ``champion`` alias and its model card.

Run: ``python benchmarks/ui_check.py [--store sqlite:///mlruns/mlflow.db] [--out docs/screenshots]``.
Exit status 1 when a check fails; each check and its evidence is printed and written to ``ui_check.json``.

MLflow 3.17's UI chooses between its GenAI and model-training layouts per browser (``workflowType``,
kept in the browser's local storage, GenAI by default), not from the experiment's kind tag; the links
below carry ``?workflowType=machine_learning``, as the links printed by `make demo` and docs/tracking.md do.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tracking"))
from team_stack import free_port, mlflow_process  # noqa: E402

log = logging.getLogger("ui_check")
ML = "workflowType=machine_learning"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    # Virtual time runs only while the page is idle: it waits for MLflow's API calls and rendering.
    "--virtual-time-budget=30000",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("Chromium not found: `make ui-check` installs Debian's chromium (apt-get install chromium)")


def render(url: str, screenshot: Path, user_data: Path, size: str = "1600,1500") -> str:
    """Load ``url`` in headless Chromium; save a screenshot and return the DOM after scripts ran."""
    done = subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={user_data}",
            f"--window-size={size}",
            f"--screenshot={screenshot}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=180,
    )
    if done.returncode != 0 or not screenshot.is_file():
        raise RuntimeError(f"chromium failed on {url} ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def api(url: str, path: str, **params) -> dict:
    return httpx.get(f"{url}/api/2.0/mlflow/{path}", params=params, timeout=30).raise_for_status().json()


def latest_pipeline_run(url: str, experiment_id: str) -> dict:
    body = {
        "experiment_ids": [experiment_id],
        "filter": "tags.`cagerisk.stage` = 'pipeline'",
        "order_by": ["attributes.start_time DESC"],
        "max_results": 1,
    }
    runs = httpx.post(f"{url}/api/2.0/mlflow/runs/search", json=body, timeout=30).raise_for_status().json().get("runs", [])
    if not runs:
        raise SystemExit("no pipeline run in the store: run `make demo` first")
    return runs[0]


def check(results: list[dict], name: str, ok: bool, evidence: str) -> None:
    results.append({"check": name, "ok": bool(ok), "evidence": evidence})
    log.info("%s %s: %s", "PASS" if ok else "FAIL", name, evidence)


def run_checks(store: str, out: Path, experiment: str, model: str) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ui-check-") as tmp:
        tmp_path = Path(tmp)
        args = ["ui", "--backend-store-uri", store, "--workers", "1"]
        with mlflow_process(args, tmp_path / "mlflow-ui.log", free_port(), timeout_s=300) as url:
            exp = api(url, "experiments/get-by-name", experiment_name=experiment)["experiment"]
            exp_id = exp["experiment_id"]
            kind = {t["key"]: t["value"] for t in exp.get("tags", [])}.get("mlflow.experimentKind")
            check(results, "experiment kind tag", kind == "custom_model_development", f"mlflow.experimentKind = {kind}")
            pipeline = latest_pipeline_run(url, exp_id)
            run_id = pipeline["info"]["run_id"]
            metrics = {m["key"]: m["value"] for m in pipeline["data"].get("metrics", [])}
            champion = api(url, "registered-models/alias", name=model, alias="champion")["model_version"]

            # 1. The experiment opens on its training runs, with datasets.
            dom = render(f"{url}/#/experiments/{exp_id}?{ML}", out / "mlflow-experiment-runs.png", tmp_path / "c1")
            check(
                results,
                "experiment page lists the pipeline run and its datasets",
                ">pipeline<" in dom and "manifest" in dom and "matching run" in dom,
                f"runs table shown: {'matching run' in dom}; 'pipeline' run shown: {'>pipeline<' in dom}; "
                f"dataset 'manifest' shown: {'manifest' in dom}",
            )

            # 2. The pipeline run page: headline metrics and summary.
            dom = render(
                f"{url}/#/experiments/{exp_id}/runs/{run_id}?{ML}",
                out / "mlflow-pipeline-run.png",
                tmp_path / "c2",
                size="1600,3200",
            )
            wanted = [k for k in ("combined_val_auc", "combined_test_auc", "heldout_auc_ratio") if k in metrics]
            shown = [k for k in wanted if k in dom]
            check(
                results,
                "pipeline run shows its headline metrics",
                bool(wanted) and shown == wanted and "combined_val_auc" in wanted,
                f"{len(metrics)} metrics on the run; shown on the page: {shown} of {wanted}",
            )
            check(results, "pipeline run shows its summary", "Pipeline summary" in dom, "description 'Pipeline summary' rendered")

            # 3. The champion's page: alias and model card.
            version = champion["version"]
            dom = render(f"{url}/#/models/{model}/versions/{version}", out / "mlflow-champion-card.png", tmp_path / "c3")
            card_bits = ["Intended use", "Known limits", "Training data", "Threshold"]
            check(
                results,
                "model page shows the champion and its card",
                "champion" in dom and all(b in dom for b in card_bits),
                f"version {version}; 'champion' shown: {'champion' in dom}; "
                f"card sections shown: {[b for b in card_bits if b in dom]}",
            )
    (out / "ui_check.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=f"sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--experiment", default="cagerisk")
    parser.add_argument("--model", default="cage-subsidence")
    args = parser.parse_args()
    results = run_checks(args.store, args.out, args.experiment, args.model)
    failed = [r["check"] for r in results if not r["ok"]]
    log.info("%d of %d checks passed; screenshots in %s", len(results) - len(failed), len(results), args.out)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
