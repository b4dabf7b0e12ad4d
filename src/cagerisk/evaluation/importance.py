"""Feature importance: LASSO coefficients of the signatures, permutation importance of the combined model."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.inspection import permutation_importance


def permutation_auc_importance(model: BaseEstimator, X: pd.DataFrame, y, n_repeats: int = 20, seed: int = 0) -> pd.DataFrame:
    """Mean drop in AUC when one input column is shuffled (on patients the model was not fitted on)."""
    result = permutation_importance(
        model, X, np.asarray(y).astype(int), scoring="roc_auc", n_repeats=n_repeats, random_state=seed, n_jobs=1
    )
    frame = pd.DataFrame(
        {"feature": list(X.columns), "auc_drop": result.importances_mean, "auc_drop_std": result.importances_std}
    )
    return frame.sort_values("auc_drop", ascending=False, ignore_index=True)
