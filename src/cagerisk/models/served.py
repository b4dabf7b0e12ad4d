"""What the served model unpickles: ``CombinedModel`` and ``positive_proba``.

This module is imported when a logged model is loaded, so it imports only numpy, pandas and
scikit-learn (through the pickled pipelines): no Optuna, no MLflow, no stage code. Anything a
served pickle references must live in a module as light as this one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cagerisk.cohort.schema import ID

SIGNATURE_COLUMNS = ("rad_sign", "dl_sign")
MODEL_FILE = "model.joblib"
RISK_HIGH, RISK_LOW = "high", "low"


def positive_proba(model: Any, X) -> np.ndarray:
    """P(class 1) from a fitted classifier or pipeline, whatever the order of its classes."""
    proba = model.predict_proba(X)
    classes = list(getattr(model, "classes_", [0, 1]))
    return np.asarray(proba)[:, classes.index(1)]


class CombinedModel:
    """From radiomics, deep features and clinical values to the probability of cage subsidence.

    Parameters
    ----------
    rad_pipeline, dl_pipeline : fitted signature pipelines (radiomics / deep table -> P(CS)).
    combined_pipeline : fitted pipeline on ``[rad_sign, dl_sign, *clinical_variables]``.
    clinical_variables : clinical columns the combined model uses (may be empty).
    threshold : probability at or above which the risk class is "high" (Youden on validation).
    clinical_pipeline, clinical_model_variables : the clinical-only model, for comparison.
    info : provenance (studies, CV AUCs, cohort) stored with the model.
    """

    def __init__(
        self,
        rad_pipeline: Any,
        dl_pipeline: Any,
        combined_pipeline: Any,
        clinical_variables: Sequence[str],
        threshold: float,
        clinical_pipeline: Any | None = None,
        clinical_model_variables: Sequence[str] = (),
        info: dict[str, Any] | None = None,
    ):
        self.rad_pipeline = rad_pipeline
        self.dl_pipeline = dl_pipeline
        self.combined_pipeline = combined_pipeline
        self.clinical_variables = list(clinical_variables)
        self.threshold = float(threshold)
        self.clinical_pipeline = clinical_pipeline
        self.clinical_model_variables = list(clinical_model_variables)
        self.info = dict(info or {})

    @property
    def radiomics_features(self) -> list[str]:
        return [str(c) for c in self.rad_pipeline.feature_names_in_]

    @property
    def deep_features(self) -> list[str]:
        return [str(c) for c in self.dl_pipeline.feature_names_in_]

    @property
    def input_columns(self) -> list[str]:
        """Columns of the combined pipeline's input."""
        return [*SIGNATURE_COLUMNS, *self.clinical_variables]

    def signatures(self, radiomics: pd.DataFrame, deep: pd.DataFrame) -> pd.DataFrame:
        """Rad-sign and DL-sign of each patient (index: patient_id)."""
        rad = _select(_by_patient(radiomics, "radiomics"), self.radiomics_features, "radiomics")
        dl = _select(_by_patient(deep, "deep"), self.deep_features, "deep")
        _same_patients({"radiomics": rad.index, "deep": dl.index})
        dl = dl.loc[rad.index]
        return pd.DataFrame(
            {"rad_sign": positive_proba(self.rad_pipeline, rad), "dl_sign": positive_proba(self.dl_pipeline, dl)},
            index=rad.index,
        )

    def combined_inputs(self, signatures: pd.DataFrame, clinical: pd.DataFrame | None) -> pd.DataFrame:
        frame = signatures[list(SIGNATURE_COLUMNS)].copy()
        if self.clinical_variables:
            if clinical is None:
                raise ValueError(f"clinical values are required: {self.clinical_variables}")
            values = _select(_by_patient(clinical, "clinical"), self.clinical_variables, "clinical")
            _same_patients({"features": frame.index, "clinical": values.index})
            _no_missing(values, "clinical")
            frame = frame.join(values.loc[frame.index])
        return frame[self.input_columns]

    def predict_from_features(
        self, radiomics: pd.DataFrame, deep: pd.DataFrame, clinical: pd.DataFrame | None = None
    ) -> pd.DataFrame:
        """``DataFrame(prob, rad_sign, dl_sign, risk_class)`` indexed by patient_id.

        Tables are indexed by ``patient_id`` or have that column; extra columns are ignored, missing
        ones raise a ValueError naming them; the three tables must hold the same patients.
        """
        signatures = self.signatures(radiomics, deep)
        prob = positive_proba(self.combined_pipeline, self.combined_inputs(signatures, clinical))
        return self._output(prob, signatures["rad_sign"].to_numpy(), signatures["dl_sign"].to_numpy(), signatures.index)

    def predict_checked(
        self, radiomics: pd.DataFrame, deep: pd.DataFrame, clinical: pd.DataFrame | None = None, as_arrays: bool = False
    ) -> pd.DataFrame:
        """:meth:`predict_from_features` for tables already in the pipelines' column order, on one index,
        without missing clinical values (a server checked them): the same pipelines without the
        re-indexing and copies, which cost more than the model itself for one patient.

        With ``as_arrays`` the signature pipelines get the tables' values without their column names:
        scikit-learn's per-column checks of a DataFrame cost ~0.1 s per call on 11,000 radiomics
        columns. Only for pipelines shown to give identical output that way (a caller's check).
        """
        if as_arrays:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="X does not have valid feature names")
                rad_sign = positive_proba(self.rad_pipeline, radiomics.to_numpy())
                dl_sign = positive_proba(self.dl_pipeline, deep.to_numpy())
        else:
            rad_sign = positive_proba(self.rad_pipeline, radiomics)
            dl_sign = positive_proba(self.dl_pipeline, deep)
        frame = pd.DataFrame({"rad_sign": rad_sign, "dl_sign": dl_sign}, index=radiomics.index)
        if self.clinical_variables:
            if clinical is None:
                raise ValueError(f"clinical values are required: {self.clinical_variables}")
            for name in self.clinical_variables:
                frame[name] = clinical[name].to_numpy()
        prob = positive_proba(self.combined_pipeline, frame[self.input_columns])
        return self._output(prob, rad_sign, dl_sign, radiomics.index)

    def _output(self, prob: np.ndarray, rad_sign: np.ndarray, dl_sign: np.ndarray, index: pd.Index) -> pd.DataFrame:
        out = pd.DataFrame({"prob": prob, "rad_sign": rad_sign, "dl_sign": dl_sign}, index=index)
        out["risk_class"] = np.where(out["prob"] >= self.threshold, RISK_HIGH, RISK_LOW)
        return out

    def predict_clinical(self, clinical: pd.DataFrame) -> pd.Series:
        """P(CS) of the clinical-only model."""
        if self.clinical_pipeline is None:
            raise ValueError("this model has no clinical-only pipeline")
        values = _select(_by_patient(clinical, "clinical"), self.clinical_model_variables, "clinical")
        _no_missing(values, "clinical")
        return pd.Series(positive_proba(self.clinical_pipeline, values), index=values.index, name="clinical_model")

    def __repr__(self) -> str:
        return (
            f"CombinedModel(rad={len(self.radiomics_features)} features, dl={len(self.deep_features)} features, "
            f"clinical={self.clinical_variables}, threshold={self.threshold:.4f})"
        )


def _by_patient(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name}: expected a pandas DataFrame, got {type(frame).__name__}")
    if ID in frame.columns:
        frame = frame.set_index(ID)
    frame = frame.copy()
    frame.index = frame.index.astype(str)
    duplicated = frame.index[frame.index.duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{name}: patient(s) with more than one row: {duplicated[:10]}")
    return frame


def _select(frame: pd.DataFrame, columns: Sequence[str], name: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: {len(missing)} required column(s) missing, e.g. {missing[:10]}")
    return frame[list(columns)]


def _same_patients(indexes: dict[str, pd.Index]) -> None:
    names = list(indexes)
    first = indexes[names[0]]
    for other in names[1:]:
        only_first = first.difference(indexes[other])
        only_other = indexes[other].difference(first)
        if len(only_first) or len(only_other):
            raise ValueError(
                f"{names[0]} and {other} tables hold different patients: only in {names[0]}: {list(only_first[:10])}, "
                f"only in {other}: {list(only_other[:10])}"
            )


def _no_missing(frame: pd.DataFrame, name: str) -> None:
    missing = frame.isna()
    if missing.to_numpy().any():
        where = [(pid, col) for pid, row in missing.iterrows() for col in frame.columns if row[col]]
        raise ValueError(f"{name}: missing value(s) for (patient, variable): {where[:10]}")
