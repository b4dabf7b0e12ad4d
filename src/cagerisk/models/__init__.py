"""Classifier zoo with Optuna search, signatures, clinical model, combined model, fit-table.

Names are imported on first use (PEP 562) so that ``cagerisk fit-table`` does not pay for the
statsmodels and plotting imports of the stages it does not run.
"""

from __future__ import annotations

from cagerisk.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ClinicalAnalysis": "cagerisk.models.clinical",
    "analyse_clinical": "cagerisk.models.clinical",
    "clinical_preprocessor": "cagerisk.models.clinical",
    "CombinedModel": "cagerisk.models.served",
    "run_combined_stage": "cagerisk.models.combined",
    "run_fit_table": "cagerisk.models.fit_table",
    "SearchResult": "cagerisk.models.search",
    "SearchSettings": "cagerisk.models.search",
    "open_study": "cagerisk.models.search",
    "search_classifier": "cagerisk.models.search",
    "SIGNATURES": "cagerisk.models.signatures",
    "fit_signature": "cagerisk.models.signatures",
    "run_signatures_stage": "cagerisk.models.signatures",
    "ClassifierSpec": "cagerisk.models.zoo",
    "load_zoo": "cagerisk.models.zoo",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
