"""Schemathesis over every route of the real bento on loopback, API key on and off: the OpenAPI
document is the contract the service keeps.

A feature-level model (tests/serving/serving_helpers.py) is registered in a real MLflow store,
imported into a BentoML store, built into a bento and served with `bentoml serve`; `schemathesis run`
(the CLI a user runs) fuzzes its /docs.json with every check and a bounded number of examples. The
model scores precomputed features only, so the service publishes no /score (the image route is fuzzed
nowhere in the suite: a request valid by any schema is rarely a NIfTI whose mask fits its grid).
No check is excluded.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from serving_helpers import compose_serving_config, run_schemathesis, write_feature_pipeline

from cagerisk.client import CageRiskClient, InvalidInput, MissingInput, NotFound, Unauthorized
from cagerisk.serving.bento import bentoml_environment, import_champion, serve

pytestmark = pytest.mark.slow

API_KEY = "fuzz-key-51d2"
# Examples per operation and phase; with the coverage phase's boundary cases this is ~250 requests
# per run, about half a minute on 2 cores.
MAX_EXAMPLES = 25
SEED = 20261201


@pytest.fixture(scope="module")
def bento(tmp_path_factory: pytest.TempPathFactory):
    from cagerisk.stages.register import run_register_stage

    tmp = tmp_path_factory.mktemp("fuzz")
    write_feature_pipeline(tmp / "data")
    cfg = compose_serving_config(tmp)
    run_register_stage(cfg)
    env = bentoml_environment(extra={"MLFLOW_TRACKING_URI": str(cfg.tracking.uri)}, home=tmp / "bentoml_home")
    env.pop("CAGERISK_API_KEY", None)
    imported = import_champion(str(cfg.tracking.uri), env, build=True)
    return tmp, env, imported["bento"]


@pytest.mark.parametrize("key", [API_KEY, None], ids=["api-key", "no-api-key"])
def test_schemathesis_finds_nothing(bento, key: str | None, tmp_path: Path):
    tmp, env, tag = bento
    env = dict(env)
    if key:
        env["CAGERISK_API_KEY"] = key
    with serve(tag, env, tmp_path / "bentoml-serve.log") as running:
        headers = {"X-API-Key": key} if key else {}
        docs = httpx.get(f"{running.url}/docs.json", timeout=30).json()
        # The contract states what this model requires and every error the service answers.
        body = docs["paths"]["/score_features"]["post"]
        assert {"200", "400", "401", "411", "413", "422", "503"} <= set(body["responses"])
        assert "/score" not in docs["paths"]  # features-only model: no image route
        schemas = docs["components"]["schemas"]
        assert set(schemas["ClinicalValues"]["required"]) == {"osteoporosis", "age"}
        meta = httpx.get(f"{running.url}/metadata", headers=headers, timeout=30).json()
        assert set(schemas["Features"]["required"]) == {
            *meta["expected_inputs"]["features"]["radiomics"],
            *meta["expected_inputs"]["features"]["deep"],
        }
        empty = httpx.post(f"{running.url}/score_features", json={"items": []}, headers=headers, timeout=30)
        assert empty.status_code in (400, 422) and empty.json()["field"] == "items", empty.text
        if key:
            assert httpx.post(f"{running.url}/score_features", json={"items": []}, timeout=30).status_code == 401

        check_client(running.url, key, tmp / "data")
        done = run_schemathesis(running.url, tmp_path, key, max_examples=MAX_EXAMPLES, seed=SEED)
        report = done.stdout[-8000:] + done.stderr[-2000:]
        assert done.returncode == 0, report
        assert "No issues found" in done.stdout, report
        # every route: probes, /metrics, /metadata, /score_features
        assert "6 selected / 6 total" in done.stdout, report
    assert "Traceback" not in running.log_text(), running.log_text()[-4000:]


def check_client(url: str, key: str | None, data: Path) -> None:
    """cagerisk.client against the same server: results equal the combined stage's, typed 4xx errors."""
    manifest = pd.read_csv(data / "cohort" / "manifest.csv").set_index("patient_id")
    rad = pd.read_parquet(data / "features" / "radiomics.parquet").set_index("patient_id")
    deep = pd.read_parquet(data / "features" / "deep.parquet").set_index("patient_id")
    scores = pd.read_parquet(data / "models" / "combined" / "scores.parquet").set_index("patient_id")
    patients = list(scores.index[scores["split"] != "train"][:5])
    with CageRiskClient(url, api_key=key) as client:
        needed = client.metadata()["expected_inputs"]
        used = needed["clinical_required"]

        def patient(pid: str) -> dict:
            features = {**rad.loc[pid, needed["features"]["radiomics"]], **deep.loc[pid, needed["features"]["deep"]]}
            return {"patient_id": pid, "clinical": manifest.loc[pid, used].to_dict(), "features": features}

        results = client.score_features([patient(p) for p in patients])
        assert [r["patient_id"] for r in results] == patients
        np.testing.assert_allclose([r["probability"] for r in results], scores.loc[patients, "combined"], atol=1e-9)
        # The client sends value arrays by default; the named form scores the same.
        named = client.score_features([patient(p) for p in patients], compact=False)
        assert [r["probability"] for r in named] == [r["probability"] for r in results]

        too_old = patient(patients[0])
        too_old["clinical"]["age"] = 250
        with pytest.raises(InvalidInput) as bad:
            client.score_features([too_old])
        assert bad.value.status == 422 and bad.value.field == "items.0.clinical.age"
        no_features = {**patient(patients[0]), "features": {}}
        with pytest.raises(MissingInput) as missing:
            client.score_features([no_features])
        assert missing.value.field.startswith("items.0.features.")
        with pytest.raises(NotFound):  # this model scores features only: no /score
            client.score_images({"age": 60}, {"t2_image": b"not an image"})
    if key:
        with CageRiskClient(url) as anonymous, pytest.raises(Unauthorized):
            anonymous.metadata()
