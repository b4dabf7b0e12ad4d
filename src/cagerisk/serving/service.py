"""The BentoML scoring endpoint: ``bentoml serve cagerisk.serving.service:CageRiskService``.

Routes
------
- ``POST /score``: multipart form: ``clinical`` (JSON object) and the NIfTI/NRRD files
  ``{sequence}_image`` / ``{sequence}_mask`` of one patient (the CT mask may be left out: the U-Net
  segments the CT). Answers ``ScoreResult``.
- ``POST /score_features``: JSON ``{"items": [FeatureRequest, ...]}`` of precomputed features;
  concurrent requests are merged by BentoML's adaptive batching.
- ``GET /metadata``: model name, version and alias, threshold, expected inputs, training-data hash.
- ``GET /healthz``, ``GET /livez``, ``GET /readyz`` (BentoML's probes; ready once the model is loaded),
  ``GET /docs.json`` (OpenAPI) and ``/`` (Swagger UI).

Bad input gets a 4xx whose message names the field: 400 missing or malformed, 413 too large, 422
present but unusable (unreadable image, mask off its image's grid, empty ROI, NaN or out-of-range
value), 401 without the API key when ``$CAGERISK_API_KEY`` (``serve.api_key_env``) is set. Logs hold
no patient identifier: ``patient_id`` is only echoed back, upload names are never used, and
validation errors are logged without the values that failed.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import bentoml
import pandas as pd
from bentoml.exceptions import BentoMLException
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from cagerisk.serving.errors import ScoringInputError, missing, too_large
from cagerisk.serving.inputs import IMAGE_SUFFIXES, check_clinical, sniff_image_format
from cagerisk.serving.model import FUSED_LEVELS, ID_COLUMN, CageRiskModel, image_field, mask_field
from cagerisk.serving.schemas import ActiveModel, ClinicalValues, FeatureRequest, ScoreResult
from cagerisk.serving.settings import load_serve_settings

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
                await _json_response(send, 401, {"error": "missing or wrong API key (send it as X-API-Key)"})
                return
        if scope.get("method") == "POST":
            length = headers.get("content-length")
            if length is None:
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    await _json_response(send, 411, {"error": "request body: send a Content-Length (chunked bodies are not accepted)"})
                    return
            elif not length.isdigit() or int(length) > self.max_request_bytes:
                mib = int(length) / 2**20 if length.isdigit() else float("nan")
                await _json_response(
                    send,
                    413,
                    {"error": f"request body: {mib:.1f} MiB exceeds the upload limit of {self.max_request_bytes / 2**20:g} MiB"},
                )
                return
        await self.app(scope, receive, send)


async def _json_response(send: Any, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


# ---- the service -------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    error: str
    field: str | None = None


def http_error(err: ScoringInputError) -> BentoMLException:
    return BentoMLException(str(err), error_code=err.status)


api_app = FastAPI(title="cage-subsidence")


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
        if SETTINGS.model_uri is not None:
            self.pyfunc = mlflow.pyfunc.load_model(SETTINGS.model_uri)
            self.source = {"source": "mlflow", "model_uri": SETTINGS.model_uri}
        else:
            stored = self.bento_model
            self.pyfunc = bentoml.mlflow.load_model(stored)
            self.source = {"source": "bentoml", "bento_model": str(stored.tag), **dict(stored.info.labels)}
        self.model: CageRiskModel = self.pyfunc.unwrap_python_model()
        self.spec = self.model.spec
        self.version = str(self.source.get("mlflow_version") or _version_from_uri(SETTINGS.model_uri) or "unknown")
        ActiveModel.spec = self.spec
        self.image_lock = threading.Lock()
        log.info("model loaded in %.1f s (%s)", time.perf_counter() - started, self.source.get("source"))

    def __is_ready__(self) -> bool:
        return getattr(self, "model", None) is not None

    # ---- scoring ---------------------------------------------------------------------------

    def _predict(self, frame: pd.DataFrame) -> list[ScoreResult]:
        from mlflow.exceptions import MlflowException

        try:
            out = self.pyfunc.predict(frame)
        except ScoringInputError as err:
            raise http_error(err) from None
        except MlflowException as err:  # the signature refused the input
            raise BentoMLException(f"input does not match the model signature: {err.message}", error_code=HTTPStatus.BAD_REQUEST) from None
        return self._results(out)

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

    # /score is a FastAPI route on the service (BentoML's ASGI integration) rather than a
    # @bentoml.api: BentoML's multipart parser fetches a URL given in place of a file (a server-side
    # request to anywhere, and a 500 when it fails) and has no optional file fields.
    @api_app.post(
        "/score",
        response_model=ScoreResult,
        responses={
            400: {"model": ErrorBody, "description": "a required field is missing or malformed"},
            401: {"model": ErrorBody, "description": "API key missing or wrong"},
            413: {"model": ErrorBody, "description": "upload over the size limit"},
            422: {"model": ErrorBody, "description": "a field is present but cannot be scored"},
        },
        summary="Score one patient from images, masks and clinical values",
    )
    def score(
        self,
        clinical: str = Form("{}", description="JSON object of clinical values incl. fused_levels (see ClinicalValues)"),
        patient_id: str | None = Form(None, description="echoed back; never logged"),
        ct_image: UploadFile | None = File(None, description="CT (NIfTI or NRRD)"),
        ct_mask: UploadFile | None = File(None, description="CT label map; optional: the U-Net segments the CT"),
        t1_image: UploadFile | None = File(None, description="sagittal T1"),
        t1_mask: UploadFile | None = File(None, description="sagittal T1 label map"),
        t2_image: UploadFile | None = File(None, description="sagittal T2"),
        t2_mask: UploadFile | None = File(None, description="sagittal T2 label map"),
        t1ax_image: UploadFile | None = File(None, description="axial T1"),
        t1ax_mask: UploadFile | None = File(None, description="axial T1 label map"),
        t2ax_image: UploadFile | None = File(None, description="axial T2"),
        t2ax_mask: UploadFile | None = File(None, description="axial T2 label map"),
    ) -> Any:
        """Score one patient: images and masks as files, clinical values as a JSON form field."""
        started = time.perf_counter()
        uploads = {
            "ct_image": ct_image, "ct_mask": ct_mask, "t1_image": t1_image, "t1_mask": t1_mask,
            "t2_image": t2_image, "t2_mask": t2_mask, "t1ax_image": t1ax_image, "t1ax_mask": t1ax_mask,
            "t2ax_image": t2ax_image, "t2ax_mask": t2ax_mask,
        }
        try:
            values = _parse_clinical(clinical)
            if not self.spec.image_scoring:
                raise missing("images", f"this model scores precomputed features only ({self.spec.image_scoring_note}); use /score_features")
            checked = check_clinical(values, [*self.spec.clinical_variables, FUSED_LEVELS])
            for seq in self.spec.sequences:
                if uploads[image_field(seq)] is None:
                    raise missing(image_field(seq), f"the {seq} image is required (NIfTI or NRRD file)")
                if uploads[mask_field(seq)] is None and not self.spec.mask_optional(seq):
                    raise missing(mask_field(seq), f"the {seq} mask (label map) is required (NIfTI or NRRD file)")
            with tempfile.TemporaryDirectory(prefix="cagerisk-upload-") as tmp:
                used = [*self.spec.clinical_variables, FUSED_LEVELS]
                row: dict[str, Any] = {ID_COLUMN: patient_id, **{k: checked[k] for k in used}}
                for field, upload in uploads.items():
                    if upload is None or field.rsplit("_", 1)[0] not in self.spec.sequences:
                        continue
                    row[field] = str(_stage_upload(upload, field, Path(tmp)))
                # One image scoring at a time per worker: each already uses every core (torch, ITK).
                with self.image_lock:
                    out = self.pyfunc.predict(pd.DataFrame([row]))
        except ScoringInputError as err:
            log.info("/score refused: %s (%d)", err.field, err.status)
            return JSONResponse({"error": str(err), "field": err.field}, status_code=int(err.status))
        log.info("scored 1 patient from images in %.2f s", time.perf_counter() - started)
        return self._results(out)[0]

    @bentoml.api(
        route="/score_features",
        batchable=True,
        max_batch_size=SETTINGS.max_batch_size,
        max_latency_ms=SETTINGS.max_latency_ms,
    )
    def score_features(self, items: list[FeatureRequest]) -> list[ScoreResult]:
        """Score patients from precomputed features; requests are validated one by one, then batched."""
        used = self.spec.clinical_variables
        rows = []
        for item in items:
            clinical = check_clinical(item.clinical.given(), used)  # normalised types (validated already)
            rows.append({ID_COLUMN: item.patient_id, **{k: clinical[k] for k in used}, **item.features})
        frame = pd.DataFrame(rows)
        feature_columns = [*self.spec.radiomics_features, *self.spec.deep_features]
        frame[feature_columns] = frame[feature_columns].astype("float64")
        return self._predict(frame)

    @api_app.get("/metadata")
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
            "clinical_schema": ClinicalValues.model_json_schema(),
            "limits": {"max_request_mb": SETTINGS.max_request_mb, "max_file_mb": SETTINGS.max_file_mb},
            "library_versions": self.spec.library_versions,
            "info": self.spec.info,
        }


CageRiskService.add_asgi_middleware(
    RequestGuard, max_request_bytes=SETTINGS.max_request_bytes, api_key_env=SETTINGS.api_key_env
)


def _version_from_uri(uri: str | None) -> str | None:
    if not uri:
        return None
    tail = uri.rstrip("/").rsplit("/", 1)[-1]
    return tail if tail.isdigit() else None


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
