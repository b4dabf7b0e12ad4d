"""Evaluation: AUC with CIs, DeLong, thresholds, calibration, decision curves, readers, report."""

from cagerisk.evaluation.importance import permutation_auc_importance
from cagerisk.evaluation.metrics import (
    AUCInterval,
    CalibrationFit,
    DeLongTest,
    HosmerLemeshow,
    auc_ci_bootstrap,
    auc_ci_delong,
    auc_permutation_test,
    brier_score,
    calibration,
    calibration_intercept_slope,
    classification_metrics,
    decision_curve,
    delong_covariance,
    delong_test,
    hosmer_lemeshow,
    net_benefit,
    youden_threshold,
)
from cagerisk.evaluation.readers import compare_with_readers, inter_reader_kappa, kappa_with_ci, mcnemar_paired, reader_columns

__all__ = [
    "AUCInterval",
    "CalibrationFit",
    "DeLongTest",
    "HosmerLemeshow",
    "auc_ci_bootstrap",
    "auc_ci_delong",
    "auc_permutation_test",
    "brier_score",
    "calibration",
    "calibration_intercept_slope",
    "classification_metrics",
    "compare_with_readers",
    "decision_curve",
    "delong_covariance",
    "delong_test",
    "hosmer_lemeshow",
    "inter_reader_kappa",
    "kappa_with_ci",
    "mcnemar_paired",
    "net_benefit",
    "permutation_auc_importance",
    "reader_columns",
    "youden_threshold",
]
