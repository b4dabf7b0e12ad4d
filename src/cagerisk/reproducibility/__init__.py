"""Inter-observer reproducibility: second-reader radiomics, feature ICCs and mask agreement."""

from cagerisk.reproducibility.agreement import (
    AGREEMENT_COLUMNS,
    MaskAgreementError,
    hausdorff_percentile,
    mask_agreement,
    mask_agreement_table,
    summarise_agreement,
)
from cagerisk.reproducibility.icc import ICC_COLUMNS, STATUSES, feature_icc, two_way_icc
from cagerisk.reproducibility.interobserver import (
    Reproducibility,
    ReproducibilityStageError,
    icc_table,
    run_reproducibility,
)
from cagerisk.reproducibility.summary import KOO_LI_BANDS, plot_icc_histograms, summarise_icc

__all__ = [
    "AGREEMENT_COLUMNS",
    "ICC_COLUMNS",
    "KOO_LI_BANDS",
    "MaskAgreementError",
    "Reproducibility",
    "ReproducibilityStageError",
    "STATUSES",
    "feature_icc",
    "hausdorff_percentile",
    "icc_table",
    "mask_agreement",
    "mask_agreement_table",
    "plot_icc_histograms",
    "run_reproducibility",
    "summarise_agreement",
    "summarise_icc",
    "two_way_icc",
]
