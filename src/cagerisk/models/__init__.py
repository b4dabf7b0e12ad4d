"""Classifier zoo with Optuna search, signatures, clinical model, combined model, nested CV of any table.

Names are imported on first use (PEP 562) so that fit-table does not pay for the statsmodels
and plotting imports of the models it does not fit.
"""

from __future__ import annotations

from cagerisk.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ClinicalAnalysis": "cagerisk.models.clinical",
    "analyse_clinical": "cagerisk.models.clinical",
    "clinical_preprocessor": "cagerisk.models.clinical",
    "CombinedModel": "cagerisk.models.served",
    "CombinedResult": "cagerisk.models.combined",
    "fit_combined": "cagerisk.models.combined",
    "SearchResult": "cagerisk.models.search",
    "SearchSettings": "cagerisk.models.search",
    "open_study": "cagerisk.models.search",
    "search_classifier": "cagerisk.models.search",
    "SIGNATURES": "cagerisk.models.signatures",
    "SignaturesResult": "cagerisk.models.signatures",
    "fit_signature": "cagerisk.models.signatures",
    "fit_signatures": "cagerisk.models.signatures",
    "ClassifierSpec": "cagerisk.models.zoo",
    "load_zoo": "cagerisk.models.zoo",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
