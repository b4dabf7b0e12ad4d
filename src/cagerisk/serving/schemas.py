"""Request and response schemas of the scoring endpoint (pydantic; they make the OpenAPI docs).

Types and ranges come from the cohort schema; the checks that depend on the served model (which
clinical values and features it requires) run against the model the service loaded, before a request
joins a batch, so a bad request never fails the others batched with it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cagerisk.cohort.schema import CLINICAL
from cagerisk.serving.errors import ScoringInputError
from cagerisk.serving.inputs import check_clinical, check_features

_VAR = {v.name: v for v in CLINICAL}


class ActiveModel:
    """The spec of the model this process serves (set when the service has loaded it)."""

    spec = None


def _describe(name: str) -> str:
    v = _VAR[name]
    if v.categories:
        return f"{v.description} ({', '.join(v.categories)})"
    return f"{v.description} ({v.low:g}-{v.high:g})"


class ClinicalValues(BaseModel):
    """Clinical values of one patient; which ones are required depends on the model (GET /metadata)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    sex: Literal["F", "M"] | None = Field(None, description=_describe("sex"))
    age: float | None = Field(None, description=_describe("age"))
    bmi: float | None = Field(None, description=_describe("bmi"))
    diagnosis: Literal["stenosis", "spondylolisthesis", "herniation"] | None = Field(None, description=_describe("diagnosis"))
    n_levels: int | None = Field(None, description=_describe("n_levels"))
    osteoporosis: Literal[0, 1] | None = Field(None, description=_describe("osteoporosis"))
    followup_months: float | None = Field(None, description=_describe("followup_months"))
    fused_levels: str | None = Field(
        None, description="fused levels, ';'-separated, e.g. 'L4-L5;L5-S1' (needed to score images)"
    )

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class FeatureRequest(BaseModel):
    """One patient's precomputed features (names as in the feature tables) and clinical values."""

    model_config = ConfigDict(extra="forbid")

    patient_id: str | None = Field(None, max_length=256, description="echoed back; never logged")
    clinical: ClinicalValues
    features: dict[str, float | None] = Field(
        description="feature name -> value; GET /metadata lists the required names. null = missing "
        "(imputed with the training median, as in training)"
    )

    @field_validator("clinical")
    @classmethod
    def _clinical_complete(cls, value: ClinicalValues) -> ClinicalValues:
        spec = ActiveModel.spec
        try:
            check_clinical(value.given(), spec.clinical_variables if spec is not None else ())
        except ScoringInputError as err:
            raise ValueError(str(err)) from None
        return value

    @field_validator("features")
    @classmethod
    def _features_complete(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        spec = ActiveModel.spec
        if spec is not None:
            try:
                check_features(value, [*spec.radiomics_features, *spec.deep_features])
            except ScoringInputError as err:
                raise ValueError(str(err)) from None
        return value


class ScoreResult(BaseModel):
    """The model's answer for one patient."""

    patient_id: str | None = None
    probability: float = Field(description="P(cage subsidence) from the combined model")
    rad_sign: float = Field(description="radiomics signature (probability of the radiomics model)")
    dl_sign: float = Field(description="deep-learning signature (probability of the deep-feature model)")
    risk_class: Literal["high", "low"] = Field(description="high when probability >= threshold")
    threshold: float = Field(description="Youden threshold chosen on the validation split")
    model_version: str = Field(description="registered model version that scored")
