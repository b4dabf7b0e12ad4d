"""The headline figures evaluate prints and writes to metrics.json (issue 12)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cagerisk.evaluation.evaluate import delong_table, headline_figures, headline_text
from cagerisk.evaluation.metrics import delong_test


def test_headline_figures_are_the_named_quantities():
    rng = np.random.default_rng(0)
    n = 120
    y = (rng.random(n) < 0.35).astype(int)
    split = np.array(["train"] * 60 + ["val"] * 30 + ["test"] * 30)
    noise = {c: rng.normal(0, s, n) for c, s in (("clinical_model", 2.0), ("rad_sign", 1.2), ("dl_sign", 1.0), ("combined", 0.7))}
    scores = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)], "split": split, "cs": y})
    for column, eps in noise.items():
        scores[column] = 1 / (1 + np.exp(-(2 * y - 1 + eps)))
    calib = pd.DataFrame(
        {"key": ["combined", "combined", "dl_sign"], "split": ["val", "test", "test"], "cal_slope": [0.5, 1.1, 9.0]}
    )
    out = headline_figures(scores, delong_table(scores), calib, {"ratio": 0.97})

    train, val, held = split == "train", split == "val", split != "train"
    gap = roc_auc_score(y[train], scores.loc[train, "dl_sign"]) - roc_auc_score(y[val], scores.loc[val, "dl_sign"])
    assert out["dl_sign_oof_minus_val_auc"] == pytest.approx(gap)
    expected = delong_test(y[held], scores.loc[held, "combined"].to_numpy(), scores.loc[held, "rad_sign"].to_numpy())
    assert out["heldout_combined_vs"]["Rad-sign"]["delong_p"] == pytest.approx(expected.p_value)
    assert out["heldout_combined_vs"]["Rad-sign"]["auc_combined"] == pytest.approx(
        roc_auc_score(y[held], scores.loc[held, "combined"])
    )
    assert set(out["heldout_combined_vs"]) == {"Clinical model", "Rad-sign", "DL-sign"}
    assert out["combined_over_oracle"] == 0.97 and out["combined_test_calibration_slope"] == 1.1
    text = headline_text(out)
    assert f"DL-sign OOF train - val AUC {gap:.3f}" in text and "test calibration slope 1.100" in text
