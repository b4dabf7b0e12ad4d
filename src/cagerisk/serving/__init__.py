"""Serving: the MLflow pyfunc of the whole scoring path, its bundle, input checks and the BentoML service.

The BentoML service itself (``cagerisk.serving.service``) is imported by ``bentoml serve`` only, so
that importing this package does not start BentoML's machinery.
"""

from cagerisk.serving.bundle import (
    BundleError,
    TrainingTables,
    build_serving_bundle,
    feature_rows,
    read_training_tables,
    typical_patient,
)
from cagerisk.serving.errors import ScoringInputError
from cagerisk.serving.features import required_inputs, serving_inputs, verify_required_inputs
from cagerisk.serving.inputs import check_clinical, check_features, sniff_image_format
from cagerisk.serving.model import CageRiskModel, ModelSpec, model_signature

__all__ = [
    "BundleError",
    "CageRiskModel",
    "ModelSpec",
    "ScoringInputError",
    "TrainingTables",
    "build_serving_bundle",
    "check_clinical",
    "check_features",
    "feature_rows",
    "model_signature",
    "read_training_tables",
    "required_inputs",
    "serving_inputs",
    "sniff_image_format",
    "typical_patient",
    "verify_required_inputs",
]
