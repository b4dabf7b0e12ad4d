"""Feature selection as scikit-learn transformers: robust scaling, F-test, correlation pruning, LASSO, PCA.

Names are imported on first use (PEP 562): importing one light module of this package (what a
served model unpickles) does not import the others (stages, training, tracking).
"""

from __future__ import annotations

from cagerisk.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "PearsonPruner": "cagerisk.features.correlation",
    "greedy_correlation_prune": "cagerisk.features.correlation",
    "ZScorePCA": "cagerisk.features.deep",
    "ICCFilter": "cagerisk.features.icc",
    "LassoSelector": "cagerisk.features.lasso",
    "FEATURE_KINDS": "cagerisk.features.pipeline",
    "build_selection_steps": "cagerisk.features.pipeline",
    "lasso_of": "cagerisk.features.pipeline",
    "selected_features_table": "cagerisk.features.pipeline",
    "selected_feature_names": "cagerisk.features.pipeline",
    "selection_report": "cagerisk.features.pipeline",
    "plot_lasso": "cagerisk.features.plots",
    "MedianIQRScaler": "cagerisk.features.scaling",
    "FTestSelector": "cagerisk.features.univariate",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
