"""Gather everything the served model needs into one bundle directory (an MLflow artifact).

The bundle holds copies, never references: the fitted combined model (both signature pipelines, the
combined pipeline and the threshold), the U-Net and ViT-3D bundles, and the PyRadiomics parameters
of every sequence as the radiomics stage merged them. ``spec.json`` says which inputs are required.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import yaml

from cagerisk.cohort.schema import CLINICAL, ID, SEQUENCES
from cagerisk.hashing import file_sha256
from cagerisk.radiomics.naming import feature_groups
from cagerisk.serving.features import serving_inputs
from cagerisk.serving.inputs import INTEGER_CLINICAL
from cagerisk.serving.model import (
    COMBINED_FILE,
    DEEP_FILE,
    RADIOMICS_DIR,
    SEGMENT_FILE,
    SPEC_FILE,
    ModelSpec,
    segment_file,
)

log = logging.getLogger(__name__)


class BundleError(ValueError):
    """A stage output the bundle needs is missing or inconsistent; the message names the file."""


@dataclass
class TrainingTables:
    """The stage outputs a bundle is built and checked from."""

    manifest: pd.DataFrame  # indexed by patient_id
    radiomics: pd.DataFrame  # indexed by patient_id
    deep: pd.DataFrame  # indexed by patient_id
    files: dict[str, Path]

    @property
    def patients(self) -> pd.Index:
        return self.manifest.index.intersection(self.radiomics.index).intersection(self.deep.index)

    def split(self, name: str) -> pd.Index:
        part = self.manifest.loc[self.patients]
        return part.index[part["split"] == name]

    def data_sha256(self) -> str:
        """One hash over the manifest and both feature tables: the data the model was trained on."""
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(name.encode())
            digest.update(bytes.fromhex(file_sha256(self.files[name])))
        return digest.hexdigest()


def combined_model_path(models_dir: str | Path) -> Path:
    """The combined stage's model under ``paths.models``."""
    return Path(models_dir) / "combined" / "model.joblib"


def read_training_tables(cohort_dir: str | Path, features_dir: str | Path) -> TrainingTables:
    """The manifest (``paths.cohort``) and the radiomics and deep tables (``paths.features``) the model was trained on."""
    from cagerisk.models.crossfit import read_deep_table
    from cagerisk.models.data import read_feature_table, read_manifest

    files = {
        "manifest": Path(cohort_dir) / "manifest.csv",
        "radiomics": Path(features_dir) / "radiomics.parquet",
        "deep": Path(features_dir) / "deep.parquet",
    }
    for name, path in files.items():
        if not path.is_file():
            raise BundleError(f"{path}: {name} not found; run the pipeline (dvc repro) before `cagerisk register`")
    return TrainingTables(
        manifest=read_manifest(files["manifest"]),
        radiomics=read_feature_table(files["radiomics"], "radiomics table"),
        deep=read_deep_table(files["deep"], "deep table").features,  # cross-fitted: one column set per fold model
        files=files,
    )


def deep_groups(columns: Sequence[str]) -> list[list[str]]:
    """``{sequence}_{roi}_dl_{k}`` columns -> their (sequence, roi) pairs, in column order."""
    pairs: dict[tuple[str, str], None] = {}
    for column in columns:
        seq, roi, tag, _ = (str(column).split("_") + ["", "", "", ""])[:4]
        if tag != "dl" or not seq or not roi:
            raise BundleError(f"deep feature {column!r} is not named {{sequence}}_{{roi}}_dl_{{k}}")
        pairs[(seq, roi)] = None
    return [list(p) for p in pairs]


def _radiomics_params(radiomics: Mapping[str, Any], sequences: Sequence[str]) -> dict[str, Any]:
    """PyRadiomics settings per sequence from the ``radiomics`` group (interpolations resolved)."""
    from cagerisk.radiomics.params import params_by_sequence

    if not sequences:
        return {}
    return params_by_sequence(radiomics, list(sequences))


def _check_radiomics_settings(summary: str | Path | None, params: Mapping[str, Any]) -> None:
    """The served extractor must use the settings that made the training table (training/serving skew
    otherwise): compare with the hashes the radiomics stage recorded in its ``summary``, when it did."""
    summary_path = Path(summary) if summary else None
    if summary_path is None or not summary_path.is_file():
        return
    recorded = json.loads(summary_path.read_text()).get("settings_sha256") or {}
    differ = [seq for seq, p in params.items() if seq in recorded and recorded[seq] != p.sha256]
    if differ:
        raise BundleError(
            f"radiomics settings of sequence(s) {differ} differ from those that made the training table "
            f"({summary_path}): register with the radiomics config the pipeline ran with "
            "(e.g. `cagerisk register radiomics=<the params.yaml choice>`)"
        )


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


@dataclass
class BundleSources:
    """The stage outputs a bundle copies: the combined model, the radiomics settings (the ``radiomics``
    config group, interpolations resolved) and the U-Net / ViT-3D bundles when they exist."""

    combined_model: Path
    radiomics: Mapping[str, Any]
    segment_model: Path | None
    deep_model: Path | None


def build_serving_bundle(
    out_dir: str | Path, tables: TrainingTables, sources: BundleSources, info: Mapping[str, Any] | None = None
) -> ModelSpec:
    """Write the bundle of the current pipeline outputs to ``out_dir``; returns its spec."""
    from cagerisk.radiomics.params import library_versions

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not sources.combined_model.is_file():
        raise BundleError(f"{sources.combined_model}: combined model not found; run `cagerisk combined` first")
    combined = joblib.load(sources.combined_model)
    rad_required, deep_required, radiomics_rois, deep_rois = _required_inputs(combined, tables)
    rad_sequences = list(dict.fromkeys(seq for seq, _ in radiomics_rois))
    params = _radiomics_params(sources.radiomics, rad_sequences)
    _check_radiomics_settings(sources.radiomics.get("summary"), params)
    for seq, p in params.items():
        target = out / RADIOMICS_DIR / f"{seq}.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(p.extractor_params(), sort_keys=False))
    _copy(sources.combined_model, out / COMBINED_FILE)
    sequences = {seq for seq, _ in radiomics_rois} | {seq for seq, _ in deep_rois}
    ct_segmentation, image_scoring, notes = _copy_networks(out, sources, "ct" in sequences, deep_rois, deep_required)
    segmented = ["ct"] if ct_segmentation else []
    segmented += _copy_mri_segmenters(out, sources, sequences, notes)
    spec = ModelSpec(
        radiomics_features=rad_required,
        deep_features=deep_required,
        clinical_variables=list(combined.clinical_variables),
        threshold=float(combined.threshold),
        radiomics_rois=radiomics_rois,
        deep_rois=deep_rois,
        ct_segmentation=ct_segmentation,
        segmented_sequences=[seq for seq in SEQUENCES if seq in segmented],
        image_scoring=image_scoring,
        image_scoring_note="; ".join(notes),
        n_radiomics_columns=len(combined.radiomics_features),
        n_deep_columns=len(combined.deep_features),
        radiomics_settings_sha256={seq: p.sha256 for seq, p in params.items()},
        library_versions=library_versions(),
        training_data_sha256=tables.data_sha256(),
        info={**combined.info, **dict(info or {})},
    )
    (out / SPEC_FILE).write_text(spec.to_json())
    return spec


def _required_inputs(combined: Any, tables: TrainingTables) -> tuple[list[str], list[str], list[list[str]], list[list[str]]]:
    """(radiomics features, deep features, radiomics ROI groups, deep inputs) the served model needs."""
    reference = tables.patients
    if len(reference) == 0:
        raise BundleError("no patient is in the manifest and both feature tables")
    rad_required = serving_inputs(
        combined.rad_pipeline, tables.radiomics.loc[reference].reindex(columns=combined.radiomics_features)
    )
    deep_required = _deep_serving_inputs(combined.dl_pipeline, tables.deep.loc[reference].reindex(columns=combined.deep_features))
    radiomics_rois = [list(group) for group in feature_groups(rad_required)]
    if len(sum(feature_groups(rad_required).values(), [])) != len(rad_required):
        raise BundleError("some radiomics features are not named {sequence}_{roi}_{image_type}_{class}_{feature}")
    deep_rois = deep_groups(deep_required)
    log.info(
        "serving inputs: %d of %d radiomics features (%d ROI groups), %d of %d deep features (%d inputs)",
        len(rad_required),
        len(combined.radiomics_features),
        len(radiomics_rois),
        len(deep_required),
        len(combined.deep_features),
        len(deep_rois),
    )
    return rad_required, deep_required, radiomics_rois, deep_rois


def _deep_serving_inputs(pipeline: Any, X: pd.DataFrame) -> list[str]:
    """:func:`serving_inputs` of the DL-sign; of a cross-fitted one, the union of its fold pipelines'."""
    folds = getattr(pipeline, "pipelines", None)
    if folds is None:
        return serving_inputs(pipeline, X)
    needed = {c for p, cols in zip(folds, pipeline.fold_columns, strict=True) for c in serving_inputs(p, X[cols])}
    return [str(c) for c in pipeline.feature_names_in_ if c in needed]


def _copy_networks(
    out: Path, sources: BundleSources, needs_ct: bool, deep_rois: Sequence[Any], deep_required: Sequence[str]
) -> tuple[bool, bool, list[str]]:
    """Copy the U-Net (CT inputs) and ViT-3D (deep inputs) bundles; (ct_segmentation, image_scoring, notes)."""
    notes: list[str] = []
    ct_segmentation = False
    if needs_ct:
        from cagerisk.segment.sequences import model_path_for

        ct_model = None if sources.segment_model is None else model_path_for(sources.segment_model, "ct")
        if ct_model is not None and ct_model.is_file():
            _copy(ct_model, out / SEGMENT_FILE)
            ct_segmentation = True
        else:
            notes.append("no U-Net bundle (segment.model_path): a CT mask must be sent")
    image_scoring = True
    if deep_rois:
        if sources.deep_model is not None and sources.deep_model.is_file():
            _check_deep_bundle(sources.deep_model, deep_required)
            _copy(sources.deep_model, out / DEEP_FILE)
        else:
            image_scoring = False
            notes.append("no ViT-3D bundle (deep.model_path): deep features must be sent precomputed")
    return ct_segmentation, image_scoring, notes


def _copy_mri_segmenters(out: Path, sources: BundleSources, sequences: set[str], notes: list[str]) -> list[str]:
    """Copy the U-Net of every MRI sequence the model reads that has one (``segment.model_path``
    with ``{sequence}``); the others keep a required mask, said in ``notes``."""
    from cagerisk.segment.model import load_bundle
    from cagerisk.segment.sequences import SEQUENCE_TOKEN, model_path_for

    copied = []
    for seq in [s for s in SEQUENCES if s in sequences and s != "ct"]:
        path = None
        if sources.segment_model is not None and SEQUENCE_TOKEN in str(sources.segment_model):
            path = model_path_for(sources.segment_model, seq)
        if path is not None and path.is_file() and not load_bundle(path).accepted:
            notes.append(f"the {seq} U-Net's validation Dice is below segment.min_val_dice: a {seq} mask must be sent")
        elif path is not None and path.is_file():
            _copy(path, out / segment_file(seq))
            copied.append(seq)
        else:
            notes.append(f"no {seq} U-Net bundle (segment.model_path): a {seq} mask must be sent")
    return copied


def _check_deep_bundle(path: Path, required: Sequence[str]) -> None:
    from cagerisk.deep.export import load_deep_bundle

    columns = set(load_deep_bundle(path).columns())
    unknown = [c for c in required if c not in columns]
    if unknown:
        raise BundleError(
            f"{path}: the ViT-3D bundle does not produce deep feature(s) {unknown[:5]} the DL signature needs; "
            "the deep model and the signatures come from different runs"
        )


def typical_patient(spec: ModelSpec, tables: TrainingTables) -> dict[str, Any]:
    """An input example that is no real patient: training medians of the features, typical clinical values."""
    train = tables.split("train")
    if len(train) == 0:
        train = tables.patients
    example: dict[str, Any] = {ID: "example"}
    manifest = tables.manifest.loc[train]
    kinds = {v.name: v for v in CLINICAL}
    for name in spec.clinical_variables:
        values = manifest[name].dropna()
        kind = kinds[name].kind if name in kinds else "continuous"
        if kind == "categorical":
            example[name] = str(values.mode().iloc[0])
        elif name in INTEGER_CLINICAL:
            example[name] = int(values.astype(float).mode().iloc[0])
        else:
            example[name] = float(np.median(values.astype(float)))
    rad = tables.radiomics.loc[train, spec.radiomics_features].median(skipna=True)
    deep = tables.deep.loc[train, spec.deep_features].median(skipna=True)
    example.update({k: float(v) for k, v in rad.items()})
    example.update({k: float(v) for k, v in deep.items()})
    return example


def feature_rows(spec: ModelSpec, tables: TrainingTables, patients: Sequence[str]) -> pd.DataFrame:
    """Features-mode model input of some patients (their real values), in ``patients`` order."""
    patients = [str(p) for p in patients]
    frame = pd.DataFrame({ID: patients})
    for name in spec.clinical_variables:
        values = tables.manifest.loc[patients, name].to_numpy()
        if any(v.name == name and v.kind == "categorical" for v in CLINICAL):
            frame[name] = values.astype(str)
        else:
            frame[name] = values.astype(np.int64 if name in INTEGER_CLINICAL else np.float64)
    rad = tables.radiomics.loc[patients, spec.radiomics_features].to_numpy(dtype=np.float64)
    deep = tables.deep.loc[patients, spec.deep_features].to_numpy(dtype=np.float64)
    features = pd.DataFrame(np.concatenate([rad, deep], axis=1), columns=[*spec.radiomics_features, *spec.deep_features])
    return pd.concat([frame, features], axis=1)
