"""End to end on loopback: train on the tiny cohort, register, build the bento, `bentoml serve` it, call it.

The stages are the real ones (segment, radiomics, ViT-3D, signatures, combined) at tiny sizes on the
sagittal T2 only: a small T2 U-Net (the CT one takes minutes to train; it is exercised by `make demo`
and benchmarks/serving_load.py on the demo cohort) is trained, so /score takes the T2 image alone; the
features are the manual masks' (`segment.masks=manual`) so that a briefly trained U-Net cannot empty an
ROI the pipeline needs. Everything else is what production runs: the registered MLflow model imported
into a BentoML store, `bentoml build`, `bentoml serve` of the bento in a subprocess, httpx against it.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import math
from pathlib import Path

import httpx
import joblib
import mlflow
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from serving_helpers import compose_serving_config, importable_modules, requirement_closure, run_blocked, run_schemathesis

from cagerisk.cohort.manifest import load_manifest
from cagerisk.models.crossfit import read_deep_table
from cagerisk.models.served import positive_proba
from cagerisk.serving.bento import bentoml_environment, import_champion, serve
from cagerisk.serving.errors import ScoringInputError

pytestmark = pytest.mark.slow

TINY_SEED = 28
API_KEY = "test-key-8c1f"
MAX_FILE_MB = 1.0
MAX_REQUEST_MB = 3.0
# Tiny sizes; the code paths are the stages' own.
PARAMS = Path(__file__).resolve().parent / "radiomics_original.yaml"
STAGE_OVERRIDES = [
    # The study's protocol (F-test, Pearson, LASSO) keeps a handful of radiomics features, so the
    # fuzzed /score_features schema stays small; the default (every feature into the stack) is tested
    # through the stages in tests/models and served by the demo.
    "sweep=study",
    "radiomics.sequences=[t2]",
    f"radiomics.params.t2={PARAMS}",
    "compute=serial",
    "deep.inputs=[t2_disc,t2_vertebra]",
    "deep.trainer.max_epochs=1",
    "deep.patience=1",
    "deep.crossfit.folds=2",
    # Each cross-fitted DL-sign pipeline sees half the 8 training patients: too few for LASSO's inner CV.
    "sweep.selection_steps.dl=[impute]",
    "deep.preprocess_workers=0",
    "sweep.n_trials=3",
    "sweep.cv_folds=3",
    "sweep.pruner=null",
    "sweep.sampler_startup_trials=2",
    "sweep.log_trials=false",
    "selection.radiomics.lasso.cv=3",
    "selection.radiomics.lasso.n_alphas=10",
    "selection.deep.reduce.n_components=3",
    "classifier.include=[lr]",
]
# The T2 U-Net only, small and brief; its masks are not used for the pipeline's features (see above).
SEGMENT_OVERRIDES = [
    *[f"~segment.sequences.{seq}" for seq in ("ct", "t1", "t1ax", "t2ax")],
    "segment.masks=manual",
    # Enough steps on the tiny cohort's ~10 training volumes for every body and disc (6 epochs found none).
    "segment.sequences.t2.trainer.max_epochs=16",
    "segment.sequences.t2.trainer.check_val_every_n_epoch=8",
    "segment.sequences.t2.samples_per_volume=4",
    "segment.lr=0.01",
    "segment.torch_threads=1",
    "segment.min_val_dice=0",  # served whatever its accuracy: the test is the images-only path
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """Cohort -> segment (T2) -> radiomics -> deep -> signatures -> combined -> register, at tiny sizes."""
    from cagerisk.stages.cohort import run_cohort_stage
    from cagerisk.stages.combined import run_combined_stage
    from cagerisk.stages.deep import run_deep_stage
    from cagerisk.stages.radiomics import run_radiomics_stage
    from cagerisk.stages.register import run_register_stage
    from cagerisk.stages.segment import run_segment_stage
    from cagerisk.stages.signatures import run_signatures_stage

    tmp = tmp_path_factory.mktemp("e2e")
    # The tiny cohort with a seed that gives 4 + 2 + 2 patients of each outcome in train/val/test: the
    # signature search needs both outcomes in every cross-validation fold (tiny's own seed has 1).
    tiny = ["cohort=tiny", f"cohort.seed={TINY_SEED}"]
    run_cohort_stage(compose_serving_config(tmp, *tiny))
    cfg = compose_serving_config(tmp, *tiny, *STAGE_OVERRIDES, *SEGMENT_OVERRIDES)
    run_segment_stage(cfg)
    run_radiomics_stage(cfg)
    run_deep_stage(cfg)
    run_signatures_stage(cfg)
    run_combined_stage(cfg)
    result = run_register_stage(cfg)
    return cfg, tmp, result


@pytest.fixture(scope="module")
def server(trained):
    cfg, tmp, _ = trained
    env = bentoml_environment(
        extra={
            "CAGERISK_API_KEY": API_KEY,
            "CAGERISK_MAX_FILE_MB": str(MAX_FILE_MB),
            "CAGERISK_MAX_REQUEST_MB": str(MAX_REQUEST_MB),
            "MLFLOW_TRACKING_URI": str(cfg.tracking.uri),
        },
        home=tmp / "bentoml_home",
    )
    imported = import_champion(str(cfg.tracking.uri), env, build=True)
    tag = imported["bento"]
    with serve(tag, env, tmp / "bentoml-serve.log") as running:
        yield running, imported, tag


def client(url: str, key: str | None = API_KEY) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"X-API-Key": key} if key else {}, timeout=300.0)


def patient_row(cfg, split: str = "test") -> pd.Series:
    manifest = load_manifest(Path(str(cfg.paths.cohort)) / "manifest.csv")
    return manifest[manifest["split"] == split].iloc[0]


def clinical_of(row: pd.Series) -> dict:
    values = {
        k: row[k] for k in ("sex", "age", "bmi", "diagnosis", "n_levels", "osteoporosis", "followup_months", "fused_levels")
    }
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}


def upload(row: pd.Series, **replace) -> dict:
    """t2 image and mask of a patient as multipart files; file names carry the patient id on purpose."""
    pid = row["patient_id"]
    files = {
        "t2_image": (f"{pid}_t2.nii.gz", Path(row["t2_image"]).read_bytes(), "application/gzip"),
        "t2_mask": (f"{pid}_t2_mask.nii.gz", Path(row["t2_mask"]).read_bytes(), "application/gzip"),
    }
    for field, content in replace.items():
        if content is None:
            files.pop(field)
        else:
            files[field] = (f"{pid}_{field}.bin", content, "application/octet-stream")
    return files


def image_bytes(image: sitk.Image, tmp: Path, name: str) -> bytes:
    path = tmp / name
    sitk.WriteImage(image, str(path), useCompression=True)
    return path.read_bytes()


def check_score_equals_the_mlflow_model(server, trained):
    running, imported, _ = server
    cfg, _, result = trained
    row = patient_row(cfg)
    with client(running.url) as http:
        response = http.post(
            "/score", data={"clinical": json.dumps(clinical_of(row)), "patient_id": row["patient_id"]}, files=upload(row)
        )
    assert response.status_code == 200, response.text
    served = response.json()
    mlflow.set_tracking_uri(str(cfg.tracking.uri))
    model = mlflow.pyfunc.load_model("models:/cage-subsidence@champion")
    frame = pd.DataFrame(
        [{**clinical_of(row), "patient_id": row["patient_id"], "t2_image": row["t2_image"], "t2_mask": row["t2_mask"]}]
    )
    expected = model.predict(frame).iloc[0]
    assert expected["mode"] == "images"
    # No training/serving skew: the endpoint's probability is the registered model's.
    assert abs(served["probability"] - expected["probability"]) <= 1e-6
    assert abs(served["rad_sign"] - expected["rad_sign"]) <= 1e-6 and abs(served["dl_sign"] - expected["dl_sign"]) <= 1e-6
    assert served["risk_class"] == expected["risk_class"] and served["patient_id"] == row["patient_id"]
    # The images' DL-sign is the cross-fitted pipeline's on the deep stage's embeddings of the K fold networks
    # and, for this test patient, the signatures stage's own value (the mean of the fold pipelines).
    combined = joblib.load(Path(str(cfg.paths.models)) / "combined" / "model.joblib")
    deep = read_deep_table(Path(str(cfg.paths.features)) / "deep.parquet").features
    pipeline_dl = positive_proba(combined.dl_pipeline, deep.loc[[row["patient_id"]], combined.deep_features])[0]
    assert abs(served["dl_sign"] - pipeline_dl) <= 1e-6
    scores = pd.read_parquet(Path(str(cfg.paths.models)) / "signatures" / "scores.parquet").set_index("patient_id")
    assert abs(served["dl_sign"] - scores.loc[row["patient_id"], "dl_sign"]) <= 1e-6
    assert served["model_version"] == result.version == imported["mlflow_version"]
    assert served["threshold"] == pytest.approx(model.unwrap_python_model().spec.threshold)
    # Images only: the bundle's T2 U-Net draws the mask, in the service as in the registered model: the
    # same probability, or - where the briefly trained U-Net misses an ROI of the fused levels - the same
    # refusal, naming the image (the tiny cohort's U-Net is not accurate; the demo's is measured).
    with client(running.url) as http:
        alone = http.post("/score", data={"clinical": json.dumps(clinical_of(row))}, files=upload(row, t2_mask=None))
    try:
        expected_alone = model.predict(pd.DataFrame([{**clinical_of(row), "t2_image": row["t2_image"]}])).iloc[0]
    except Exception as err:  # the pyfunc raises what the service answers with a 422
        assert alone.status_code == 422 and alone.json()["field"] == "t2_image", alone.text
        assert "t2 U-Net" in alone.json()["error"] and "t2 U-Net" in str(err)
    else:
        assert alone.status_code == 200, alone.text
        assert abs(alone.json()["probability"] - expected_alone["probability"]) <= 1e-6
        # ...and the mask the segment stage wrote for this patient gives the same features.
        segmented = load_manifest(Path(str(cfg.paths.segment)) / "manifest.csv").set_index("patient_id")
        pred_mask = segmented.loc[row["patient_id"], "t2_mask_pred"]
        own = model.predict(pd.DataFrame([{**clinical_of(row), "t2_image": row["t2_image"], "t2_mask": pred_mask}])).iloc[0]
        assert abs(own["probability"] - expected_alone["probability"]) <= 1e-9


def check_radiomics_workers_give_the_same_features(trained):
    """/score's PyRadiomics on worker processes (as the service runs it) equals the in-process loop."""
    cfg, _, _ = trained
    row = patient_row(cfg)
    mlflow.set_tracking_uri(str(cfg.tracking.uri))
    model = mlflow.pyfunc.load_model("models:/cage-subsidence@champion").unwrap_python_model()
    assert len(model.spec.radiomics_rois) >= 2
    volumes = {seq: (row[f"{seq}_image"], row[f"{seq}_mask"]) for seq in model.spec.sequences}
    here = model._radiomics(volumes, row["fused_levels"])
    model.start_radiomics_workers(2)
    try:
        assert model.radiomics_pool is not None
        pooled = model._radiomics(volumes, row["fused_levels"])
        # A failing ROI names the field at fault, as in process.
        with pytest.raises(ScoringInputError, match="radiomics of ROI") as failed:
            model._radiomics(
                {seq: (image, "/nonexistent/mask.nii.gz") for seq, (image, _) in volumes.items()}, row["fused_levels"]
            )
        assert failed.value.field.endswith("_mask")
    finally:
        model.radiomics_pool.close()
    assert list(pooled) == list(here) and pooled == here


def check_score_features_batches_and_matches(server, trained):
    running, _, _ = server
    cfg, _, _ = trained
    with client(running.url) as http:
        meta = http.get("/metadata").json()
    needed = meta["expected_inputs"]["features"]
    manifest = load_manifest(Path(str(cfg.paths.cohort)) / "manifest.csv").set_index("patient_id", drop=False)
    rad = pd.read_parquet(Path(str(cfg.paths.features)) / "radiomics.parquet").set_index("patient_id")
    deep = read_deep_table(Path(str(cfg.paths.features)) / "deep.parquet").features  # one column set per fold model
    patients = list(manifest.index[:8])

    def item(pid: str) -> dict:
        features = {**rad.loc[pid, needed["radiomics"]].to_dict(), **deep.loc[pid, needed["deep"]].to_dict()}
        features = {k: (None if math.isnan(v) else float(v)) for k, v in features.items()}
        return {"patient_id": pid, "clinical": clinical_of(manifest.loc[pid]), "features": features}

    # Eight concurrent single-patient requests (adaptive batching merges them) and one batch of eight.
    with client(running.url) as http, concurrent.futures.ThreadPoolExecutor(8) as pool:
        single = list(pool.map(lambda p: http.post("/score_features", json={"items": [item(p)]}), patients))
        batch = http.post("/score_features", json={"items": [item(p) for p in patients]})
    assert all(r.status_code == 200 for r in single), [r.text for r in single if r.status_code != 200]
    assert batch.status_code == 200, batch.text
    # The compact form (one array per signature, in /metadata's order) scores the same.
    arrays = []
    for p in patients:
        named = item(p)
        values = [named["features"][n] for n in needed["radiomics"] + needed["deep"]]
        arrays.append(
            {
                "patient_id": p,
                "clinical": named["clinical"],
                **({"radiomics_values": values[: len(needed["radiomics"])]} if needed["radiomics"] else {}),
                **({"deep_values": values[len(needed["radiomics"]) :]} if needed["deep"] else {}),
            }
        )
    with client(running.url) as http:
        compact = http.post("/score_features", json={"items": arrays})
        both = http.post("/score_features", json={"items": [{**arrays[0], "features": item(patients[0])["features"]}]})
        neither = http.post("/score_features", json={"items": [{"clinical": arrays[0]["clinical"]}]})
    assert compact.status_code == 200, compact.text
    assert [r["probability"] for r in compact.json()] == [r["probability"] for r in batch.json()]
    assert both.status_code == 422 and both.json()["field"] == "items.0", both.text
    assert neither.status_code == 400 and neither.json()["field"] == "items.0", neither.text
    by_one = [r.json()[0] for r in single]
    assert [r["patient_id"] for r in by_one] == patients == [r["patient_id"] for r in batch.json()]
    np.testing.assert_allclose([r["probability"] for r in by_one], [r["probability"] for r in batch.json()], atol=1e-12)
    scores = pd.read_parquet(Path(str(cfg.paths.models)) / "combined" / "scores.parquet").set_index("patient_id")
    held_out = [i for i, p in enumerate(patients) if manifest.loc[p, "split"] != "train"]
    np.testing.assert_allclose(
        [by_one[i]["probability"] for i in held_out], scores.loc[[patients[i] for i in held_out], "combined"], atol=1e-9
    )


def check_metadata_docs_and_probes(server, trained):
    running, imported, _ = server
    cfg, _, result = trained
    with client(running.url) as http:
        meta = http.get("/metadata").json()
        docs = http.get("/docs.json").json()
        assert http.get("/healthz").status_code == 200 and http.get("/readyz").status_code == 200
    assert (meta["model_name"], meta["model_version"], meta["alias"]) == ("cage-subsidence", result.version, "champion")
    assert meta["training_data_sha256"] == result.training_data_sha256 == imported["training_data_sha256"]
    assert 0.0 < meta["threshold"] < 1.0
    t2 = meta["expected_inputs"]["images"]["fields"]["t2"]
    assert t2["mask_required"] is False and t2["mask_if_absent"] == "predicted by the U-Net"
    assert {"/score", "/score_features", "/metadata", "/healthz", "/readyz"} <= set(docs["paths"])
    # The OpenAPI says the mask is optional and who draws it when it is absent.
    form = docs["paths"]["/score"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    form = docs["components"]["schemas"][form["$ref"].split("/")[-1]] if "$ref" in form else form
    assert "t2_mask" not in form.get("required", []) and "t2_image" in form["required"]
    assert "U-Net segments the image" in json.dumps(form["properties"]["t2_mask"])


BAD_CLINICAL = [
    ({"age": float("nan")}, 422, "clinical.age"),
    ({"age": 250}, 422, "clinical.age"),
    ({"sex": "X"}, 422, "clinical.sex"),
    ({"fused_levels": "L9-L10"}, 422, "clinical.fused_levels"),
    ({"fused_levels": None}, 400, "clinical.fused_levels"),
]


def check_bad_input_gets_4xx_naming_the_field(server, trained, tmp_path: Path):
    running, _, _ = server
    cfg, _, _ = trained
    row = patient_row(cfg)
    clinical = clinical_of(row)
    mask = sitk.ReadImage(row["t2_mask"])
    shifted = sitk.Image(mask)
    shifted.SetOrigin(tuple(o + 7.0 for o in mask.GetOrigin()))
    cropped = mask[:, :, : max(mask.GetSize()[2] - 2, 1)]
    no_disc = sitk.Mask(mask, sitk.Less(mask, 11))  # every disc label removed: the disc ROI is empty
    huge = gzip.compress(b"\0" * 10) + np.random.default_rng(0).bytes(int(MAX_FILE_MB * 2**20) + 1000)
    cases = [
        ({"t2_image": None}, clinical, 400, "t2_image"),
        ({"t2_mask": image_bytes(shifted, tmp_path, "shifted.nii.gz")}, clinical, 422, "t2_mask"),
        ({"t2_mask": image_bytes(cropped, tmp_path, "cropped.nii.gz")}, clinical, 422, "t2_mask"),
        ({"t2_mask": image_bytes(no_disc, tmp_path, "nodisc.nii.gz")}, clinical, 422, "t2_mask"),
        ({"t2_image": b"\x1f\x8b\x08\x00corrupt gzip stream" * 30}, clinical, 422, "t2_image"),
        ({"t2_image": b"Patient notes, not an image.\n" * 40}, clinical, 422, "t2_image"),
        ({"t2_image": huge}, clinical, 413, "t2_image"),
        *[({}, {**clinical, **change}, status, field) for change, status, field in BAD_CLINICAL],
    ]
    with client(running.url) as http:
        for replace, values, status, field in cases:
            text = json.dumps({k: v for k, v in values.items() if v is not None}).replace('"NaN"', "NaN")
            response = http.post("/score", data={"clinical": text, "patient_id": row["patient_id"]}, files=upload(row, **replace))
            assert response.status_code == status, (replace.keys(), values, response.text)
            assert response.json()["field"] == field and field in response.json()["error"], response.text
        # The whole request over the limit: refused before the body is read.
        too_big = {"t2_image": ("a.bin", b"\0" * int(MAX_REQUEST_MB * 2**20 + 10), "application/octet-stream")}
        response = http.post("/score", data={"clinical": "{}"}, files=too_big)
        assert response.status_code == 413 and "request body" in response.text
        response = http.post("/score", data={"clinical": "{not json"}, files=upload(row))
        assert response.status_code == 400 and response.json()["field"] == "clinical"
        bad_features = http.post("/score_features", json={"items": [{"clinical": clinical, "features": {"x": 1.0}}]})
        assert bad_features.status_code == 400 and "features" in bad_features.text
        nan = http.post(
            "/score_features",
            content=b'{"items": [{"clinical": {"age": NaN}, "features": {}}]}',
            headers={"content-type": "application/json"},
        )
        assert nan.status_code == 422 and "age" in nan.text  # present but unusable
    # Without the API key: 401, except the probes.
    with client(running.url, key=None) as http:
        assert http.post("/score", data={"clinical": "{}"}).status_code == 401
        assert http.get("/metadata").status_code == 401
        assert http.get("/readyz").status_code == 200


def check_logs_hold_no_patient_identifier(server, trained):
    running, _, _ = server
    cfg, _, _ = trained
    log_text = running.log_text()
    assert "POST,path=/score" in log_text.replace(" ", "") or "/score" in log_text
    manifest = load_manifest(Path(str(cfg.paths.cohort)) / "manifest.csv")
    leaked = [pid for pid in manifest["patient_id"] if str(pid) in log_text]
    assert not leaked, f"patient ids in the server log: {leaked}"


def check_client_scores_images(server, trained, tmp_path: Path):
    """cagerisk.client.score_images gives what the route gives, and a typed error naming the field."""
    from cagerisk.client import CageRiskClient, InvalidInput

    running, _, _ = server
    cfg, _, _ = trained
    row = patient_row(cfg)
    images = {"t2_image": row["t2_image"], "t2_mask": row["t2_mask"]}
    with CageRiskClient(running.url, api_key=API_KEY) as api, client(running.url) as http:
        result = api.score_images(clinical_of(row), images, patient_id=row["patient_id"])
        direct = http.post("/score", data={"clinical": json.dumps(clinical_of(row))}, files=upload(row)).json()
        assert result["probability"] == pytest.approx(direct["probability"], abs=1e-12)
        with pytest.raises(InvalidInput) as bad:
            api.score_images(clinical_of(row), {**images, "t2_image": b"Patient notes, not an image.\n" * 40})
        assert bad.value.field == "t2_image"


def check_schemathesis_on_every_route(server, tmp_path: Path):
    """The image model's contract, /score included, fuzzed with every check (API key on)."""
    running, _, _ = server
    others = run_schemathesis(running.url, tmp_path, API_KEY, "--exclude-path", "/score", max_examples=10)
    assert others.returncode == 0, others.stdout[-6000:] + others.stderr[-2000:]
    # /score without positive_data_acceptance: that check expects any schema-valid request to be
    # accepted, but what makes an upload scorable (a NIfTI/NRRD volume whose mask lies on its grid and
    # holds the ROI of the fused levels) cannot be said in OpenAPI; random bytes get a documented 422.
    score = run_schemathesis(
        running.url,
        tmp_path,
        API_KEY,
        "--include-path",
        "/score",
        "--exclude-checks",
        "positive_data_acceptance",
        max_examples=10,
    )
    assert score.returncode == 0, score.stdout[-6000:] + score.stderr[-2000:]


def check_image_model_scores_with_only_its_requirements(trained, tmp_path: Path):
    """The image model (ViT-3D, PyRadiomics) loads and scores a patient's images where only its own
    requirements can be imported (no Lightning, Optuna or dask: see test_lean_model.py)."""
    cfg, _, result = trained
    mlflow.set_tracking_uri(str(cfg.tracking.uri))
    model_dir = Path(mlflow.artifacts.download_artifacts(result.model_uri, dst_path=str(tmp_path / "model")))
    requirements = (model_dir / "requirements.txt").read_text().splitlines()
    assert {"torch", "monai", "pyradiomics-bhklab"} <= {r.split("==")[0] for r in requirements}
    row = patient_row(cfg)
    rows = [{**clinical_of(row), "patient_id": "x", "t2_image": row["t2_image"], "t2_mask": row["t2_mask"]}]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    allowed = importable_modules(requirement_closure(requirements))
    assert not {"lightning", "optuna", "dask"} & allowed
    done = run_blocked(model_dir, allowed, tmp_path / "rows.json")
    assert done.returncode == 0, done.stderr[-4000:]
    blocked = json.loads(done.stdout.strip().splitlines()[-1])
    expected = mlflow.pyfunc.load_model(str(model_dir)).predict(pd.DataFrame(rows))
    assert blocked["probability"] == pytest.approx(float(expected["probability"].iloc[0]), abs=1e-9)


def test_served_bento_end_to_end(server, trained, tmp_path: Path):
    """One test (one xdist worker, one trained pipeline, one server) running every check in order."""
    check_score_equals_the_mlflow_model(server, trained)
    check_radiomics_workers_give_the_same_features(trained)
    check_score_features_batches_and_matches(server, trained)
    check_metadata_docs_and_probes(server, trained)
    check_bad_input_gets_4xx_naming_the_field(server, trained, tmp_path)
    check_client_scores_images(server, trained, tmp_path)
    check_schemathesis_on_every_route(server, tmp_path)
    check_image_model_scores_with_only_its_requirements(trained, tmp_path)
    check_logs_hold_no_patient_identifier(server, trained)
