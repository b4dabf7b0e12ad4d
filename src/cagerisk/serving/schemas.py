"""Request and response schemas of the scoring endpoint (pydantic; they make the OpenAPI document).

The request schemas of ``/score_features`` are built from the model the service loaded
(:func:`feature_request_models`): the clinical values it requires are required, every feature it needs
is a required key, and types and ranges come from the cohort schema. So the published contract is the
one the service enforces: a request valid by the OpenAPI document is scored, any other gets a 4xx.
Fields are strict (no "3" for 3, no true for 1): what the document calls a number must be one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator
from pydantic_core import PydanticCustomError

from cagerisk.cohort.schema import CLINICAL, LEVELS
from cagerisk.serving.inputs import FEATURE_LIMIT, FUSED_LEVELS, INTEGER_CLINICAL

_VAR = {v.name: v for v in CLINICAL}

# ';'-separated fused levels, e.g. "L4-L5;L5-S1" (any order; repeats are merged).
_LEVEL = "(" + "|".join(LEVELS) + ")"
FUSED_LEVELS_PATTERN = rf"^{_LEVEL}(;{_LEVEL})*$"


class ErrorBody(BaseModel):
    """Body of every 4xx/5xx the service answers: what is wrong, and which field (when one is to blame)."""

    error: str = Field(description="what is wrong and what was expected; never holds a patient identifier")
    field: str | None = Field(None, description="the request field at fault, e.g. clinical.age, t2_mask, features")


def _describe(name: str) -> str:
    v = _VAR[name]
    if v.categories:
        return f"{v.description} ({', '.join(v.categories)})"
    return f"{v.description} ({v.low:g}-{v.high:g})"


def _whole_float_as_int(value: Any) -> Any:
    # JSON Schema counts 1.0 as an integer; tables often hold flags as floats. true/false and "1" stay refused.
    return int(value) if type(value) is float and value.is_integer() else value


def _clinical_type(name: str) -> Any:
    """The variable's type with its range inside (so that an optional one's range reaches the schema)."""
    v = _VAR[name]
    if v.kind == "categorical":
        return Literal[tuple(v.categories)]
    if name in INTEGER_CLINICAL:
        # The range before the validator: pydantic then writes it as JSON Schema's minimum/maximum.
        return Annotated[int, Field(ge=v.low, le=v.high), BeforeValidator(_whole_float_as_int)]
    return Annotated[float, Field(ge=v.low, le=v.high)]


def _clinical_field(name: str, required: bool) -> tuple[Any, Any]:
    kind = _clinical_type(name)
    if required:
        return kind, Field(..., description=_describe(name))
    return kind | None, Field(None, description=_describe(name) + "; optional for this model")


def clinical_model(required: list[str], name: str = "ClinicalValues", with_fused_levels: bool = True) -> type[BaseModel]:
    """Clinical values of one patient: ``required`` ones required, the others optional (and still checked)."""
    fields: dict[str, Any] = {v.name: _clinical_field(v.name, v.name in required) for v in CLINICAL}
    if with_fused_levels:
        fields[FUSED_LEVELS] = (
            str | None,
            Field(None, pattern=FUSED_LEVELS_PATTERN, description="fused levels, ';'-separated, e.g. 'L4-L5;L5-S1'"),
        )
    config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    return create_model(name, __config__=config, __doc__="Clinical values of one patient (GET /metadata).", **fields)


def features_model(groups: list[list[str]], name: str = "Features") -> type[BaseModel]:
    """Every feature the model needs, as a required key; null = missing, imputed with the training median.

    ``groups`` are the features of each signature (radiomics, deep). A signature whose every feature
    is null would be computed from training medians only, and is refused; the schema says so with
    ``not`` (all of a group null) so that the document and the service agree.
    """
    names = [n for group in groups for n in group]
    fields = {
        f"f{i}": (
            float | None,
            Field(..., alias=feature, ge=-FEATURE_LIMIT, le=FEATURE_LIMIT, description="null = missing (imputed as in training)"),
        )
        for i, feature in enumerate(names)
    }
    not_all_null = [
        {"not": {"type": "object", "properties": {n: {"type": "null"} for n in group}, "required": list(group)}}
        for group in groups
        if group
    ]
    config = ConfigDict(
        extra="ignore",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra={"allOf": not_all_null} if not_all_null else None,
    )
    return create_model(
        name, __config__=config, __doc__="Feature name -> value, as in the feature tables (GET /metadata).", **fields
    )


def feature_values_field(names: list[str], group: str) -> tuple[Any, Any]:
    """One signature's features as an array in the model's order: ``names`` is the order, and the
    schema states it (``x-feature-names``), the count, each value's type and range, and that one value
    at least is a number (an all-null group is refused, as in the named form)."""
    value = Annotated[float, Field(ge=-FEATURE_LIMIT, le=FEATURE_LIMIT)] | None
    # Optional, not nullable: left out when `features` is sent (a default is not validated; a null is refused).
    return (
        list[value],
        Field(
            None,
            min_length=len(names),
            max_length=len(names),
            description=f"the {len(names)} {group} features of GET /metadata (expected_inputs.features.{group}) in that "
            "order, null = missing (imputed as in training); the compact form of `features`",
            # "not every value null" (draft 4's spelling of `contains`: the document is OpenAPI 3.0)
            json_schema_extra={"not": {"items": {"type": "null"}}, "x-feature-names": list(names)},
        ),
    )


def _one_feature_form(fields: list[str]) -> Any:
    """``features`` or the value arrays, exactly one form (the service refuses both or neither)."""

    def check(item: Any) -> Any:
        arrays = [getattr(item, f) is not None for f in fields]
        named = item.features is not None
        if named and any(arrays):
            raise ValueError(f"send either features or {' and '.join(fields)}, not both")
        if not named and not (fields and all(arrays)):
            alternative = f" (or {' and '.join(fields)})" if fields else ""
            raise PydanticCustomError("missing", f"features{alternative} required")  # a 400, as a missing field
        return item

    return check


def feature_request_models(
    clinical_required: list[str], feature_groups: dict[str, list[str]], max_items: int
) -> tuple[type[BaseModel], type[BaseModel]]:
    """``(FeatureRequest, ScoreFeaturesRequest)`` of a model: one patient, and a non-empty batch of them.

    ``feature_groups`` maps each signature (``radiomics``, ``deep``) to its features. A patient's
    features come either named (``features``: name -> value) or as one array per signature
    (``radiomics_values``, ``deep_values``) in the model's order: the same values, a quarter of the
    bytes, and parsed in a fraction of the time (11,495 features: about 230 kB instead of 830 kB).
    """
    clinical = clinical_model(clinical_required)
    groups = {name: list(names) for name, names in feature_groups.items() if names}
    features = features_model(list(groups.values()))
    arrays = {f"{name}_values": feature_values_field(names, name) for name, names in groups.items()}
    array_fields = list(arrays)
    # Exactly one form, stated so that the document and the service agree on every mix of the fields.
    forms = [
        {"required": ["features"], "not": {"anyOf": [{"required": [f]} for f in array_fields]}},
        {"required": array_fields, "not": {"required": ["features"]}},
    ]
    item = create_model(
        "FeatureRequest",
        __config__=ConfigDict(
            extra="forbid",
            strict=True,
            json_schema_extra={"oneOf": forms} if array_fields else {"required": ["clinical", "features"]},
        ),
        __doc__="One patient's clinical values and precomputed features: named (`features`) or as arrays in "
        "the model's order (" + ", ".join(f"`{f}`" for f in array_fields) + ").",
        __validators__={"one_feature_form": model_validator(mode="after")(_one_feature_form(array_fields))},
        patient_id=(str | None, Field(None, max_length=256, description="echoed back; never logged")),
        clinical=(clinical, ...),
        features=(features, Field(None, description="feature name -> value; or the arrays below")),
        **arrays,
    )
    batch = create_model(
        "ScoreFeaturesRequest",
        __config__=ConfigDict(extra="forbid", strict=True),
        __doc__="Patients to score, 1 to max_batch_size of them.",
        items=(list[item], Field(..., min_length=1, max_length=max_items)),
    )
    return item, batch


# The module-level defaults (no model loaded: every clinical value optional, no feature known) only
# serve documentation built without a model; the service replaces them when it has loaded one.
ClinicalValues = clinical_model([])


class ScoreResult(BaseModel):
    """The model's answer for one patient."""

    patient_id: str | None = None
    probability: float = Field(description="P(cage subsidence) from the combined model")
    rad_sign: float = Field(description="radiomics signature (probability of the radiomics model)")
    dl_sign: float = Field(description="deep-learning signature (probability of the deep-feature model)")
    risk_class: Literal["high", "low"] = Field(description="high when probability >= threshold")
    threshold: float = Field(description="Youden threshold chosen on the validation split")
    model_version: str = Field(description="registered model version that scored")
