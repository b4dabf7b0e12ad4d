"""The BentoML scoring endpoint: ``bentoml serve cagerisk.serving.service:CageRiskService``.

Routes
------
- ``POST /score``: multipart form: ``clinical`` (JSON object) and the NIfTI/NRRD files
  ``{sequence}_image`` / ``{sequence}_mask`` of one patient (the CT mask may be left out: the U-Net
  segments the CT). Answers ``ScoreResult``. Only for a model that scores images.
- ``POST /score_features``: JSON ``{"items": [FeatureRequest, ...]}`` (1 to max_batch_size patients)
  of precomputed features; requests that arrive while a batch is scored form the next batch.

Both request schemas are the loaded model's (required clinical values and features, types, ranges),
so the OpenAPI document (``/docs.json``) is the contract the service enforces; every 4xx/5xx has the
body ``ErrorBody`` ``{"error", "field"}``.
- ``GET /metadata``: model name, version and alias, threshold, expected inputs, training-data hash.
- ``GET /healthz``, ``GET /livez``, ``GET /readyz`` (BentoML's probes; ready once the model is loaded and the
  PyRadiomics workers have warmed),
  ``GET /docs.json`` (OpenAPI) and ``/`` (Swagger UI).

Bad input gets a 4xx whose message names the field: 400 missing or malformed, 411 chunked without
Content-Length, 413 too large, 503 overloaded (waited over ``max_latency_ms``), 422
present but unusable (unreadable image, mask off its image's grid, empty ROI, NaN or out-of-range
value), 401 without the API key when ``$CAGERISK_API_KEY`` (``serve.api_key_env``) is set. Logs hold
no patient identifier: ``patient_id`` is only echoed back, upload names are never used, and
validation errors are logged without the values that failed.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import inspect
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import orjson
import pandas as pd
from bentoml.exceptions import BentoMLException
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from threadpoolctl import threadpool_limits

from cagerisk.serving.errors import ScoringInputError, missing, too_large
from cagerisk.serving.inputs import IMAGE_SUFFIXES, check_clinical, sniff_image_format
from cagerisk.serving.model import FUSED_LEVELS, ID_COLUMN, CageRiskModel, image_field, mask_field
from cagerisk.serving.schemas import ErrorBody, ScoreResult, clinical_model, feature_request_models
from cagerisk.serving.settings import load_serve_settings
from cagerisk.serving.timeout import install as install_request_timeout
from cagerisk.serving.timeout import send_json
from cagerisk.serving.tracing import install as install_request_span_only

log = logging.getLogger("cagerisk.serving")
SETTINGS = load_serve_settings()
# Paths anyone may call: probes and docs. Everything else needs the API key when one is configured.
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics", "/", "/docs.json", "/schema.json"})
OPEN_PREFIXES = ("/static_content", "/assets")


# ---- logging without patient data ---------------------------------------------------------------


class RedactValidationDetail(logging.Filter):
    """BentoML logs every failed request with its traceback; a validation error's text quotes the
    input that failed (which may hold a patient identifier). Keep the error's type and where it
    failed, drop the values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or record.exc_info[1] is None:
            return True
        exc = record.exc_info[1]
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            where = [".".join(str(p) for p in e["loc"]) for e in exc.errors(include_input=False)]
            record.msg = f"{record.getMessage()}: {exc.error_count()} validation error(s) at {where[:10]}"
        elif isinstance(exc, BentoMLException) and exc.error_code < 500:
            record.msg = f"{record.getMessage()}: {int(exc.error_code)} {exc}"
        else:
            return True
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        return True


def redact_bentoml_logs() -> None:
    for name in ("bentoml._internal.server.http_app", "bentoml.serve", "bentoml"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactValidationDetail) for f in logger.filters):
            logger.addFilter(RedactValidationDetail())


redact_bentoml_logs()
# traffic.timeout (serve.timeout_s) without BentoML's per-request timer that keeps every request's
# context (OpenTelemetry span) alive for timeout_s seconds (cagerisk/serving/timeout.py).
install_request_timeout()
# OpenTelemetry's request span without a child span per body chunk (cagerisk/serving/tracing.py).
install_request_span_only()


# ---- ASGI guard: API key and request size, before any body is read ------------------------------


class RequestGuard:
    """Pure ASGI middleware: optional API key, and a body-size limit checked from Content-Length."""

    def __init__(self, app: Any, max_request_bytes: int, api_key_env: str) -> None:
        self.app = app
        self.max_request_bytes = int(max_request_bytes)
        self.api_key_env = api_key_env

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        key = os.environ.get(self.api_key_env)
        if key and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
            sent = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not sent or not hmac.compare_digest(sent.encode(), key.encode()):
                await send_json(send, 401, {"error": "missing or wrong API key (send it as X-API-Key)"})
                return
        if scope.get("method") == "POST":
            length = headers.get("content-length")
            if length is None:
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    await send_json(send, 411, {"error": "request body: send a Content-Length (chunked bodies are not accepted)"})
                    return
            elif not length.isdigit() or int(length) > self.max_request_bytes:
                mib = int(length) / 2**20 if length.isdigit() else float("nan")
                await send_json(
                    send,
                    413,
                    {"error": f"request body: {mib:.1f} MiB exceeds the upload limit of {self.max_request_bytes / 2**20:g} MiB"},
                )
                return
        await self.app(scope, receive, send)


# ---- the service -------------------------------------------------------------------------------


def _error(status: int, description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# Every status the guard or a route can answer, with its body (ErrorBody), for the OpenAPI document.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {401: _error(401, "API key missing or wrong (when the service has one)")}
POST_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error(400, "a required field is missing or malformed"),
    **AUTH_RESPONSES,
    411: _error(411, "chunked body without Content-Length"),
    413: _error(413, "request body (or one file) over the size limit"),
    422: _error(422, "a field is present but cannot be scored (wrong type, out of range, unreadable image)"),
}
FEATURE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **POST_RESPONSES,
    503: _error(503, "overloaded: the request waited longer than serve.batching.max_latency_ms"),
}

api_app = FastAPI(title="cage-subsidence")


@api_app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Body validation errors as ErrorBody: 400 when a field is missing or the body is not JSON, 422 else.

    The message names the field and what was expected, never the value that failed.
    """
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": "value_error"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = ".".join(loc) or "body"
    status = 400 if first.get("type") in ("missing", "json_invalid", "model_attributes_type", "dict_type") else 422
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return JSONResponse({"error": f"{field}: {first.get('msg', 'invalid')}{more}", "field": field}, status_code=status)


@api_app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own errors (a body that is not JSON, a wrong method) with the ErrorBody of every other error."""
    return JSONResponse({"error": str(exc.detail), "field": None}, status_code=exc.status_code, headers=exc.headers)


class JSONBodyRequest(Request):
    """A request whose JSON body orjson parses: the standard library's parser takes 7-12 ms for one
    patient's 11,495 feature values, orjson under 1 ms (arrays) to 3 ms (named). What orjson refuses
    (NaN or Infinity literals, which Python's json.dumps writes; lone surrogates; UTF-16) goes to the
    standard library as before, so such a body still gets its 422 naming the field. (orjson reads an
    integer past 64 bits as a float: beyond every range of the schema either way.)"""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:
                self._json = json.loads(body)
        return self._json


class JSONBodyRoute(APIRoute):
    """FastAPI's route, parsing JSON bodies with orjson (FastAPI's documented custom-request pattern)."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Any:
            return await handler(JSONBodyRequest(request.scope, request.receive))

        return route_handler


api_app.router.route_class = JSONBodyRoute


@dataclass
class FeatureBatch:
    """Patients of one /score_features request: required features as arrays in the spec's order."""

    radiomics: np.ndarray
    deep: np.ndarray
    clinical: list[dict[str, Any]]
    ids: list[str | None]

    def __len__(self) -> int:
        return len(self.clinical)

    @staticmethod
    def concat(parts: list[FeatureBatch]) -> FeatureBatch:
        if len(parts) == 1:
            return parts[0]
        return FeatureBatch(
            np.concatenate([p.radiomics for p in parts]),
            np.concatenate([p.deep for p in parts]),
            [c for p in parts for c in p.clinical],
            [i for p in parts for i in p.ids],
        )


class Overloaded(Exception):
    """A request waited longer than the batching latency bound before its batch started."""


class NaturalBatcher:
    """Requests that arrive while a batch is being scored form the next batch: no waiting window.

    Each batch takes every queued request (up to ``max_batch_size`` patients), so under load the
    model's fixed cost per call is shared, and an idle server scores a lone request at once. A request
    that waited longer than ``max_latency_ms`` is refused with 503 instead of queueing without bound.

    A batch is scored on the event loop itself: the compiled pipelines take about a millisecond, and
    every step of it holds the GIL, so a scoring thread ran no more in parallel and only added the
    hand-over of each batch and of the GIL between two threads (demo champion, one worker at
    concurrency 8: 199 -> 211 requests/s, server CPU 5.0 -> 4.7 ms a request; docs/serving.md).
    """

    def __init__(self, score: Any, max_batch_size: int, max_latency_ms: float) -> None:
        # score(list of requests) -> one result per patient, in order; len(request) = its patients
        self.score = score
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_wait = max_latency_ms / 1000.0
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None

    async def submit(self, rows: Any) -> list[Any]:
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((time.monotonic(), rows, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0][1])
            while not self.queue.empty() and size < self.max_batch_size:
                entry = self.queue.get_nowait()
                batch.append(entry)
                size += len(entry[1])
            now = time.monotonic()
            live = []
            for queued, rows, future in batch:
                if now - queued > self.max_wait:
                    future.set_exception(Overloaded())
                else:
                    live.append((rows, future))
            if not live:
                continue
            try:
                out = self.score([rows for rows, _ in live])
            except Exception:  # one bad request must not fail the others: score them one by one
                for rows, future in live:
                    try:
                        result = self.score([rows])
                    except Exception as err:  # noqa: BLE001 - handed to the request's own handler
                        if not future.done():
                            future.set_exception(err)
                    else:
                        if not future.done():
                            future.set_result(result)
            else:
                start = 0
                for rows, future in live:
                    if not future.done():  # a client that went away cancelled its future
                        future.set_result(out[start : start + len(rows)])
                    start += len(rows)
            # Let the answered requests write their responses (and new ones queue) before the next batch.
            await asyncio.sleep(0)


@bentoml.service(
    name="cage_subsidence",
    workers=SETTINGS.workers,
    traffic={"timeout": SETTINGS.timeout_s},
    # Defaults of `bentoml serve` (its --host/--port override them): loopback unless configured.
    http={"host": SETTINGS.host, "port": SETTINGS.port},
)
@bentoml.asgi_app(api_app, path="/")
class CageRiskService:
    """Cage-subsidence risk after lumbar interbody fusion, from CT, MRI and clinical values."""

    # The BentoML store's import of the registry's champion (`cagerisk.serving.bento`); packed into
    # the bento. With CAGERISK_MODEL_URI set the service loads from the MLflow registry instead.
    bento_model = bentoml.models.BentoModel(SETTINGS.bento_model) if SETTINGS.model_uri is None else None

    def __init__(self) -> None:
        import mlflow.pyfunc

        started = time.perf_counter()
        # One BLAS thread in this process: scoring multiplies a few rows by the model's weights, where
        # OpenBLAS's threads only wait for each other, and on a loaded machine for the cores (demo
        # model, load 7 on 2 cores: 28 ms instead of 63 ms per call). torch (U-Net, ViT) has its own
        # thread pool, and PyRadiomics runs in worker processes.
        threadpool_limits(limits=1, user_api="blas")
        if SETTINGS.model_uri is not None:
            self.pyfunc = mlflow.pyfunc.load_model(SETTINGS.model_uri)
            self.source = {"source": "mlflow", "model_uri": SETTINGS.model_uri}
            self.version = _registry_version(SETTINGS.model_uri)
        else:
            stored = self.bento_model
            self.pyfunc = bentoml.mlflow.load_model(stored)
            self.source = {"source": "bentoml", "bento_model": str(stored.tag), **dict(stored.info.labels)}
            self.version = str(self.source.get("mlflow_version") or "unknown")
        self.model: CageRiskModel = self.pyfunc.unwrap_python_model()
        self.spec = self.model.spec
        self.image_lock = threading.Lock()
        # Scoring calls the unwrapped model: the request was validated against the model's own
        # requirements already (its OpenAPI schema below), MLflow's per-call schema enforcement and
        # DataFrame round trips would only add latency.
        self.batcher = NaturalBatcher(self._score_batches, SETTINGS.max_batch_size, SETTINGS.max_latency_ms)
        self._add_model_routes()
        self.model.start_radiomics_workers(SETTINGS.radiomics_processes)
        freeze_loaded_objects()
        log.info("model loaded in %.1f s (%s)", time.perf_counter() - started, self.source.get("source"))

    def __is_ready__(self) -> bool:
        """``/readyz``: the model is loaded and the PyRadiomics workers have imported PyRadiomics (1-3 s
        of CPU each after loading), so a load balancer sends no image before the workers can take it."""
        model = getattr(self, "model", None)
        return model is not None and model.radiomics_workers_ready()

    # ---- routes whose schema is the loaded model's ------------------------------------------------

    def _add_model_routes(self) -> None:
        """``/score_features`` and ``/score`` with request schemas of the loaded model (required fields,
        types, ranges), so that the OpenAPI document states what the service enforces."""
        spec = self.spec
        groups = {"radiomics": list(spec.radiomics_features), "deep": list(spec.deep_features)}
        item_model, batch_model = feature_request_models(list(spec.clinical_variables), groups, SETTINGS.max_batch_size)
        self.item_model = item_model
        service = self

        async def score_features(request: batch_model) -> list[ScoreResult]:  # type: ignore[valid-type]
            return await service.score_features(request)

        score_features.__doc__ = (
            "Score patients from precomputed features (GET /metadata lists them); concurrent requests "
            "are scored together in batches."
        )
        score_features.__signature__ = inspect.Signature(  # FastAPI reads the body model from here
            [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=batch_model)],
            return_annotation=list[ScoreResult],
        )
        _replace_route("/score_features")
        api_app.router.add_api_route(
            "/score_features",
            score_features,
            methods=["POST"],
            response_model=list[ScoreResult],
            responses=FEATURE_RESPONSES,
            summary="Score patients from precomputed features",
        )
        # A model without image scoring (no ViT-3D bundle) has no /score: GET /metadata says why.
        _replace_route("/score")
        if spec.image_scoring:
            self._add_image_route()

    def _add_image_route(self) -> None:
        spec = self.spec
        service = self
        clinical_schema = clinical_model([*spec.clinical_variables, FUSED_LEVELS], name="ImageClinicalValues")
        params = [
            inspect.Parameter(
                "clinical",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=str,
                default=Form(
                    ...,
                    description=f"JSON object of clinical values (schema {clinical_schema.__name__}: required "
                    f"{[*spec.clinical_variables, FUSED_LEVELS]})",
                ),
            ),
            inspect.Parameter(
                "patient_id",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=str | None,
                default=Form(None, max_length=256, description="echoed back; never logged"),
            ),
        ]
        for seq in spec.sequences:
            params.append(
                inspect.Parameter(
                    image_field(seq),
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=UploadFile,
                    default=File(..., description=f"{seq} image (NIfTI or NRRD)"),
                )
            )
            optional = spec.mask_optional(seq)
            params.append(
                inspect.Parameter(
                    mask_field(seq),
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=UploadFile | None if optional else UploadFile,
                    default=File(
                        None if optional else ...,
                        description=f"{seq} label map"
                        + (f"; optional: when absent, the {seq} U-Net segments the image" if optional else ""),
                    ),
                )
            )

        def score(**kwargs: Any) -> Any:
            return service.score(**kwargs)

        score.__doc__ = "Score one patient: images and masks as files, clinical values as a JSON form field."
        score.__signature__ = inspect.Signature(params, return_annotation=ScoreResult)
        _replace_route("/score")
        api_app.router.add_api_route(
            "/score",
            score,
            methods=["POST"],
            response_model=ScoreResult,
            responses=POST_RESPONSES,
            summary="Score one patient from images, masks and clinical values",
        )

    # ---- scoring ---------------------------------------------------------------------------

    def _results(self, out: pd.DataFrame) -> list[ScoreResult]:
        return [
            ScoreResult(
                patient_id=row.patient_id,
                probability=float(row.probability),
                rad_sign=float(row.rad_sign),
                dl_sign=float(row.dl_sign),
                risk_class=str(row.risk_class),
                threshold=float(row.threshold),
                model_version=self.version,
            )
            for row in out.itertuples(index=False)
        ]

    def _score_batches(self, parts: list[FeatureBatch]) -> list[dict[str, Any]]:
        """One result dict per patient of the batch, in order, with ScoreResult's fields (written as
        JSON as they are)."""
        batch = FeatureBatch.concat(parts)
        out = self.model.score_arrays(batch.radiomics, batch.deep, batch.clinical, batch.ids, as_columns=True)
        columns = {
            "patient_id": list(out["patient_id"]),
            "probability": np.asarray(out["probability"], dtype=float).tolist(),
            "rad_sign": np.asarray(out["rad_sign"], dtype=float).tolist(),
            "dl_sign": np.asarray(out["dl_sign"], dtype=float).tolist(),
            "risk_class": np.asarray(out["risk_class"], dtype=str).tolist(),
            "threshold": np.asarray(out["threshold"], dtype=float).tolist(),
        }
        return [{**{k: v[i] for k, v in columns.items()}, "model_version": self.version} for i in range(len(batch))]

    def _feature_batch(self, request: Any) -> FeatureBatch:
        """The request's patients as arrays: pydantic checked every value's type and range already."""
        spec = self.spec
        n_rad = len(spec.radiomics_features)
        items = request.items
        radiomics = np.empty((len(items), n_rad))
        deep = np.empty((len(items), len(spec.deep_features)))
        for i, item in enumerate(items):
            if item.features is not None:
                # The fields in the model's declared order: radiomics then deep features (None -> NaN).
                values = np.array(list(item.features.__dict__.values()), dtype=np.float64)
                radiomics[i], deep[i] = values[:n_rad], values[n_rad:]
            else:
                if n_rad:
                    radiomics[i] = _float_array(item.radiomics_values)
                if spec.deep_features:
                    deep[i] = _float_array(item.deep_values)
        clinical = [{k: getattr(item.clinical, k) for k in spec.clinical_variables} for item in items]
        return FeatureBatch(radiomics, deep, clinical, [item.patient_id for item in items])

    async def score_features(self, request: Any) -> Any:
        rows = self._feature_batch(request)
        try:
            out = await self.batcher.submit(rows)
        except ScoringInputError as err:
            return JSONResponse({"error": str(err), "field": err.field}, status_code=int(err.status))
        except ValueError as err:  # values the checks passed but the pipelines cannot take
            log.warning("/score_features: the model refused a checked request (%s)", type(err).__name__)
            return JSONResponse({"error": "features: values the model cannot score", "field": "features"}, status_code=422)
        except Overloaded:
            return JSONResponse(
                {"error": f"overloaded: waited over {SETTINGS.max_latency_ms} ms; retry later", "field": None},
                status_code=503,
            )
        # The results are ScoreResult's fields, built by _score_batches: written as they are,
        # without FastAPI validating them again (about 5 ms a request with pandas' itertuples).
        return Response(orjson.dumps(out), media_type="application/json")

    def score(self, clinical: str = "{}", patient_id: str | None = None, **uploads: UploadFile | None) -> Any:
        """Score one patient from images (the /score route of a model that scores images)."""
        started = time.perf_counter()
        try:
            values = _parse_clinical(clinical)
            checked = check_clinical(values, [*self.spec.clinical_variables, FUSED_LEVELS])
            for seq in self.spec.sequences:
                if uploads.get(image_field(seq)) is None:
                    raise missing(image_field(seq), f"the {seq} image is required (NIfTI or NRRD file)")
                if uploads.get(mask_field(seq)) is None and not self.spec.mask_optional(seq):
                    raise missing(mask_field(seq), f"the {seq} mask (label map) is required (NIfTI or NRRD file)")
            with tempfile.TemporaryDirectory(prefix="cagerisk-upload-") as tmp:
                used = [*self.spec.clinical_variables, FUSED_LEVELS]
                row: dict[str, Any] = {ID_COLUMN: patient_id, **{k: checked[k] for k in used}}
                for field, upload in uploads.items():
                    if upload is None:
                        continue
                    row[field] = str(_stage_upload(upload, field, Path(tmp)))
                # One image scoring at a time per worker: each already uses every core (torch, ITK).
                with self.image_lock:
                    out = self.model.score_rows([row])
        except ScoringInputError as err:
            log.info("/score refused: %s (%d)", err.field, err.status)
            return JSONResponse({"error": str(err), "field": err.field}, status_code=int(err.status))
        log.info("scored 1 patient from images in %.2f s", time.perf_counter() - started)
        return self._results(out)[0]

    @api_app.get("/metadata", responses=AUTH_RESPONSES)
    def metadata(self) -> dict[str, Any]:
        """Served model: name, version, alias, threshold, expected inputs, training-data hash."""
        return {
            "model_name": SETTINGS.model_name,
            "model_version": self.version,
            "alias": self.source.get("mlflow_alias", SETTINGS.champion_alias if SETTINGS.model_uri is None else None),
            "loaded_from": self.source,
            "threshold": self.spec.threshold,
            "threshold_rule": self.spec.info.get("threshold_rule", "Youden index on the validation split"),
            "training_data_sha256": self.spec.training_data_sha256,
            "expected_inputs": self.spec.expected_inputs(),
            "clinical_schema": clinical_model(list(self.spec.clinical_variables)).model_json_schema(),
            "limits": {
                "max_request_mb": SETTINGS.max_request_mb,
                "max_file_mb": SETTINGS.max_file_mb,
                "max_batch_size": SETTINGS.max_batch_size,
            },
            "library_versions": self.spec.library_versions,
            "info": self.spec.info,
        }


def _float_array(values: list[float | None]) -> np.ndarray:
    """A validated value list as float64, None as NaN (np.fromiter: 0.2 ms for 11,407 values, np.array 0.33 ms;
    it refuses None, so a list with a missing value takes np.array)."""
    try:
        return np.fromiter(values, dtype=np.float64, count=len(values))
    except TypeError:
        return np.array(values, dtype=np.float64)


def freeze_loaded_objects() -> int:
    """Move everything alive after loading (the model, torch, MLflow, BentoML: ~700,000 objects for the
    demo champion) out of reach of Python's cyclic garbage collector (`gc.freeze`).

    They live as long as the worker, yet every full collection traversed them all: 150-400 ms during
    which the event loop answered nothing (seven in a demo champion worker's first minute under load,
    measured with `gc.callbacks`), enough to set the p99 of a few hundred requests. Reference counting
    still frees them; only reference cycles among them would stay.
    Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def _replace_route(path: str) -> None:
    """Drop the route of ``path`` a previous service instance of this process added, if any."""
    api_app.router.routes[:] = [r for r in api_app.router.routes if getattr(r, "path", None) != path]


def _registry_version(uri: str) -> str:
    """The version number behind ``models:/name/3`` or ``models:/name@alias``."""
    tail = uri.rstrip("/").rsplit("/", 1)[-1]
    if tail.isdigit():
        return tail
    if uri.startswith("models:/") and "@" in uri:
        from mlflow.tracking import MlflowClient

        name, alias = uri.removeprefix("models:/").split("@", 1)
        try:
            return str(MlflowClient().get_model_version_by_alias(name, alias).version)
        except Exception:  # noqa: BLE001 - the version is for display; scoring does not depend on it
            log.warning("could not resolve %s to a version", uri)
    return "unknown"


CageRiskService.add_asgi_middleware(RequestGuard, max_request_bytes=SETTINGS.max_request_bytes, api_key_env=SETTINGS.api_key_env)


def _parse_clinical(text: str) -> dict[str, Any]:
    try:
        values = json.loads(text or "{}")
    except json.JSONDecodeError as err:
        raise ScoringInputError("clinical", f"not valid JSON ({err.msg} at position {err.pos})", HTTPStatus.BAD_REQUEST) from None
    if not isinstance(values, dict):
        raise ScoringInputError("clinical", "expected a JSON object of clinical values", HTTPStatus.BAD_REQUEST)
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ScoringInputError(f"clinical.{key}", "is NaN or infinite; expected a finite number")
    return values


def _stage_upload(upload: UploadFile, field: str, folder: Path) -> Path:
    """Check an upload's size and content; copy it under a name whose suffix SimpleITK reads.

    The uploaded file name is never used (it may carry a patient identifier); the content decides.
    """
    size = upload.size if upload.size is not None else _spooled_size(upload)
    if size > SETTINGS.max_file_bytes:
        raise too_large(field, f"file of {size / 2**20:.1f} MiB exceeds the limit of {SETTINGS.max_file_mb:g} MiB per file")
    if size == 0:
        raise ScoringInputError(field, "empty file; expected a NIfTI or NRRD image")
    raw = folder / f"{field}.upload"
    upload.file.seek(0)
    with raw.open("wb") as out:
        shutil.copyfileobj(upload.file, out)
    kind = sniff_image_format(raw)
    if kind is None:
        raise ScoringInputError(field, "not a NIfTI (.nii, .nii.gz) or NRRD (.nrrd) file")
    return raw.rename(folder / f"{field}{IMAGE_SUFFIXES[kind]}")


def _spooled_size(upload: UploadFile) -> int:
    upload.file.seek(0, os.SEEK_END)
    size = upload.file.tell()
    upload.file.seek(0)
    return size
