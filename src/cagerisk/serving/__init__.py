"""Serving: the MLflow pyfunc of the whole scoring path, its bundle, input checks and the BentoML service.

The BentoML service itself (``cagerisk.serving.service``) is imported by ``bentoml serve`` only, so
that importing this package does not start BentoML's machinery.

Names are imported on first use (PEP 562): importing one light module of this package (what a
served model unpickles) does not import the others (stages, training, tracking).
"""

from __future__ import annotations

from cagerisk.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "BundleError": "cagerisk.serving.bundle",
    "TrainingTables": "cagerisk.serving.bundle",
    "build_serving_bundle": "cagerisk.serving.bundle",
    "feature_rows": "cagerisk.serving.bundle",
    "read_training_tables": "cagerisk.serving.bundle",
    "typical_patient": "cagerisk.serving.bundle",
    "ScoringInputError": "cagerisk.serving.errors",
    "required_inputs": "cagerisk.serving.features",
    "serving_inputs": "cagerisk.serving.features",
    "verify_required_inputs": "cagerisk.serving.features",
    "check_clinical": "cagerisk.serving.inputs",
    "check_features": "cagerisk.serving.inputs",
    "sniff_image_format": "cagerisk.serving.inputs",
    "CageRiskModel": "cagerisk.serving.model",
    "ModelSpec": "cagerisk.serving.model",
    "model_signature": "cagerisk.serving.model",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
