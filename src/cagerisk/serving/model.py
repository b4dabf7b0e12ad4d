"""The served model: one MLflow pyfunc from images, masks and clinical values to a cage-subsidence risk.

``CageRiskModel`` wraps the training code, never a copy of it:

- every mask not sent is drawn by the segment stage's U-Net of that sequence (``Segmenter``: CT and
  sagittal bodies and discs, axial muscles), so scoring needs images only;
- radiomics are PyRadiomics' features computed by the radiomics stage's own ``extract_roi`` with the
  parameter files the stage used (stored in the bundle);
- deep features are the ViT-3D embeddings of the deep stage's ``DeepEmbedder`` (same MONAI
  transforms);
- Rad-sign, DL-sign, the combined probability and the risk class come from the combined stage's
  ``CombinedModel`` at the threshold chosen on the validation split.

Everything the model reads lives in its bundle directory (an MLflow artifact): nothing under
``data/`` is referenced at scoring time.

Input: a DataFrame, one row per patient, with the clinical values and either the precomputed
features (the columns listed in ``spec.radiomics_features`` and ``spec.deep_features``) or image and
mask paths (``{sequence}_image``, ``{sequence}_mask``; a mask is optional where the bundle holds
that sequence's U-Net) plus
``fused_levels``. Output: ``patient_id, probability, rad_sign, dl_sign, risk_class, threshold, mode``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import joblib
import mlflow.pyfunc
import numpy as np
import pandas as pd
import yaml

from cagerisk.cohort.schema import CLINICAL_NAMES, roi_label_values, sequence_rois
from cagerisk.models.served import RISK_HIGH, RISK_LOW
from cagerisk.serving.errors import ScoringInputError, missing
from cagerisk.serving.features import pipeline_inputs
from cagerisk.serving.inputs import (
    FEATURE_LIMIT,
    FUSED_LEVELS,
    INTEGER_CLINICAL,
    check_clinical,
    check_features,
    check_mask,
    check_roi_present,
    read_checked_image,
)

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "cagerisk-serving-1"
SPEC_FILE = "spec.json"
COMBINED_FILE = "combined.joblib"
SEGMENT_FILE = "segment_unet.pt"
DEEP_FILE = "deep_vit3d.pt"
RADIOMICS_DIR = "radiomics"
ID_COLUMN = "patient_id"
# How far the compiled pipelines may be from scikit-learn's on the check at load (they do the same
# float operations: the differences seen are 0 to a few 1e-17).
COMPILED_TOLERANCE = 1e-12
OUTPUT_COLUMNS = ("patient_id", "probability", "rad_sign", "dl_sign", "risk_class", "threshold", "mode")
MODE_FEATURES, MODE_IMAGES = "features", "images"
# Fields of a row that are not features.
NON_FEATURE_COLUMNS = frozenset({ID_COLUMN, FUSED_LEVELS, *CLINICAL_NAMES})


def image_field(sequence: str) -> str:
    return f"{sequence}_image"


def mask_field(sequence: str) -> str:
    return f"{sequence}_mask"


def segment_file(sequence: str) -> str:
    """The bundle's U-Net file of a sequence (the CT's keeps its name from before MRI U-Nets)."""
    return SEGMENT_FILE if sequence == "ct" else f"segment_unet_{sequence}.pt"


@dataclass
class ModelSpec:
    """What the model expects and how it was made; stored as ``spec.json`` and served by ``/metadata``."""

    radiomics_features: list[str]
    deep_features: list[str]
    clinical_variables: list[str]
    threshold: float
    radiomics_rois: list[list[str]]
    deep_rois: list[list[str]]
    ct_segmentation: bool
    image_scoring: bool
    image_scoring_note: str = ""
    n_radiomics_columns: int = 0
    n_deep_columns: int = 0
    radiomics_settings_sha256: dict[str, str] = field(default_factory=dict)
    library_versions: dict[str, str] = field(default_factory=dict)
    training_data_sha256: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    format: str = BUNDLE_FORMAT
    # Sequences whose U-Net the bundle holds (masks optional); a spec from before MRI U-Nets has none
    # here and ``ct_segmentation`` for the CT.
    segmented_sequences: list[str] = field(default_factory=list)

    @property
    def sequences(self) -> list[str]:
        """Sequences whose image (and mask) image scoring needs, in the study's order."""
        wanted = {seq for seq, _ in self.radiomics_rois} | {seq for seq, _ in self.deep_rois}
        return [seq for seq in dict.fromkeys(s for s, _ in sequence_rois()) if seq in wanted]

    def rois_of(self, sequence: str) -> list[str]:
        rois = [roi for seq, roi in self.radiomics_rois if seq == sequence]
        rois += [roi for seq, roi in self.deep_rois if seq == sequence and roi not in rois]
        return rois

    def mask_optional(self, sequence: str) -> bool:
        return sequence in self.segmented_sequences or (sequence == "ct" and self.ct_segmentation)

    def expected_inputs(self) -> dict[str, Any]:
        """The inputs of both modes, for callers (``/metadata``) and the docs."""
        return {
            "clinical_required": list(self.clinical_variables),
            "clinical_optional": [c for c in CLINICAL_NAMES if c not in self.clinical_variables],
            "images": {
                "available": self.image_scoring,
                "note": self.image_scoring_note,
                "fields": {
                    seq: {
                        "image": image_field(seq),
                        "mask": mask_field(seq),
                        "mask_required": not self.mask_optional(seq),
                        "mask_if_absent": "predicted by the U-Net" if self.mask_optional(seq) else None,
                        "rois": self.rois_of(seq),
                    }
                    for seq in self.sequences
                },
                "clinical_extra": [FUSED_LEVELS],
            },
            "features": {
                "radiomics": list(self.radiomics_features),
                "deep": list(self.deep_features),
            },
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        data = json.loads(text)
        if data.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"not a {BUNDLE_FORMAT} model spec (format {data.get('format')!r})")
        return cls(**data)


def load_radiomics_params(bundle: Path) -> dict[str, dict[str, Any]]:
    folder = bundle / RADIOMICS_DIR
    return {p.stem: yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


class CageRiskModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc of the whole scoring path (see the module docstring)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.load_bundle(context.artifacts["bundle"])

    def load_bundle(self, bundle_dir: str | Path) -> None:
        """Load everything from a bundle directory (also usable without MLflow, e.g. in tests)."""
        bundle = Path(bundle_dir)
        self.spec = ModelSpec.from_json((bundle / SPEC_FILE).read_text())
        self.combined = joblib.load(bundle / COMBINED_FILE)
        self.radiomics_columns = pipeline_inputs(self.combined.rad_pipeline)
        self.deep_columns = pipeline_inputs(self.combined.dl_pipeline)
        self._radiomics_index = {c: i for i, c in enumerate(self.radiomics_columns)}
        self._deep_index = {c: i for i, c in enumerate(self.deep_columns)}
        # Where the required features (the spec's order, as requests send them) sit in the pipelines' input.
        self._radiomics_required = np.array([self._radiomics_index[c] for c in self.spec.radiomics_features], dtype=np.intp)
        self._deep_required = np.array([self._deep_index[c] for c in self.spec.deep_features], dtype=np.intp)
        self.as_arrays = False
        self.as_arrays = self._arrays_give_the_same_scores()
        self.compiled = self._compiled_pipelines() if self.as_arrays else None
        self.radiomics_params = load_radiomics_params(bundle)
        self.radiomics_sha256: dict[str, str] = {}
        if self.spec.image_scoring:  # PyRadiomics' settings hash imports it (and PyWavelets): images only
            from cagerisk.radiomics.params import settings_hash

            self.radiomics_sha256 = {seq: settings_hash(p) for seq, p in self.radiomics_params.items()}
        self.segmenters: dict[str, Any] = {}
        self.embedder = None
        self.radiomics_pool = None
        if self.spec.image_scoring:
            segmented = [seq for seq in self.spec.sequences if self.spec.mask_optional(seq)]
            if segmented:
                from cagerisk.segment import Segmenter

                self.segmenters = {seq: Segmenter.load(bundle / segment_file(seq)) for seq in segmented}
            if self.spec.deep_rois:
                from cagerisk.deep.export import DeepEmbedder

                self.embedder = DeepEmbedder.load(bundle / DEEP_FILE)
        log.info(
            "cage-subsidence model loaded: %d radiomics + %d deep features required, clinical %s, threshold %.4f, "
            "image scoring %s",
            len(self.spec.radiomics_features),
            len(self.spec.deep_features),
            self.spec.clinical_variables,
            self.spec.threshold,
            "on" if self.spec.image_scoring else "off",
        )

    def _arrays_give_the_same_scores(self, n: int = 4, seed: int = 0) -> bool:
        """Whether the signature pipelines score value arrays exactly as the named tables they were
        fitted on (then ``score_rows`` skips scikit-learn's per-column DataFrame checks). Checked on
        made-up rows: required features random, the others missing, as a request leaves them."""
        rad, dl, clinical = self._probe_tables(n, seed)
        try:
            named = self.combined.predict_checked(rad, dl, clinical)
            arrays = self.combined.predict_checked(rad, dl, clinical, as_arrays=True)
        except Exception as err:  # noqa: BLE001 - any failure means: keep the named tables
            log.info("signature pipelines need named tables (%s)", type(err).__name__)
            return False
        same = bool(np.array_equal(named["prob"].to_numpy(), arrays["prob"].to_numpy()))
        log.info("signature pipelines score value arrays %s", "identically" if same else "differently: named tables kept")
        return same

    def _probe_tables(self, n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
        """Made-up patients: required features random, the others missing (as a request leaves them),
        each clinical variable's categories in turn, numbers across their range."""
        rng = np.random.default_rng(seed)
        index = pd.Index([f"probe{i}" for i in range(n)], name=ID_COLUMN)

        def table(columns: list[str], required: np.ndarray) -> pd.DataFrame:
            values = np.full((n, len(columns)), np.nan)
            values[:, required] = rng.normal(size=(n, len(required)))
            # built from one array: setting 11,000 named columns of a frame takes pandas seconds
            return pd.DataFrame(values, index=index, columns=columns)

        rad = table(self.radiomics_columns, self._radiomics_required)
        dl = table(self.deep_columns, self._deep_required)
        clinical = None
        if self.spec.clinical_variables:
            clinical = pd.DataFrame(
                {k: [_probe_value(k, i) for i in range(n)] for k in self.spec.clinical_variables}, index=index
            )
        return rad, dl, clinical

    def _compiled_pipelines(self, n: int = 8, seed: int = 1) -> tuple[Any, Any, Any] | None:
        """The three pipelines in numpy (:mod:`cagerisk.models.compiled`: scikit-learn's checks of pandas
        frames cost ~10 ms per call, the arithmetic microseconds), when every step is of a kind that
        module knows and the whole path gives ``CombinedModel.predict_checked``'s probabilities and
        signatures (to 1e-12) on made-up patients; else None and scoring stays with scikit-learn."""
        from cagerisk.models.compiled import compile_pipeline

        combined = self.combined
        compiled = tuple(compile_pipeline(p) for p in (combined.rad_pipeline, combined.dl_pipeline, combined.combined_pipeline))
        if any(c is None for c in compiled):
            log.info("scoring with scikit-learn: a pipeline has a step cagerisk.models.compiled does not know")
            return None
        rad, dl, clinical = self._probe_tables(n, seed)
        rows = [] if clinical is None else clinical.to_dict("records")
        try:
            expected = combined.predict_checked(rad, dl, clinical, as_arrays=True)
            got = _compiled_scores(compiled, rad.to_numpy(), dl.to_numpy(), rows or [{}] * n, self.spec.clinical_variables)
        except Exception as err:  # noqa: BLE001 - any failure means: keep scikit-learn
            log.info("scoring with scikit-learn: the compiled pipelines failed on made-up patients (%s)", type(err).__name__)
            return None
        if got is None:
            log.info("scoring with scikit-learn: the compiled pipelines do not take these inputs")
            return None
        diff = max(
            float(np.max(np.abs(a - expected[c].to_numpy()))) for a, c in zip(got, ("prob", "rad_sign", "dl_sign"), strict=True)
        )
        if not diff <= COMPILED_TOLERANCE:
            log.warning("scoring with scikit-learn: the compiled pipelines differ from it by %.3g", diff)
            return None
        log.info("pipelines compiled to numpy (max |diff| %.2g against scikit-learn on made-up patients)", diff)
        return compiled

    # ---- scoring -------------------------------------------------------------------------------

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would build a schema from them
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return self.score(frame)

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Score every row; a bad row raises ``ScoringInputError`` naming the row (in a batch) and field."""
        arrays = self._feature_arrays(frame)
        if arrays is not None:
            return self.score_arrays(*arrays)
        return self.score_rows(frame.reset_index(drop=True).to_dict("records"))

    def _feature_arrays(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], list[Any]] | None:
        """``score_arrays``' inputs from a table whose every row has numeric features (the common case
        of MLflow's server and batch scoring), else None and the rows go one by one through
        ``score_rows``, which decides between features and images and words every error. Turning a
        table of 11,000 columns into row dicts took seconds."""
        names = [*self.spec.radiomics_features, *self.spec.deep_features]
        if len(frame) == 0 or not names or frame.columns.duplicated().any() or not set(names) <= set(frame.columns):
            return None
        block = frame[names]
        if not all(dtype.kind in "fi" for dtype in block.dtypes):  # text, bool, object: the row checks word it
            return None
        values = block.to_numpy(dtype=np.float64)
        if not (~np.isnan(values)).any(axis=1).all():  # a row without features: images, or an error
            return None
        features = set(names)
        rest = frame[[c for c in frame.columns if c not in features]].reset_index(drop=True).to_dict("records")
        rows = [{k: _cell(v) for k, v in row.items()} for row in rest]
        n_rad = len(self.spec.radiomics_features)
        return (
            values[:, :n_rad],
            values[:, n_rad:],
            [self._clinical_values(row) for row in rows],
            [row.get(ID_COLUMN) for row in rows],
        )

    def _clinical_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The clinical values a row gives (a NaN counts as not given unless the model requires it)."""
        return {
            k: values.get(k)
            for k in (*CLINICAL_NAMES, FUSED_LEVELS)
            if values.get(k) is not None and (k in self.spec.clinical_variables or not _absent(values.get(k)))
        }

    def score_rows(self, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """:meth:`score` of row dicts (the service's path: no DataFrame of the request is built)."""
        if len(rows) == 0:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in OUTPUT_COLUMNS})
        n = len(rows)
        # Columns the signatures do not need stay NaN (imputed, then dropped by the selectors): see
        # cagerisk.serving.features.blank_unrequired, verified when the bundle was built.
        rad_matrix = np.full((n, len(self.radiomics_columns)), np.nan)
        dl_matrix = np.full((n, len(self.deep_columns)), np.nan)
        clinical: list[dict[str, Any]] = []
        modes: list[str] = []
        ids: list[str | None] = []
        for i, row in enumerate(rows):
            values = {k: _cell(v) for k, v in row.items()}
            try:
                rad, dl, clin, mode = self._row_inputs(values)
            except ScoringInputError as err:
                if n > 1:
                    raise ScoringInputError(f"rows[{i}].{err.field}", err.problem, err.status) from None
                raise
            for name, value in rad.items():
                rad_matrix[i, self._radiomics_index[name]] = value
            for name, value in dl.items():
                dl_matrix[i, self._deep_index[name]] = value
            clinical.append(clin)
            modes.append(mode)
            pid = values.get(ID_COLUMN)
            ids.append(None if _absent(pid) else str(pid))
        return _output_frame(self._predict(rad_matrix, dl_matrix, clinical, modes, ids))

    def score_arrays(
        self,
        radiomics: np.ndarray,
        deep: np.ndarray,
        clinical: Sequence[Mapping[str, Any]],
        ids: Sequence[str | None] | None = None,
        as_columns: bool = False,
    ) -> pd.DataFrame | dict[str, Any]:
        """:meth:`score_rows` of patients whose features come as arrays, one row per patient, columns
        in the spec's order (``spec.radiomics_features``, ``spec.deep_features``; NaN = missing): the
        same checks, vectorised, and the same pipelines, without 11,000 dictionary look-ups a patient.

        ``as_columns``: the output's columns as a dict of arrays and lists instead of a DataFrame (the
        service writes them as JSON at once; building the frame took a tenth of a request's time)."""
        radiomics = np.asarray(radiomics, dtype=np.float64)
        deep = np.asarray(deep, dtype=np.float64)
        n = len(clinical)
        expected = {"radiomics": (n, len(self.spec.radiomics_features)), "deep": (n, len(self.spec.deep_features))}
        for name, values in (("radiomics", radiomics), ("deep", deep)):
            if values.shape != expected[name]:
                raise ScoringInputError("features", f"{name} values of shape {values.shape}; expected {expected[name]}")
        if n == 0:
            return {c: [] for c in OUTPUT_COLUMNS} if as_columns else self.score_rows([])
        ids = list(ids) if ids is not None else [None] * n
        checked: list[dict[str, Any]] = []
        for i in range(n):
            try:
                checked.append(check_clinical(clinical[i], self.spec.clinical_variables))
                _check_feature_values(radiomics[i], self.spec.radiomics_features)
                _check_feature_values(deep[i], self.spec.deep_features)
            except ScoringInputError as err:
                if n > 1:
                    raise ScoringInputError(f"rows[{i}].{err.field}", err.problem, err.status) from None
                raise
        rad_matrix = np.full((n, len(self.radiomics_columns)), np.nan)
        dl_matrix = np.full((n, len(self.deep_columns)), np.nan)
        rad_matrix[:, self._radiomics_required] = radiomics
        dl_matrix[:, self._deep_required] = deep
        columns = self._predict(
            rad_matrix, dl_matrix, checked, [MODE_FEATURES] * n, [None if _absent(p) else str(p) for p in ids]
        )
        return columns if as_columns else _output_frame(columns)

    def _predict(
        self,
        rad_matrix: np.ndarray,
        dl_matrix: np.ndarray,
        clinical: Sequence[Mapping[str, Any]],
        modes: Sequence[str],
        ids: Sequence[str | None],
    ) -> dict[str, Any]:
        """The output columns (OUTPUT_COLUMNS): arrays, and lists for the ids and modes (a frame: _output_frame)."""
        n = len(rad_matrix)
        used = self.spec.clinical_variables
        scores = None
        if getattr(self, "compiled", None) is not None:
            scores = _compiled_scores(self.compiled, rad_matrix, dl_matrix, clinical, used)
        if scores is not None:
            prob, rad_sign, dl_sign = scores
            risk = np.where(prob >= self.combined.threshold, RISK_HIGH, RISK_LOW)
        else:  # scikit-learn on the tables
            index = pd.Index([f"row{i}" for i in range(n)], name=ID_COLUMN)
            rad_frame = pd.DataFrame(rad_matrix, index=index, columns=self.radiomics_columns)
            dl_frame = pd.DataFrame(dl_matrix, index=index, columns=self.deep_columns)
            clin_frame = pd.DataFrame([{k: c[k] for k in used} for c in clinical], index=index, columns=used) if used else None
            out = self.combined.predict_checked(rad_frame, dl_frame, clin_frame, as_arrays=self.as_arrays)
            prob, rad_sign, dl_sign = (out[c].to_numpy(dtype=np.float64) for c in ("prob", "rad_sign", "dl_sign"))
            risk = out["risk_class"].astype(str).to_numpy()
        return {
            "patient_id": list(ids),
            "probability": prob,
            "rad_sign": rad_sign,
            "dl_sign": dl_sign,
            "risk_class": risk,
            "threshold": np.full(n, self.spec.threshold, dtype=np.float64),
            "mode": list(modes),
        }

    def _row_inputs(self, values: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, float], dict[str, Any], str]:
        feature_names = [*self.spec.radiomics_features, *self.spec.deep_features]
        # A DataFrame holds NaN where a row lacks a column another row has: NaN means "not given"
        # except for a value the model requires, which the checks then report as NaN.
        given = [n for n in feature_names if not _absent(values.get(n))]
        images_given = any(not _absent(values.get(image_field(s))) for s in self.spec.sequences)
        clinical_values = self._clinical_values(values)
        if not given and not images_given:
            raise missing(
                "features",
                "neither precomputed features nor images were given; send the features listed by the model's "
                "spec, or the images and masks",
            )
        if given:
            clin = check_clinical(clinical_values, self.spec.clinical_variables)
            rad = check_features(values, self.spec.radiomics_features) if self.spec.radiomics_features else {}
            dl = check_features(values, self.spec.deep_features) if self.spec.deep_features else {}
            return rad, dl, clin, MODE_FEATURES
        if not self.spec.image_scoring:
            raise missing("features", f"this model scores precomputed features only ({self.spec.image_scoring_note})")
        clin = check_clinical(clinical_values, [*self.spec.clinical_variables, FUSED_LEVELS])
        rad, dl = self.features_from_images(values, clin[FUSED_LEVELS])
        return rad, dl, clin, MODE_IMAGES

    def features_from_images(self, values: Mapping[str, Any], fused_levels: str) -> tuple[dict[str, float], dict[str, float]]:
        """Radiomics and deep features of one patient from image and mask paths, with every input checked first."""
        with tempfile.TemporaryDirectory(prefix="cagerisk-score-") as tmp:
            volumes, predicted = self._checked_volumes(values, fused_levels, Path(tmp))
            # The ViT-3D (torch, which releases the GIL) runs beside PyRadiomics (one ITK thread per
            # ROI, as in the stage): the same features, in less wall time on more than one core.
            with ThreadPoolExecutor(1, thread_name_prefix="cagerisk-embed") as pool:
                deep = pool.submit(self._deep, volumes, fused_levels)
                rad = self._radiomics(volumes, fused_levels, predicted)
                dl = deep.result()
        return rad, dl

    def _checked_volumes(
        self, values: Mapping[str, Any], fused_levels: str, tmp: Path
    ) -> tuple[dict[str, tuple[str, str]], set[str]]:
        """``{sequence: (image path, mask path)}`` and the sequences whose mask the U-Net made."""
        from cagerisk.imaging.io import write_image

        volumes: dict[str, tuple[str, str]] = {}
        predicted_masks: set[str] = set()
        for seq in self.spec.sequences:
            image_path = values.get(image_field(seq))
            if _absent(image_path):
                raise missing(image_field(seq), f"the {seq} image is required for image scoring")
            image = read_checked_image(str(image_path), image_field(seq))
            mask_path = values.get(mask_field(seq))
            predicted = _absent(mask_path)
            if predicted:
                segmenter = self.segmenters.get(seq) if self.spec.mask_optional(seq) else None
                if segmenter is None:
                    raise missing(mask_field(seq), f"the {seq} mask (label map) is required for image scoring")
                # As in training: the U-Net's label map, written and read back like the segment stage's masks.
                try:
                    labels = segmenter.segment(image)
                except Exception as err:  # an image the network cannot take (geometry, size) is the input's fault
                    raise ScoringInputError(
                        image_field(seq), f"the {seq} U-Net could not segment this image ({type(err).__name__}: {err})"
                    ) from None
                mask_path = str(write_image(labels, tmp / f"{seq}_mask_pred.nii.gz"))
                predicted_masks.add(seq)
            mask = read_checked_image(str(mask_path), mask_field(seq))
            present = check_mask(image, mask, seq, mask_field(seq))
            for roi in self.spec.rois_of(seq):
                try:
                    check_roi_present(present, roi_label_values(fused_levels, roi), roi, mask_field(seq))
                except ScoringInputError as err:
                    if not predicted:
                        raise
                    # No mask was sent: what is missing is in the image, as the U-Net saw it.
                    raise ScoringInputError(
                        image_field(seq), f"the {seq} U-Net's segmentation of this image: {err.problem}"
                    ) from None
            volumes[seq] = (str(image_path), str(mask_path))
        return volumes, predicted_masks

    def start_radiomics_workers(self, processes: int = 0) -> None:
        """Extract the ROI groups of image scoring on ``processes`` worker processes (0: one per core,
        at most one per ROI group) instead of one after the other in this process. The service calls
        this once the model is loaded; without it (MLflow's own server, tests) extraction stays here."""
        from cagerisk.serving.radiomics_pool import RadiomicsPool, available_cores

        if not (self.spec.image_scoring and self.spec.radiomics_rois) or getattr(self, "radiomics_pool", None):
            return
        n = min(int(processes) or available_cores(), len(self.spec.radiomics_rois))
        if n > 1:
            self.radiomics_pool = RadiomicsPool(n, list(self.radiomics_params.values()))

    def radiomics_workers_ready(self) -> bool:
        """No PyRadiomics pool, or every one of its workers has warmed (``start_radiomics_workers``)."""
        pool = getattr(self, "radiomics_pool", None)
        return pool is None or pool.warmed

    def _radiomics(
        self, volumes: Mapping[str, tuple[str, str]], fused_levels: str, predicted: set[str] = frozenset()
    ) -> dict[str, float]:
        from cagerisk.radiomics.extract import RoiTask
        from cagerisk.radiomics.naming import prefixed_features
        from cagerisk.serving.radiomics_pool import extract_in_worker

        tasks = [
            RoiTask(
                patient_id="scored",
                sequence=seq,
                roi=roi,
                image=volumes[seq][0],
                mask=volumes[seq][1],
                label_values=tuple(roi_label_values(fused_levels, roi)),
                params=self.radiomics_params[seq],
                settings_sha256=self.radiomics_sha256[seq],
                itk_threads=1,  # as the stage's workers: one thread each
            )
            for seq, roi in self.spec.radiomics_rois
        ]
        pool = getattr(self, "radiomics_pool", None)
        if pool is not None:
            try:
                outcomes = [future.result() for future in [pool.submit(task) for task in tasks]]
            # a worker died (killed, out of memory, could not import): go on without the pool; submit
            # itself raises this once the pool is known to be broken
            except BrokenProcessPool:
                log.warning("PyRadiomics worker pool broke; extracting in the serving process from now on")
                self.radiomics_pool = None
                pool.close()
                return self._radiomics(volumes, fused_levels, predicted)
        else:
            outcomes = (extract_in_worker(task) for task in tasks)  # lazily: stop at the first failure
        features: dict[str, float] = {}
        for task, (values, error) in zip(tasks, outcomes, strict=False):
            if values is None:  # inputs passed every check; whatever PyRadiomics refuses is still the input's
                seq, image, mask = task.sequence, task.image, task.mask
                text = error.replace(image, image_field(seq)).replace(mask, mask_field(seq))
                # With the U-Net's mask the caller sent only the image: the image is what to look at.
                field = image_field(seq) if seq in predicted else mask_field(seq)
                raise ScoringInputError(field, f"radiomics of ROI {task.roi} failed: {text}") from None
            features.update(prefixed_features(task.sequence, task.roi, values))
        return features

    def _deep(self, volumes: Mapping[str, tuple[str, str]], fused_levels: str) -> dict[str, float]:
        if self.embedder is None:
            return {}
        sequences = list(dict.fromkeys(seq for seq, _ in self.spec.deep_rois))
        try:
            return self.embedder.embed({seq: volumes[seq] for seq in sequences}, fused_levels, patient_id="scored")
        except Exception as err:  # as for radiomics: the inputs passed every check, the failure is theirs
            text = f"{type(err).__name__}: {err}"
            for seq, (image, mask) in volumes.items():
                text = text.replace(image, image_field(seq)).replace(mask, mask_field(seq))
            raise ScoringInputError("images", f"deep features could not be computed: {text}") from None


def _check_feature_values(values: np.ndarray, names: Sequence[str], field: str = "features") -> None:
    """:func:`~cagerisk.serving.inputs.check_features` of one patient's array (NaN = missing), vectorised."""
    if not len(names):
        return
    bad = ~(np.abs(values) <= FEATURE_LIMIT) & ~np.isnan(values)
    if bad.any():
        which = [names[j] for j in np.flatnonzero(bad)[:5]]
        raise ScoringInputError(field, f"{int(bad.sum())} feature(s) are not numbers within +-{FEATURE_LIMIT:g}, e.g. {which}")
    if np.isnan(values).all():
        raise missing(field, "every required feature is null; send the values (or the images)")


def _probe_value(name: str, i: int = 0) -> Any:
    """The ``i``-th made-up valid value of a clinical variable (its categories in turn; numbers from
    the middle of its range towards its ends)."""
    from cagerisk.cohort.schema import CLINICAL

    variable = next(v for v in CLINICAL if v.name == name)
    if variable.categories:
        return variable.categories[i % len(variable.categories)]
    low = float(variable.low) if variable.low is not None else 0.0
    high = float(variable.high) if variable.high is not None else low + 1.0
    if variable.kind == "binary" or name in INTEGER_CLINICAL:
        return int(low) + i % (int(high) - int(low) + 1)
    return (low + high) / 2.0 + (high - low) / 2.0 * ((i % 5) - 2) / 2.0


def _output_frame(columns: dict[str, Any]) -> pd.DataFrame:
    # the ids as object, not pandas' text dtype, which would turn a missing id into NaN
    return pd.DataFrame({**columns, "patient_id": pd.Series(columns["patient_id"], dtype=object)})


def _compiled_scores(
    compiled: tuple[Any, Any, Any],
    radiomics: np.ndarray,
    deep: np.ndarray,
    clinical: Sequence[Mapping[str, Any]],
    variables: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(prob, rad_sign, dl_sign)`` as ``CombinedModel.predict_checked`` computes them, through the
    compiled pipelines; None where they leave the inputs to scikit-learn."""
    rad, dl, combined = compiled
    rad_sign = rad.positive_proba(radiomics)
    dl_sign = dl.positive_proba(deep)
    if rad_sign is None or dl_sign is None:
        return None
    columns: dict[str, np.ndarray] = {"rad_sign": rad_sign, "dl_sign": dl_sign}
    for name in variables:
        values = [c[name] for c in clinical]
        if all(type(v) is str for v in values):
            columns[name] = np.array(values, dtype=object)
        elif all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) for v in values):
            columns[name] = np.array(values, dtype=np.float64)
        else:  # mixed or other kinds: pandas decides their dtype, scikit-learn their handling
            return None
    prob = combined.positive_proba(columns)
    return None if prob is None else (prob, rad_sign, dl_sign)


def _cell(value: Any) -> Any:
    """A DataFrame cell with pandas' missing markers (None, NaN in an object column, NA) as None.

    A float NaN in a numeric column stays NaN so that the checks can say it is NaN; only missing
    markers of text columns and pandas' NA become None.
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str) and value.strip() == "":
        return None
    return value


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def score_frame(model: CageRiskModel, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Convenience for tests and the service: score a list of row dicts."""
    return model.score(pd.DataFrame(list(rows)))


def model_signature(spec: ModelSpec):
    """MLflow signature of both modes: clinical columns, optional image/mask paths, optional features."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    from cagerisk.cohort.schema import CLINICAL

    columns = [ColSpec("string", ID_COLUMN, required=False)]
    kinds = {v.name: v.kind for v in CLINICAL}
    # Only the clinical values the model uses: any other column is dropped by MLflow anyway.
    for name in spec.clinical_variables:
        kind = "string" if kinds.get(name) == "categorical" else "long" if name in INTEGER_CLINICAL else "double"
        columns.append(ColSpec(kind, name))
    columns.append(ColSpec("string", FUSED_LEVELS, required=False))
    for seq in spec.sequences:
        columns.append(ColSpec("string", image_field(seq), required=False))
        columns.append(ColSpec("string", mask_field(seq), required=False))
    for name in [*spec.radiomics_features, *spec.deep_features]:
        columns.append(ColSpec("double", name, required=False))
    outputs = Schema(
        [
            ColSpec("string", "patient_id", required=False),
            ColSpec("double", "probability"),
            ColSpec("double", "rad_sign"),
            ColSpec("double", "dl_sign"),
            ColSpec("string", "risk_class"),
            ColSpec("double", "threshold"),
            ColSpec("string", "mode"),
        ]
    )
    return ModelSignature(inputs=Schema(columns), outputs=outputs)
