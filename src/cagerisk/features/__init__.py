"""Feature selection as scikit-learn transformers: robust scaling, F-test, correlation pruning, LASSO, PCA."""

from cagerisk.features.correlation import PearsonPruner, greedy_correlation_prune
from cagerisk.features.deep import ZScorePCA
from cagerisk.features.icc import ICCFilter
from cagerisk.features.lasso import LassoSelector
from cagerisk.features.pipeline import FEATURE_KINDS, build_selection_steps, selected_feature_names, selection_report
from cagerisk.features.plots import plot_lasso
from cagerisk.features.scaling import MedianIQRScaler
from cagerisk.features.univariate import FTestSelector

__all__ = [
    "FEATURE_KINDS",
    "FTestSelector",
    "ICCFilter",
    "LassoSelector",
    "MedianIQRScaler",
    "PearsonPruner",
    "ZScorePCA",
    "build_selection_steps",
    "greedy_correlation_prune",
    "plot_lasso",
    "selected_feature_names",
    "selection_report",
]
